"""deployments/: compose, Prometheus, Grafana, Kubernetes, KubeRay and the Dagster Helm values.

Each file is checked by the real tool where that tool runs here (Debian's docker-compose and promtool, a real
Prometheus scraping a prometheus_client exporter, kubernetes-validate in strict mode, Dagster's own config
schemas), and the files are cross-checked against each other and against docs/INTERFACES.md (ports, images,
probes, volumes, metric names). The plant-a-fault tests show that every validator used here rejects a broken
input, so a green run means something. No Docker engine, cluster, Helm or KubeRay CRDs exist on this machine:
what they would add is listed in deployments/README.md.
"""

import copy
import json
import math
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deployments"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yaml"
PROMETHEUS_CONFIGS = [
    DEPLOY / "prometheus" / "prometheus.yml",
    DEPLOY / "prometheus" / "prometheus.local.yml",
]
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "lyric2vec.json"
DATASOURCE_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDER_FILE = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
K8S = DEPLOY / "k8s"
CORE_MANIFESTS = [K8S / "namespace.yaml", *sorted((K8S / "bento").glob("*.yaml"))]
RAYCLUSTER_FILE = K8S / "ray" / "raycluster.yaml"
RAYJOB_FILE = K8S / "ray" / "rayjob-train.yaml"
DAGSTER_VALUES_FILE = K8S / "dagster" / "values.yaml"
INTERFACES_FILE = ROOT / "docs" / "INTERFACES.md"

# kubernetes-validate 1.37 ships schemas for 1.28 .. 1.37; 1.32 is the kubectl client on this machine and a
# version the managed clouds still run. Manifests that pass 1.32 strictly use no API removed since.
K8S_VERSION = "1.32.0"
API_PORT, DAGSTER_UI_PORT, PROMETHEUS_PORT, GRAFANA_PORT, RAY_DASHBOARD_PORT = 8080, 3000, 9090, 3001, 8265
RAY_TRAIN_MODULE = "lyric2vec_models.ray_train"

DOCKER_COMPOSE = shutil.which("docker-compose")
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_compose = pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose binary not installed")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool binary not installed")


