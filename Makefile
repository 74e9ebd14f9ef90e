# Lyric2Vec: every target does real work. Artifacts go to $(LYRIC2VEC_HOME) (default ./artifacts).
SHELL := /bin/bash
PY := .venv/bin/python
export LYRIC2VEC_HOME ?= $(CURDIR)/artifacts
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DAGSTER_HOME ?= $(LYRIC2VEC_HOME)/dagster_home
STAMP := .venv/.setup-stamp

.PHONY: setup data prep pipeline test lint clean dagster train eval export faiss api dash up down bench

# Creates .venv and installs everything. Idempotent: a second run only checks the stamp.
# System packages: espeak-ng (the chanted voice), prometheus (promtool + a real scrape in tests),
# docker-compose (validates the compose file), chromium (dashboard screenshot test).
APT_PACKAGES := espeak-ng prometheus docker-compose chromium chromium-driver fluid-soundfont-gm
setup: $(STAMP)
$(STAMP): pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "please install these Debian packages (sudo apt-get install $$missing), then re-run make setup"; exit 1; \
	  fi; \
	fi
	test -x .venv/bin/python || python3.11 -m venv .venv || python3 -m venv .venv
	# torch first, from the CPU wheel: any other torch pulls gigabytes of CUDA.
	.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
	.venv/bin/python -m uv --version >/dev/null 2>&1 || .venv/bin/pip install -q uv
	.venv/bin/python -m uv pip install --python .venv/bin/python -q -e ".[train,serve,viz,k8s,dev]"
	# tinysoundfont/pretty_midi depend on pyaudio (live playback, unused) which needs portaudio headers.
	.venv/bin/python -m uv pip install --python .venv/bin/python -q --no-deps tinysoundfont==0.3.7 pretty_midi==0.2.11.post0
	touch $(STAMP)

# Render the songbook and ingest it: sources -> tracks -> lyrics -> spectrograms for every partition.
data: setup
	mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m lyric2vec_pipeline.cli pipeline --stage catalogue

# Everything the model needs before training (catalogue + text features + splits).
prep: setup
	mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m lyric2vec_pipeline.cli pipeline --stage prep

# Materializes every asset in order and prints a summary. Reuses what is already built.
pipeline: setup
	mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m lyric2vec_pipeline.cli pipeline

test: setup
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff check lyric2vec_models lyric2vec_pipeline data_contracts tests bench bento dashboard

# The Dagster UI on 127.0.0.1:3000 (asset graph, partitions, backfills).
dagster: setup
	mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	.venv/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

CLI := $(PY) -m lyric2vec_pipeline.cli

# Text features, splits and a Ray Train job (local Ray on 127.0.0.1; see lyric2vec_pipeline/assets/learning.py).
train: setup
	$(CLI) assets text_features splits trained_model

# Evaluate on the test split (the recall-floor check promotes the model); then lyrics<->audio through the
# chant recogniser under the issue-6 protocol (generate chant, train ~8 min, re-render held out; reused
# when built). Prints both reports.
eval: setup
	$(CLI) assets eval_report chant_corpus chant_recogniser heldout_rerender lyrics_retrieval_report
	$(CLI) report

# Embeddings of every track from the promoted model.
export: setup
	$(CLI) assets embeddings

# One FAISS index per gallery (audio, lyrics, fused), swapped in atomically.
faiss: setup
	$(CLI) assets faiss_index

# The search API on 127.0.0.1:8080 (see bento/README.md for the curl examples).
api: setup
	LYRIC2VEC_COMPILE_TEXT=$${LYRIC2VEC_COMPILE_TEXT:-1} .venv/bin/bentoml serve bento.service:Lyric2Vec --host 127.0.0.1 --port 8080

# The dashboard on 127.0.0.1:8501 (reads artifacts and the API at LYRIC2VEC_API_URL).
dash: setup
	.venv/bin/streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true

# docker compose (API, Dagster, Prometheus, Grafana): needs a Docker engine (not on the dev box).
up: setup
	.venv/bin/bentoml build -f bento/bentofile.yaml .
	.venv/bin/bentoml containerize lyric2vec:latest --image-tag lyric2vec-api:0.1.0
	docker compose -f deployments/compose/docker-compose.yaml up -d
down:
	docker compose -f deployments/compose/docker-compose.yaml down

bench: setup
	$(PY) bench/songbook_build.py
	$(PY) bench/train_throughput.py
	$(PY) bench/serve.py

clean:
	rm -rf $(LYRIC2VEC_HOME) .pytest_cache .ruff_cache
