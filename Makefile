# Everything runs from the project virtualenv; `make venv` (re)builds it when
# pyproject.toml changes. `make test` needs nothing running: the tests start their own
# Postgres (pgvector) and Redis.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test lint typecheck bench browser clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,local-embeddings]'
	touch $@

# API + workers in the foreground; starts Postgres and Redis under var/ unless
# DATABASE_URL / REDIS_URL are set, and restarts whichever of them dies. PORT,
# WORKER_PROCESSES, WORKER_THREADS, WORKER_CPU_PROCESSES, WORKER_CPU_THREADS apply.
run: $(STAMP)
	$(BIN)/switchyard dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy api workers pipelines schemas
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_deploy_files.py
	@if docker compose version >/dev/null 2>&1; then \
		SWITCHYARD_ADMIN_KEY=x SWITCHYARD_SECRET_KEY=x WEBHOOK_SECRET=x \
			docker compose -f deploy/compose.yaml config -q; \
	else echo "docker compose not installed: deploy/compose.yaml checked by the test only"; fi
	@if command -v kubeconform >/dev/null 2>&1; then \
		kubeconform -strict -ignore-missing-schemas -summary deploy/k8s/api.yaml \
			deploy/k8s/worker.yaml deploy/k8s/keda.yaml deploy/k8s/secret.example.yaml; \
	else echo "kubeconform not installed: deploy/k8s checked by the test only"; fi

typecheck: $(STAMP)
	$(BIN)/mypy api workers pipelines schemas

# Two pytest workers (pytest-xdist), each taking a whole test file at a time, so module-scoped
# stacks stay shared; each worker starts its own Postgres and Redis. Most of the suite waits
# on real processes, so two workers nearly halve it on two cores. TEST_WORKERS=0 runs it
# in one process.
TEST_WORKERS ?= 2

test: lint browser
	$(BIN)/pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The dashboard's e2e test drives Debian's Chromium headless (nothing is downloaded at run
# time). Installed once when missing; needs root, or sudo. Takes about 25 s.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# Options go through ARGS, e.g. make bench ARGS="--only gateway --quick"
# (tests/bench/run.py --help lists them).
bench: $(STAMP)
	$(BIN)/python -m tests.bench.run $(ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info bench-results.json
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also deletes the virtualenv and var/ (the embedded dev database and admin key).
distclean: clean
	rm -rf $(VENV) var
