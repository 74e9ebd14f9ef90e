"""The Dagster UI (what `make dagster` serves) loads workspace.yaml and shows the whole asset graph."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from procs import free_port, stop

REPO = Path(__file__).resolve().parents[1]
QUERY = """
{ assetNodes { assetKey { path } dependencyKeys { path } } }
"""


def test_webserver_shows_asset_graph(tmp_path):
    port = free_port()
    (tmp_path / "dagster.yaml").write_text("")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LYRIC2VEC_HOME": str(tmp_path / "artifacts")}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        nodes = None
        while time.time() < deadline:
            try:
                r = httpx.post(f"{url}/graphql", json={"query": QUERY}, timeout=10)
                data = r.json().get("data") or {}
                if data.get("assetNodes"):
                    nodes = data["assetNodes"]
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(1)
        assert nodes, "the webserver never listed any asset"
        graph = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        assert graph["tracks"] == {"songbook_sources", "user_manifest"}
        assert graph["spectrograms"] == {"tracks"}
        assert {"lyrics", "spectrograms", "tracks"} <= graph["text_features"]
        assert graph["faiss_index"] == {"embeddings"}
        assert graph["chant_recogniser"] == {"chant_corpus"}
        assert graph["lyrics_retrieval_report"] == {"chant_recogniser", "heldout_rerender"}
        assert len(graph) == 16  # 5 catalogue + 4 learning + 2 serving + 1 projection + 4 lyrics recogniser
    finally:
        stop(proc)
