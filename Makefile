# lipsyncd: `make serve` runs the whole mesh on this machine, `make test` runs every test.
# Everything the project needs is installed here, from PyPI, into .venv/ (and .venv-build/,
# a build-only environment that converts MediaPipe's face models to ONNX).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD_VENV := .venv-build
WHEELS := .cache/wheels
MEDIAPIPE_WHEEL_VERSION := 0.10.21
FACE_DIR := model_repository/face_detection/1
GEN_DIR := model_repository/generator/1
FACE_MODELS := $(FACE_DIR)/face_detection_short_range.onnx $(FACE_DIR)/face_landmark.onnx
GEN_MODELS := $(GEN_DIR)/.built
TRANSPLANT_MODEL := $(GEN_DIR)/transplant.onnx
PROTO_OUT := proto/lipsync_pb2.py
PYTEST_ARGS ?=
# What `make install` installs: the runtime, dev tools and the local Triton/NATS builds (the
# Triton image's build stage installs only `.`).
INSTALL_SPEC ?= .[dev,local]
BENCH_ARGS ?=
EVAL_ARGS ?=

.PHONY: serve test lint stages-wheel unit integration e2e bench bench-scale eval models proto install chromium clean testdata k8s-check images engines

serve: install proto models
	$(PY) deploy/local/mesh.py

test: install proto models chromium lint
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# Static checks, before the tests: ruff (lint + import order) over the service packages,
# deploy/ and the Triton models' Python, and mypy (--strict, less two parts: pyproject.toml)
# over the service packages. Both are configured in pyproject.toml.
LINT_PATHS := gateway orchestrator postprocess preprocess proto deploy model_repository
STAGES := audio_features face_detection generator
lint: install proto
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy
	@# Each stage's version directory is its own import root (Triton loads model.py from it).
	for stage in $(STAGES); do MYPYPATH=model_repository/$$stage/1 $(VENV)/bin/mypy --explicit-package-bases \
		model_repository/$$stage/1 || exit 1; done

# The Helm chart: rendered (default, GPU and CPU values), linted strictly, validated against
# the Kubernetes schemas, and its gateway/orchestrator/Triton containers run here as rendered
# (tests/k8s; also part of `make test`).
k8s-check: install proto models
	$(PY) -m pytest -q $(PYTEST_ARGS) tests/k8s

# Container images (deploy/docker): the service image and the Triton image. Needs a working
# container engine (docker, podman or buildah); IMAGE_REPO/IMAGE_TAG name them.
IMAGE_REPO ?= lipsyncd
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
images:
	$(PYTHON) deploy/docker/build.py --repo $(IMAGE_REPO) --tag $(IMAGE_TAG)

# TensorRT plans from the ONNX graphs (trtexec), where a GPU and TensorRT exist.
engines: models
	$(PYTHON) deploy/docker/engines.py --models model_repository

# The stage contracts, clients and fakes as their own wheel (`lipsyncd-stages`) for internal
# teams that call the Triton stages without the orchestrator: see model_repository/README.md.
DIST ?= .cache/dist
stages-wheel: install
	$(PY) proto/wheel/build.py --out $(DIST)

unit: install proto models
	$(PY) -m pytest -q tests/unit

# Test media for a clone without ../shared: fetched from the public sources at pinned commits,
# checked by SHA-256, into $(LIPSYNCD_TEST_MEDIA) or .testdata/media (see tests/media.py).
testdata: $(VENV)/.installed
	$(PY) -m tests.media download $(LIPSYNCD_TEST_MEDIA)

bench: install proto models
	$(PY) -m tests.bench.run --out reports/bench.md $(BENCH_ARGS)

# Throughput of 1 vs 2 orchestrators and Tritons (`make serve` scale-out), a few minutes.
bench-scale: install proto models
	$(PY) -m tests.bench.scale --out reports/bench-scale.md $(BENCH_ARGS)

eval: install proto models $(VENV)/.installed-eval
	$(PY) -m tests.eval.run --out reports/eval.md $(EVAL_ARGS)

$(VENV)/.installed-eval: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,local,eval]'
	touch $@

install: $(VENV)/.installed

# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright).
chromium:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '$(INSTALL_SPEC)'
	touch $@

proto: $(PROTO_OUT)

$(PROTO_OUT): proto/lipsync.proto $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto proto/lipsync.proto

models: $(FACE_MODELS) $(GEN_MODELS) $(TRANSPLANT_MODEL)

# MediaPipe pins numpy<2 and protobuf<5, which clash with tritonclient: its face models are
# taken from the wheel file (never installed) and converted in a separate environment.
$(BUILD_VENV)/.installed:
	test -x $(BUILD_VENV)/bin/python || $(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install --quiet --upgrade pip
	$(BUILD_VENV)/bin/pip install --quiet "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "numpy<2" "onnx==1.16.2" "protobuf<4.22"
	touch $@

$(WHEELS)/.mediapipe:
	mkdir -p $(WHEELS)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
		--platform manylinux_2_28_x86_64 -d $(WHEELS) "mediapipe==$(MEDIAPIPE_WHEEL_VERSION)"
	touch $@

$(FACE_MODELS) &: model_repository/face_detection/build.py $(BUILD_VENV)/.installed $(WHEELS)/.mediapipe
	$(BUILD_VENV)/bin/python model_repository/face_detection/build.py \
		--wheel $$(ls $(WHEELS)/mediapipe-$(MEDIAPIPE_WHEEL_VERSION)-*.whl | head -n 1) --out $(FACE_DIR)

$(GEN_MODELS): model_repository/generator/build.py $(wildcard model_repository/generator/1/lipwarp/*.py) $(VENV)/.installed
	$(PY) model_repository/generator/build.py --out $(GEN_DIR)
	touch $@

# The mouth-transplant pixel graph (dubbing by re-synthesis); one output file, so no stamp.
$(TRANSPLANT_MODEL): model_repository/generator/build_transplant.py $(GEN_DIR)/transplant.py $(VENV)/.installed
	$(PY) model_repository/generator/build_transplant.py --out $(GEN_DIR)

clean:
	rm -rf $(VENV) $(BUILD_VENV) .cache reports $(FACE_DIR)/*.onnx $(GEN_DIR)/*.onnx $(GEN_MODELS) $(PROTO_OUT)
