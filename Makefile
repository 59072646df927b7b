# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP_FLAGS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
export PRIVRANK_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test lint docs format install install-dev clean chromium test-ray-cluster k8s-check \
	flower-env test-flower pfl-env docker-image docker-image-offline

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/privrank demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# The console's browser tests drive Debian's Chromium through Playwright (which never downloads a
# browser of its own here). Installed when missing; a no-op when it is there.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the console's browser tests)"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

# The documentation site (mkdocs.yml, docs/): warnings (a docstring mkdocstrings cannot read, a
# dead link) are errors.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The Kubernetes manifests (deploy/k8s) against the Kubernetes schemas (kubernetes-validate,
# offline) and the vendored KubeRay CRD schemas (deploy/kuberay-crds).
k8s-check: $(VENV)/.installed-dev
	$(BIN)/python -m privrank.distributed.k8s_manifests deploy/k8s deploy/kuberay-crds

test: lint docs chromium k8s-check
	$(BIN)/python -m pytest

# Multi-node tests on one machine (ray.cluster_utils.Cluster, 3 nodes): kept out of `make test`
# for time (about a minute on a shared 2-core machine).
test-ray-cluster: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m ray_cluster tests/distributed

# The Flower deployment path (privrank.federated.flower) runs in its own environment: flwr's
# pins (typer<0.21, rich<15, protobuf<7, packaging<26, fastapi<0.139, ray==2.55.1) clash with
# the main one's. privrank is installed into it from this checkout without its dependencies,
# beside the pinned list in deploy/flower/requirements.txt.
FLOWER_VENV := .venv-flower
$(FLOWER_VENV)/.installed: deploy/flower/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install $(PIP_FLAGS) -r deploy/flower/requirements.txt
	$(FLOWER_VENV)/bin/pip install --no-deps --no-build-isolation -e .
	$(FLOWER_VENV)/bin/python -c "import flwr, privrank.federated.flower"
	touch $@

flower-env: $(FLOWER_VENV)/.installed

# The SuperLink + SuperNodes end-to-end tests (real processes on loopback gRPC): they need the
# Flower environment, so they are kept out of `make test`.
test-flower: $(FLOWER_VENV)/.installed $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m flower tests/federated/flower

# Apple's pfl-research (the simulator-speed peer) in its own environment: pfl pins
# dp-accounting<0.6 and packaging<26 (deploy/pfl/requirements.txt).
PFL_VENV := .venv-pfl
$(PFL_VENV)/.installed: deploy/pfl/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(PFL_VENV)
	$(PFL_VENV)/bin/pip install $(PIP_FLAGS) -r deploy/pfl/requirements.txt
	$(PFL_VENV)/bin/pip install --no-deps --no-build-isolation -e .
	$(PFL_VENV)/bin/python -c "import pfl, privrank.models._fedmf_rounds"
	touch $@

pfl-env: $(PFL_VENV)/.installed

# The CPU image of deploy/Dockerfile (KubeRay pods, serving). docker-image-offline builds it
# without Docker Hub or the PyTorch index (a debootstrap base, torch from WHEELS).
IMAGE ?= privrank:0.1.0
WHEELS ?= /opt/wheels
docker-image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

docker-image-offline:
	deploy/build_image_offline.sh $(WHEELS) $(IMAGE)

clean:
	rm -rf $(VENV) $(FLOWER_VENV) $(PFL_VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
