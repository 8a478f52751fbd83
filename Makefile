# The two commands of the README's quick start. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: check every model against its paper, show ResNet-50's Table 1, then train the
# paper's CIFAR ResNet-20 on Fashion-MNIST for one epoch (~3-4 min on 2 cores, ~88-89 % test
# top-1) and evaluate its checkpoint. --resume makes a second `make demo` re-report, not retrain.
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
demo: $(STAMP) $(FMNIST)
	$(BIN)/visionzoo verify
	$(BIN)/visionzoo info resnet50
	$(BIN)/visionzoo train --model resnet20 --data fashion-mnist --epochs 1 --out runs/fmnist --resume
	$(BIN)/visionzoo eval --model resnet20 --checkpoint runs/fmnist/model.safetensors --data fashion-mnist

$(FMNIST):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist

# The whole test suite (no network; about 15-20 minutes on 2 cores): the xdist run, then the few
# tests marked serial in one plain process. Now and then an xdist worker dies late in the suite
# with no traceback and no OOM kill (seen on CI and here, on different tests; cause not found):
# a test whose worker died is run once more (pytest-rerunfailures' crash recovery; the summary
# counts it as "rerun" and tests/conftest.py prints where the worker was). --only-rerun with a
# pattern no failure message contains keeps every ordinary failure a failure, never rerun.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q -m "not serial" --reruns 1 \
		--only-rerun "only-a-crashed-worker-is-rerun"
	$(BIN)/python -m pytest -p no:xdist -q -m serial

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