# ---------------------------------------------------------------------------------------------- loaders


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load_one(path: Path) -> dict:
    docs = load_docs(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, found {len(docs)}"
    return docs[0]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def project_version() -> str:
    return pyproject()["project"]["version"]


def pinned_version(requirement_prefix: str) -> str:
    """The `==` pin of a requirement in pyproject.toml (any extra), e.g. 'ray[train]' -> '2.60.0'."""
    project = pyproject()["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    for requirement in requirements:
        if requirement.startswith(requirement_prefix + "=="):
            return requirement.split("==", 1)[1]
    raise AssertionError(f"pyproject.toml pins no {requirement_prefix}==...")


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it (anchors merged, paths absolute, ports parsed)."""
    if DOCKER_COMPOSE is None:
        pytest.skip("docker-compose binary not installed")
    result = subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def compose_images_raw() -> dict[str, str]:
    """service -> image, read straight from the YAML (for tests that must not need docker-compose)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    images = {}
    for name, service in raw["services"].items():
        images[name] = service["image"]
    return images


# ------------------------------------------------------------------------------- metric names and PromQL


def interface_metrics() -> dict[str, str]:
    """metric -> type from the table under 'Metric names exported by the service' in docs/INTERFACES.md."""
    text = INTERFACES_FILE.read_text()
    section = text.split("## Metric names exported by the service", 1)
    assert len(section) == 2, f"{INTERFACES_FILE}: no 'Metric names exported by the service' section"
    metrics = {}
    for line in section[1].splitlines():
        if line.startswith("## "):
            break
        match = re.match(r"\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(\w+)\s*\|", line)
        if match:
            metrics[match.group(1)] = match.group(2)
    assert metrics, f"{INTERFACES_FILE}: metric table is empty"
    return metrics


def exposed_series(metrics: dict[str, str]) -> set[str]:
    """Series names prometheus_client puts on /metrics for metrics of these types.

    A histogram `x` is exposed only as x_bucket/x_count/x_sum, never as `x`; a counter named `x_total` or `x` is
    exposed as x_total. The `_created` series are left out on purpose: dashboards have no business with them.
    """
    series = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "counter":
            series.add(name if name.endswith("_total") else f"{name}_total")
        elif kind in ("gauge", "summary"):
            series |= {name} if kind == "gauge" else {name, f"{name}_count", f"{name}_sum"}
        else:
            raise AssertionError(f"unknown metric type {kind!r} for {name} in {INTERFACES_FILE}")
    return series


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "start",
    "end",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers that are not functions, keywords or labels)."""
    text = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`", '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+(?::\w+)?\}?", "", text)  # Grafana variables such as $__rate_interval
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if token.lower() in PROMQL_WORDS:
            continue
        names.add(token)
    if "__name__" in expr:
        names.add("__name__ matcher")  # selecting by __name__ hides the metric name from this check
    return names


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every Prometheus target, including panels nested in rows."""
    queries = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if "expr" in target:
                    queries.append((panel.get("title", "?"), target["expr"]))

    walk(dashboard["panels"])
    return queries


def unknown_metric_problems(dashboard: dict, allowed: set[str]) -> list[str]:
    problems = []
    for title, expr in dashboard_queries(dashboard):
        for name in sorted(promql_metric_names(expr) - allowed):
            problems.append(f"panel {title!r}: {name!r} is not an exported series ({expr})")
    return problems


def grafana_to_promql(expr: str) -> str:
    """A Grafana query as plain PromQL: its interval variables replaced by a fixed window."""
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")


def promtool_rule_problems(exprs: list[str], tmp_path: Path) -> str:
    """promtool's verdict on the expressions as recording rules: '' when every one parses as PromQL."""
    rules = {
        "groups": [
            {
                "name": "grafana",
                "rules": [
                    {"record": f"lyric2vec:panel_{i}", "expr": grafana_to_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    rules_file = tmp_path / "panel_rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=30
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


# ------------------------------------------------------------------------------------------ k8s helpers


def k8s_strict_error(resource: dict) -> str | None:
    """kubernetes-validate's strict verdict (unknown fields are errors): None when valid, else the message."""
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        return f"{resource['kind']}/{resource['metadata']['name']}: {where}: {error.message}"
    return None


def as_pod_template(name: str, template: dict) -> dict:
    """Wrap a pod template (as KubeRay and Helm values embed them) into a core v1 PodTemplate to validate it."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def pod_template_from_values(name: str, image: str, block: dict, env: list[dict]) -> dict:
    """The pod a Helm values block describes (env, resources, volumes, mounts), for strict validation."""
    container = {"name": name, "image": image, "env": env}
    for key in ("resources", "volumeMounts"):
        if key in block:
            container[key] = block[key]
    spec = {"containers": [container]}
    if "volumes" in block:
        spec["volumes"] = block["volumes"]
    return as_pod_template(name, {"spec": spec})


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def resolve_port(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port name) as a number."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared["containerPort"]
    raise AssertionError(f"container {container['name']} declares no port named {port!r}")


def env_value(container: dict, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def pvc_claims(pod_spec: dict) -> dict[str, str]:
    """volume name -> PVC claim name."""
    return {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }


def image_of(repository_and_tag: dict) -> str:
    return f"{repository_and_tag['repository']}:{repository_and_tag['tag']}"


def kuberay_problems(doc: dict) -> list[str]:
    """What the KubeRay operator would reject or mis-handle in a RayCluster/RayJob (no CRD schema here)."""
    problems = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion {doc.get('apiVersion')!r} is not ray.io/v1")
    spec = doc.get("spec", {})
    cluster = spec if doc.get("kind") == "RayCluster" else spec.get("rayClusterSpec")
    if doc.get("kind") == "RayJob":
        if not spec.get("entrypoint"):
            problems.append("RayJob has no entrypoint")
        if (cluster is None) == (not spec.get("clusterSelector")):
            problems.append("RayJob needs exactly one of rayClusterSpec and clusterSelector")
    if cluster is None:
        return problems
    groups = [("head", cluster["headGroupSpec"])] + [
        (g.get("groupName", "?"), g) for g in cluster.get("workerGroupSpecs", [])
    ]
    for group_name, group in groups:
        for key, value in group.get("rayStartParams", {}).items():
            if not isinstance(value, str):  # the CRD types rayStartParams as map[string]string
                problems.append(f"{group_name}: rayStartParams.{key} is {type(value).__name__}, not a string")
        error = k8s_strict_error(
            as_pod_template(f"{doc['metadata']['name']}-{group_name}", group["template"])
        )
        if error:
            problems.append(f"{group_name} pod template: {error}")
        if group_name != "head":
            low, replicas, high = (
                group.get("minReplicas", 0),
                group.get("replicas", 0),
                group.get("maxReplicas", 0),
            )
            if not low <= replicas <= high:
                problems.append(
                    f"{group_name}: needs minReplicas <= replicas <= maxReplicas, got {low}, {replicas}, {high}"
                )
    return problems


# The keys the Dagster chart's values schema allows under runLauncher.config.k8sRunLauncher
# (helm/dagster/schema/.../subschema/run_launcher.py, K8sRunLauncherConfig, extra="forbid").
CHART_K8S_RUN_LAUNCHER_KEYS = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}


def snake_case(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def run_launcher_problems(k8s_run_launcher: dict) -> list[str]:
    """Check chart values for the K8sRunLauncher: keys the chart knows, then the dagster.yaml config the chart
    renders from them (snake_case keys; env config maps and secrets as names) against dagster-k8s's schema."""
    from dagster._config import Shape, process_config
    from dagster_k8s import K8sRunLauncher

    problems = [
        f"runLauncher.config.k8sRunLauncher.{key}: not a key of the Dagster chart"
        for key in sorted(set(k8s_run_launcher) - CHART_K8S_RUN_LAUNCHER_KEYS)
    ]
    rendered = {"instance_config_map": "dagster-instance", "dagster_home": "/opt/dagster/dagster_home"}
    for key, value in k8s_run_launcher.items():
        if key in ("envConfigMaps", "envSecrets"):
            value = [item["name"] for item in value]
        elif key == "runK8sConfig":
            value = {snake_case(k): v for k, v in value.items()}
        elif key == "image":
            key, value = "jobImage", image_of(value)
        rendered[snake_case(key)] = value
    result = process_config(Shape(K8sRunLauncher.config_type()), rendered)
    if not result.success:
        problems += [f"dagster-k8s K8sRunLauncher config: {error.message}" for error in result.errors]
    return problems


# ============================================================================================== compose


@needs_compose
@pytest.mark.parametrize("profile", [None, "weaviate"])
def test_compose_config_passes_docker_compose(profile):
    args = (
        [DOCKER_COMPOSE, "-f", str(COMPOSE_FILE)]
        + (["--profile", profile] if profile else [])
        + ["config", "-q"]
    )
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@needs_compose
def test_compose_validator_rejects_a_broken_file(tmp_path):
    """Plant a fault: a misspelt service key must fail `docker-compose config -q`."""
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["api"]["healthchek"] = broken["services"]["api"].pop("healthcheck")
    broken_file = tmp_path / "docker-compose.yaml"
    broken_file.write_text(yaml.safe_dump(broken, sort_keys=False))
    result = subprocess.run(
        [DOCKER_COMPOSE, "-f", str(broken_file), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "healthchek" in result.stderr


def test_compose_services_ports_and_pinned_images(compose):
    services = compose["services"]
    assert set(services) == {
        "api",
        "dagster-webserver",
        "dagster-daemon",
        "prometheus",
        "grafana",
        "weaviate",
    }
    published = {
        name: {(int(p["published"]), int(p["target"])) for p in service.get("ports", [])}
        for name, service in services.items()
    }
    assert (API_PORT, API_PORT) in published["api"]
    assert (DAGSTER_UI_PORT, DAGSTER_UI_PORT) in published["dagster-webserver"]
    assert (PROMETHEUS_PORT, PROMETHEUS_PORT) in published["prometheus"]
    assert (GRAFANA_PORT, 3000) in published["grafana"]  # Grafana listens on 3000 inside its container
    host_ports = [host for ports in published.values() for host, _ in ports]
    assert len(host_ports) == len(set(host_ports)), f"a host port is published twice: {sorted(host_ports)}"
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else None
        assert tag and tag != "latest", f"service {name}: image {image} has no pinned tag"


def test_compose_weaviate_is_optional_behind_a_profile(compose):
    services = compose["services"]
    assert services["weaviate"].get("profiles") == ["weaviate"]
    assert [name for name, s in services.items() if s.get("profiles") and name != "weaviate"] == []
    assert all("weaviate" not in str(s.get("depends_on", "")) for s in services.values())


def test_compose_api_is_the_bento_on_8080_with_a_healthz_check(compose):
    api = compose["services"]["api"]
    # The bento entrypoint serves on $BENTOML_PORT, 3000 when unset.
    assert api["environment"]["BENTOML_PORT"] == str(API_PORT)
    check = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{API_PORT}/healthz" in check
    assert "build" not in api, "the api image comes from `bentoml containerize`, not from a compose build"


def test_compose_dagster_webserver_and_daemon_share_instance_workspace_and_artifacts(compose):
    web, daemon = compose["services"]["dagster-webserver"], compose["services"]["dagster-daemon"]
    assert web["image"] == daemon["image"]
    assert sorted(web["volumes"]) == sorted(daemon["volumes"])
    home = web["environment"]["DAGSTER_HOME"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in web["volumes"]}
    assert Path(mounts[f"{home}/dagster.yaml"]) == DEPLOY / "compose" / "dagster.yaml"
    workspace = Path(mounts[web["command"][web["command"].index("-w") + 1]])
    assert workspace == DEPLOY / "compose" / "workspace.yaml"
    assert daemon["command"][-1] == web["command"][-1]
    assert [str(DAGSTER_UI_PORT)] == [web["command"][web["command"].index("-p") + 1]]
    dockerfile = Path(web["build"]["context"]) / web["build"]["dockerfile"]
    base_images = [
        line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")
    ]
    assert base_images == ["python:3.11-slim"]
    # One artifacts volume: the pipeline writes where LYRIC2VEC_HOME points, the API reads the same volume.
    for name in ("dagster-webserver", "dagster-daemon", "api"):
        service = compose["services"][name]
        home_dir = service["environment"]["LYRIC2VEC_HOME"]
        assert any(v.startswith("artifacts:") and v.split(":")[1] == home_dir for v in service["volumes"]), (
            name
        )
    assert any(
        v == f"artifacts:{compose['services']['api']['environment']['LYRIC2VEC_HOME']}:ro"
        for v in compose["services"]["api"]["volumes"]
    ), "the API must mount the artifacts read-only"


def dagster_instance_problems(instance_dir: Path) -> list[str]:
    """Dagster's verdict on a dagster.yaml: the instance schema, then each configurable class's own config
    (the instance loader checks only that a class entry has module/class/config; the class checks the rest)."""
    import importlib

    from dagster._config import Shape, process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    try:
        dagster_instance_config(str(instance_dir))
    except DagsterInvalidConfigError as error:
        return [str(error)]
    problems = []
    for key, entry in yaml.safe_load((instance_dir / "dagster.yaml").read_text()).items():
        if isinstance(entry, dict) and {"module", "class"} <= set(entry):
            config_class = getattr(importlib.import_module(entry["module"]), entry["class"])
            config_type = config_class.config_type()
            config_type = Shape(config_type) if isinstance(config_type, dict) else config_type
            result = process_config(config_type, entry.get("config") or {})
            problems += [f"{key} ({entry['class']}): {e.message}" for e in result.errors or []]
    return problems


def test_compose_dagster_instance_and_workspace_pass_dagsters_schemas():
    from dagster._core.workspace.config_schema import ensure_workspace_config

    assert dagster_instance_problems(DEPLOY / "compose") == []
    workspace_file = DEPLOY / "compose" / "workspace.yaml"
    workspace = ensure_workspace_config(yaml.safe_load(workspace_file.read_text()), str(workspace_file))
    modules = [entry["python_module"]["module_name"] for entry in workspace["load_from"]]
    assert modules == [pyproject()["tool"]["dagster"]["module_name"]]


def test_dagster_instance_validator_rejects_broken_instances(tmp_path):
    """Plant faults: a misspelt storage key, and a string where the run queue wants an int."""
    original = yaml.safe_load((DEPLOY / "compose" / "dagster.yaml").read_text())
    misspelt = copy.deepcopy(original)
    misspelt["storage"]["sqlite"]["base_dirr"] = misspelt["storage"]["sqlite"].pop("base_dir")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(misspelt))
    assert "base_dirr" in "".join(dagster_instance_problems(tmp_path))
    wrong_type = copy.deepcopy(original)
    wrong_type["run_coordinator"]["config"]["max_concurrent_runs"] = "one"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(wrong_type))
    [problem] = dagster_instance_problems(tmp_path)
    assert problem.startswith("run_coordinator") and "max_concurrent_runs" in problem


# =========================================================================================== prometheus


@needs_promtool
@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_prometheus_config_passes_promtool(config):
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_a_broken_config(tmp_path):
    """Plant a fault: a scrape interval that is not a duration."""
    config = yaml.safe_load(PROMETHEUS_CONFIGS[0].read_text())
    config["global"]["scrape_interval"] = "fifteen seconds"
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(broken)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "fifteen seconds" in result.stdout + result.stderr


def api_scrape_targets(config_file: Path) -> tuple[str, list[str]]:
    jobs = {job["job_name"]: job for job in yaml.safe_load(config_file.read_text())["scrape_configs"]}
    job = jobs["lyric2vec-api"]
    return job.get("metrics_path", "/metrics"), [t for sc in job["static_configs"] for t in sc["targets"]]


def test_prometheus_scrapes_the_api_by_compose_name_and_locally():
    path, targets = api_scrape_targets(PROMETHEUS_CONFIGS[0])
    assert (path, targets) == ("/metrics", [f"api:{API_PORT}"])
    assert "api" in yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    path, targets = api_scrape_targets(PROMETHEUS_CONFIGS[1])
    assert (path, targets) == ("/metrics", [f"127.0.0.1:{API_PORT}"])


def test_compose_mounts_prometheus_yml_where_prometheus_reads_it(compose):
    prometheus = compose["services"]["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert Path(mounts[config_path]) == PROMETHEUS_CONFIGS[0]
    # The promtool that checks the file is the version of the image that reads it.
    if PROMTOOL:
        version = subprocess.run([PROMTOOL, "--version"], capture_output=True, text=True).stdout
        assert re.search(r"version (\d+\.\d+\.\d+)", version).group(1) == prometheus["image"].split(":v")[1]


# ============================================================================================== grafana


def test_interfaces_table_lists_the_service_metrics():
    assert interface_metrics() == {
        "lyric2vec_request_seconds": "histogram",
        "lyric2vec_encode_seconds": "histogram",
        "lyric2vec_faiss_search_seconds": "histogram",
        "lyric2vec_requests_total": "counter",
        "lyric2vec_errors_total": "counter",
        "lyric2vec_index_vectors": "gauge",
    }


def test_promql_metric_name_extraction():
    expr = (
        'histogram_quantile(0.99, sum by (le, modal) (rate(lyric2vec_request_seconds_bucket{modal="text"}'
        "[$__rate_interval]))) / ignoring(x) group_left sum without (status) (up offset 5m) * 1e3"
    )
    assert promql_metric_names(expr) == {"lyric2vec_request_seconds_bucket", "up"}
    assert promql_metric_names('{__name__="lyric2vec_x"}') == {"__name__ matcher"}


def test_grafana_queries_name_only_metrics_from_docs_interfaces():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard_queries(dashboard), "dashboard has no Prometheus queries"
    assert unknown_metric_problems(dashboard, exposed_series(interface_metrics())) == []


def test_grafana_validator_rejects_unknown_metrics():
    """Plant a fault: a made-up metric, and a histogram named without its _bucket suffix."""
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["targets"][0]["expr"] = "sum(rate(lyric2vec_request_latency_bucket[5m]))"
    broken["panels"][1]["targets"][0]["expr"] = "avg(lyric2vec_request_seconds)"
    problems = unknown_metric_problems(broken, exposed_series(interface_metrics()))
    assert len(problems) == 2
    assert "lyric2vec_request_latency_bucket" in problems[0] and "'lyric2vec_request_seconds'" in problems[1]


def test_grafana_dashboard_has_the_required_panels():
    queries = [
        re.sub(r"\s+", " ", expr) for _, expr in dashboard_queries(json.loads(DASHBOARD_FILE.read_text()))
    ]
    joined = "\n".join(queries)
    for quantile in ("0.5", "0.99"):
        wanted = (
            f"histogram_quantile({quantile}, sum by (le, modal) "
            f"(rate(lyric2vec_request_seconds_bucket[$__rate_interval])))"
        )
        assert wanted in queries, f"no p{quantile} latency-by-modal panel"
    assert "sum by (modal) (rate(lyric2vec_requests_total[" in joined  # request rate
    assert "lyric2vec_encode_seconds_bucket" in joined and "lyric2vec_faiss_search_seconds_bucket" in joined
    assert "lyric2vec_errors_total" in joined and "lyric2vec_index_vectors" in joined
    used = set().union(*(promql_metric_names(q) for q in queries))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert families == set(interface_metrics()), "every exported metric should be on the dashboard"


@needs_promtool
def test_grafana_queries_parse_as_promql(tmp_path):
    exprs = [expr for _, expr in dashboard_queries(json.loads(DASHBOARD_FILE.read_text()))]
    assert promtool_rule_problems(exprs, tmp_path) == ""
    assert "parse error" in promtool_rule_problems(
        ["sum by (modal (rate(lyric2vec_requests_total[1m]))"], tmp_path
    )


def test_grafana_provisioning_matches_dashboard_and_compose(compose):
    datasources = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    assert datasources[0]["url"] == f"http://prometheus:{PROMETHEUS_PORT}"
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panel_uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    panel_uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert panel_uids == {datasources[0]["uid"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    provider_path = yaml.safe_load(DASHBOARD_PROVIDER_FILE.read_text())["providers"][0]["options"]["path"]
    assert mounts[provider_path] == DASHBOARD_FILE.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider_path}/{DASHBOARD_FILE.name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed")
def test_grafana_queries_return_data_from_a_real_prometheus(tmp_path):
    """A real Prometheus, configured from prometheus.local.yml, scrapes an exporter declared from the
    INTERFACES.md table; every panel query must evaluate to finite values with the labels it groups by.
    The exporter stands in for the service (the live service is checked in tests/test_service.py)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    labels = {
        "lyric2vec_request_seconds": ["modal", "status"],
        "lyric2vec_encode_seconds": ["modal"],
        "lyric2vec_faiss_search_seconds": ["gallery"],
        "lyric2vec_requests_total": ["modal", "status"],
        "lyric2vec_errors_total": ["reason"],
        "lyric2vec_index_vectors": ["gallery"],
    }
    values = {
        "modal": ["text", "audio", "fused"],
        "status": ["200", "422"],
        "gallery": ["audio", "lyrics", "fused"],
        "reason": ["unknown_modal", "silent_audio"],
    }
    registry = CollectorRegistry()
    kinds = {"histogram": Histogram, "counter": Counter, "gauge": Gauge}
    metrics = {
        name: kinds[kind](name, name, labels[name], registry=registry)
        for name, kind in interface_metrics().items()
    }
    stop = threading.Event()

    def traffic():  # counters must move between scrapes, or rate() is 0 and quantiles are NaN
        step = 0
        while not stop.is_set():
            step += 1
            for name, metric in metrics.items():
                for i, label_set in enumerate(_label_product(labels[name], values)):
                    child = metric.labels(*label_set)
                    if isinstance(metric, Histogram):
                        child.observe(0.001 * (1 + (step + i) % 50))
                    elif isinstance(metric, Counter):
                        child.inc()
                    else:
                        child.set(1000 * (i + 1))
            stop.wait(0.05)

    exporter_port, prometheus_port = free_port(), free_port()
    server, _ = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    config = yaml.safe_load(PROMETHEUS_CONFIGS[1].read_text())
    config["global"]["scrape_interval"] = "1s"
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "lyric2vec-api")
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{API_PORT}"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{exporter_port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{prometheus_port}"
    try:
        deadline = time.monotonic() + 20
        scrapes = 0
        while time.monotonic() < deadline and scrapes < 3:
            time.sleep(0.5)
            try:
                result = prometheus_query(base, 'count_over_time(up{job="lyric2vec-api"}[1m])')["data"][
                    "result"
                ]
                scrapes = int(float(result[0]["value"][1])) if result else 0
            except OSError:
                continue
        assert scrapes >= 3, "Prometheus did not scrape the exporter three times within 20 s"
        for title, expr in dashboard_queries(json.loads(DASHBOARD_FILE.read_text())):
            answer = prometheus_query(base, grafana_to_promql(expr))
            assert answer["status"] == "success", (title, expr, answer)
            series = answer["data"]["result"]
            assert series, f"panel {title!r}: no data for {expr}"
            assert all(math.isfinite(float(s["value"][1])) for s in series), (title, expr, series)
            grouping = re.search(r"\bby \(([^)]*)\)", expr)
            for label in [g.strip() for g in grouping.group(1).split(",")] if grouping else []:
                if label != "le":
                    assert all(label in s["metric"] for s in series), f"panel {title!r}: no {label} label"
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=10)
        server.shutdown()


def _label_product(names: list[str], values: dict[str, list[str]]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for name in names:
        combos = [c + (v,) for c in combos for v in values[name]]
    return combos


def live_exposed_series(text: str) -> set[str]:
    """Series names a /metrics page exposes, including metric families that have no samples yet."""
    from prometheus_client.parser import text_string_to_metric_families

    series = set()
    for family in text_string_to_metric_families(text):
        series |= {sample.name for sample in family.samples}
        series |= (
            exposed_series({family.name: family.type})
            if family.type in ("histogram", "counter", "gauge", "summary")
            else set()
        )
    return series


def test_live_series_parser_sees_families_without_samples():
    text = (
        "# HELP lyric2vec_request_seconds x\n# TYPE lyric2vec_request_seconds histogram\n"
        "# HELP lyric2vec_requests_total x\n# TYPE lyric2vec_requests_total counter\n"
        'lyric2vec_requests_total{modal="text",status="200"} 1.0\n'
    )
    assert {"lyric2vec_request_seconds_bucket", "lyric2vec_requests_total"} <= live_exposed_series(text)


# The check against a live service's /metrics is in tests/test_service.py
# (test_grafana_queries_name_only_metrics_the_live_service_exports), which owns the running server.


# =================================================================================== core Kubernetes


@pytest.mark.parametrize("manifest", CORE_MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_core_manifest_passes_kubernetes_validate_strict(manifest):
    docs = load_docs(manifest)
    assert docs, f"{manifest} is empty"
    for doc in docs:
        assert k8s_strict_error(doc) is None


def test_core_manifests_cover_the_required_kinds():
    kinds = [doc["kind"] for path in CORE_MANIFESTS for doc in load_docs(path)]
    assert {"Namespace", "PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"} <= set(
        kinds
    )
    hpa = next(d for p in CORE_MANIFESTS for d in load_docs(p) if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"


def test_kubernetes_validate_rejects_broken_manifests():
    """Plant faults: a string containerPort, and a misspelt probe key that only strict mode catches."""
    deployment = load_one(K8S / "bento" / "deployment.yaml")
    string_port = copy.deepcopy(deployment)
    string_port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert "containerPort" in k8s_strict_error(string_port)
    misspelt = copy.deepcopy(deployment)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    assert "livenesProbe" in k8s_strict_error(misspelt)
    kubernetes_validate.validate(misspelt, K8S_VERSION, strict=False)  # non-strict would have let it through


def test_bento_deployment_service_hpa_agree():
    namespace = load_one(K8S / "namespace.yaml")["metadata"]["name"]
    deployment = load_one(K8S / "bento" / "deployment.yaml")
    service = load_one(K8S / "bento" / "service.yaml")
    hpa = load_one(K8S / "bento" / "hpa.yaml")
    pvc = load_one(K8S / "bento" / "pvc.yaml")
    pdb = load_one(K8S / "bento" / "pdb.yaml")
    for resource in (deployment, service, hpa, pvc, pdb):
        assert resource["metadata"]["namespace"] == namespace, resource["kind"]

    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [api] = pod["spec"]["containers"]
    assert [p["containerPort"] for p in api["ports"]] == [API_PORT]
    assert env_value(api, "BENTOML_PORT") == str(API_PORT)
    assert {"livenessProbe", "readinessProbe"} <= set(api)
    for probe in [p for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in api]:
        assert api[probe]["httpGet"]["path"] == "/healthz", probe
        assert resolve_port(api, api[probe]["httpGet"]["port"]) == API_PORT, probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(api["resources"][kind]), f"resources.{kind}"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(API_PORT)

    # Service -> pods -> port 8080.
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [port] = service["spec"]["ports"]
    assert port["port"] == API_PORT and resolve_port(api, port["targetPort"]) == API_PORT
    # HPA and PDB -> this Deployment.
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # Artifacts: the PVC, mounted where LYRIC2VEC_HOME points, read-only.
    claims = pvc_claims(pod["spec"])
    assert list(claims.values()) == [pvc["metadata"]["name"]]
    [mount] = [m for m in api["volumeMounts"] if m["name"] in claims]
    assert mount["mountPath"] == env_value(api, "LYRIC2VEC_HOME") and mount.get("readOnly") is True
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "pipeline pods and API pods mount it on many nodes"


def test_images_agree_between_compose_and_kubernetes():
    images = compose_images_raw()
    version = project_version()
    assert images["api"] == f"lyric2vec-api:{version}"
    assert images["dagster-webserver"] == images["dagster-daemon"] == f"lyric2vec-pipeline:{version}"
    deployment = load_one(K8S / "bento" / "deployment.yaml")
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [images["api"]]
    cluster = load_one(RAYCLUSTER_FILE)["spec"]
    ray_images = {
        c["image"]
        for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for c in containers(g["template"]["spec"])
    }
    assert ray_images == {images["dagster-webserver"]}
    values = load_one(DAGSTER_VALUES_FILE)
    user_images = {image_of(d["image"]) for d in values["dagster-user-deployments"]["deployments"]}
    assert user_images == {images["dagster-webserver"]}


def test_artifacts_path_is_the_same_everywhere():
    compose_raw = yaml.safe_load(COMPOSE_FILE.read_text())
    home = compose_raw["services"]["api"]["environment"]["LYRIC2VEC_HOME"]
    deployment = load_one(K8S / "bento" / "deployment.yaml")
    assert env_value(deployment["spec"]["template"]["spec"]["containers"][0], "LYRIC2VEC_HOME") == home
    cluster = load_one(RAYCLUSTER_FILE)["spec"]
    pvc_name = load_one(K8S / "bento" / "pvc.yaml")["metadata"]["name"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        claims = pvc_claims(spec)
        assert list(claims.values()) == [pvc_name]
        for container in containers(spec):
            assert env_value(container, "LYRIC2VEC_HOME") == home
            assert any(m["name"] in claims and m["mountPath"] == home for m in container["volumeMounts"])
    values = load_one(DAGSTER_VALUES_FILE)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert f"LYRIC2VEC_HOME={home}" in launcher["envVars"]
    for block in [launcher, *values["dagster-user-deployments"]["deployments"]]:
        assert list(pvc_claims(block).values()) == [pvc_name]
        assert any(m["mountPath"] == home for m in block["volumeMounts"])


# ============================================================================================== KubeRay


def test_raycluster_head_worker_ports_and_version():
    cluster = load_one(RAYCLUSTER_FILE)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert kuberay_problems(cluster) == []
    spec = cluster["spec"]
    assert spec["rayVersion"] == pinned_version("ray[train]")
    head = spec["headGroupSpec"]
    # Without dashboard-host 0.0.0.0 the dashboard (and job submission) listens on localhost only.
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    [head_container] = head["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert ports["dashboard"] == RAY_DASHBOARD_PORT and ports["gcs-server"] == 6379
    assert spec["workerGroupSpecs"], "no worker group"
    for group in spec["workerGroupSpecs"]:
        for container in containers(group["template"]["spec"]):
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {}), "the worker group is CPU"


def argparse_options(source: str) -> dict[str, dict]:
    """option -> {"required": bool, "choices": list | None, "flag": bool} from the add_argument calls in a module."""
    import ast

    options = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            names = [
                a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")
            ]
            keywords = {k.arg: k.value for k in node.keywords}
            required = (
                isinstance(keywords.get("required"), ast.Constant) and keywords["required"].value is True
            )
            choices = keywords.get("choices")
            choices = [c.value for c in choices.elts] if isinstance(choices, ast.List | ast.Tuple) else None
            action = keywords.get("action")
            flag = isinstance(action, ast.Constant) and action.value in ("store_true", "store_false")
            for name in names:
                options[name] = {"required": required, "choices": choices, "flag": flag}
    return options


def entrypoint_cli_problems(args: list[str], options: dict[str, dict]) -> list[str]:
    """What argparse would reject in `args` (the part after `python -m module`), given the module's options."""
    problems, passed, i = [], {}, 0
    while i < len(args):
        name, _, inline = args[i].partition("=")
        if name not in options:
            problems.append(f"{name}: not an option of the module")
            i += 1 if inline or i + 1 == len(args) or args[i + 1].startswith("--") else 2  # skip its value
            continue
        if options[name]["flag"]:
            passed[name], i = None, i + 1
        else:
            passed[name], i = (
                (inline, i + 1) if inline else (args[i + 1] if i + 1 < len(args) else None, i + 2)
            )
        choices = options[name]["choices"]
        if choices and passed[name] not in choices:
            problems.append(f"{name} {passed[name]}: not one of {choices}")
    problems += [
        f"{name}: required but not passed"
        for name, o in options.items()
        if o["required"] and name not in passed
    ]
    return problems


def test_rayjob_runs_ray_train_on_the_raycluster():
    job, cluster = load_one(RAYJOB_FILE), load_one(RAYCLUSTER_FILE)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert kuberay_problems(job) == []
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", RAY_TRAIN_MODULE]
    assert "$" not in job["spec"]["entrypoint"], (
        "the submitter pod's shell would expand variables, not the head's"
    )
    # Data and outputs on the artifacts PVC, which the head and the workers mount at LYRIC2VEC_HOME.
    [head] = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    home = env_value(head, "LYRIC2VEC_HOME")
    for option in ("--data", "--out"):
        if option in argv:
            assert argv[argv.index(option) + 1].startswith(home + "/"), f"{option} is not under {home}"
    package, module = RAY_TRAIN_MODULE.rsplit(".", 1)
    assert (ROOT / package / "__init__.py").is_file()
    module_file = ROOT / package / f"{module}.py"
    if module_file.is_file():  # written by the learning half; the entrypoint must parse with its CLI
        assert entrypoint_cli_problems(argv[3:], argparse_options(module_file.read_text())) == []


def test_entrypoint_cli_checker_rejects_bad_arguments():
    """Plant faults: an unknown option, a missing required option, a value outside the choices."""
    source = (
        "p.add_argument('--data', required=True)\n"
        "p.add_argument('--preset', default='small', choices=['tiny', 'small'])\n"
        "p.add_argument('--use-gpu', action='store_true')\n"
    )
    options = argparse_options(source)
    assert entrypoint_cli_problems(["--data", "/d", "--use-gpu", "--preset=tiny"], options) == []
    assert entrypoint_cli_problems(["--num-workers", "2", "--preset", "huge"], options) == [
        "--num-workers: not an option of the module",
        "--preset huge: not one of ['tiny', 'small']",
        "--data: required but not passed",
    ]


def test_kuberay_checker_rejects_broken_resources():
    """Plant faults: an int in rayStartParams, a pod template with a string port, replicas above max."""
    cluster = load_one(RAYCLUSTER_FILE)
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = (
        "6379"
    )
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = 99
    problems = kuberay_problems(cluster)
    assert len(problems) == 3, problems
    assert "num-cpus" in problems[0] and "containerPort" in problems[1] and "99" in problems[2]
    job = load_one(RAYJOB_FILE)
    del job["spec"]["clusterSelector"]
    assert kuberay_problems(job) == ["RayJob needs exactly one of rayClusterSpec and clusterSelector"]


# ====================================================================================== Dagster on k8s


def test_dagster_helm_values_use_the_k8s_run_launcher_and_our_code_location():
    values = load_one(DAGSTER_VALUES_FILE)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert run_launcher_problems(values["runLauncher"]["config"]["k8sRunLauncher"]) == []
    assert values["dagsterWebserver"]["service"]["port"] == DAGSTER_UI_PORT
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True
    [deployment] = user["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", pyproject()["tool"]["dagster"]["module_name"]]
    workspace = yaml.safe_load((DEPLOY / "compose" / "workspace.yaml").read_text())
    assert deployment["dagsterApiGrpcArgs"][1] == workspace["load_from"][0]["python_module"]["module_name"]
    assert isinstance(deployment["port"], int)


def test_dagster_helm_values_pod_pieces_pass_kubernetes_validate_strict():
    values = load_one(DAGSTER_VALUES_FILE)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    template = pod_template_from_values(
        deployment["name"], image_of(deployment["image"]), deployment, deployment.get("env", [])
    )
    assert k8s_strict_error(template) is None
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    env = [dict(zip(("name", "value"), item.split("=", 1), strict=True)) for item in launcher["envVars"]]
    template = pod_template_from_values("run", image_of(deployment["image"]), launcher, env)
    assert k8s_strict_error(template) is None
    for block in (values["dagsterWebserver"], deployment):
        container = {"name": "x", "image": "x:1", "resources": block["resources"]}
        assert k8s_strict_error(as_pod_template("x", {"spec": {"containers": [container]}})) is None


def test_run_launcher_checker_rejects_broken_values():
    """Plant faults: a key the chart does not know, and envVars as a string instead of a list."""
    launcher = copy.deepcopy(load_one(DAGSTER_VALUES_FILE)["runLauncher"]["config"]["k8sRunLauncher"])
    launcher["jobNamespce"] = "lyric2vec"
    launcher["envVars"] = "LYRIC2VEC_HOME=/opt/lyric2vec/artifacts"
    problems = run_launcher_problems(launcher)
    assert any("jobNamespce" in p and "Dagster chart" in p for p in problems), problems
    assert any("env_vars" in p and "list" in p for p in problems), problems
