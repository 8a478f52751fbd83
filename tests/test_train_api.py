"""The Python API of training and evaluation (``vz.train`` / ``vz.evaluate``), its callback hook,
mixed precision (``amp: bf16 | fp16`` with the gradient scaler in the checkpoint), TensorBoard
logging, and ``visionzoo eval`` on plain weights files."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import visionzoo as vz
from test_data import class_images, write_cifar, write_fashion_mnist
from visionzoo.checkpoint import read_header
from visionzoo.cli import main
from visionzoo.data.datasets import ArraySplit, DataSource
from visionzoo.engine import TrainingInterrupted
from visionzoo.recipes import RecipeError

FAST = {"workers": 0, "progress": "off", "batch_size": 16, "img_size": 16}


def _memory_data(n_train: int = 48, n_test: int = 16, size: int = 16) -> DataSource:
    """A learnable in-memory dataset of 1-channel size x size images, 4 classes."""
    x, y = class_images(n_train, 4, size, 1, 0)
    xt, yt = class_images(n_test, 4, size, 1, 1)
    return DataSource(name="blocks", root="", layout="memory", classes=list("abcd"),
                      splits={"train": ArraySplit(torch.from_numpy(x), y.tolist()),
                              "test": ArraySplit(torch.from_numpy(xt), yt.tolist())},
                      eval_split="test", channels=1, native_size=size)


class Recorder:
    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self.result = None

    def on_epoch_end(self, metrics: dict) -> None:
        self.epochs.append(metrics)

    def on_train_end(self, result: vz.TrainResult) -> None:
        self.result = result


def test_train_a_module_with_callbacks_then_evaluate_it(tmp_path: Path) -> None:
    model = vz.create_model("resnet20", num_classes=4, in_chans=1)
    rec, seen = Recorder(), []
    result = vz.train(model, _memory_data(), out=tmp_path / "run", epochs=2,
                      callbacks=[rec, lambda m: seen.append(m["epoch"])], **FAST)
    assert isinstance(result, vz.TrainResult) and result.status == "completed"
    assert result.epochs == 2 and [r["epoch"] for r in result.history] == [1, 2]
    assert result.model is model  # trained in place (no EMA)
    assert result.final_top1 == result.history[-1]["val_top1"] == result.summary["final"]["top1"]
    assert result.best_top1 == max(r["val_top1"] for r in result.history)
    assert result.model_path == tmp_path / "run" / "model.safetensors"
    assert result.model_path.is_file() and result.checkpoint_path.is_file()
    # the callback hook: every epoch's metrics, then the result; functions are callbacks too
    assert [m["epoch"] for m in rec.epochs] == [1, 2] == seen
    assert rec.epochs[-1]["val_top1"] == result.final_top1 and rec.result is result
    assert {"train_loss", "val_loss", "val_top5", "lr", "img_per_s"} <= set(rec.epochs[0])
    # metrics.csv is written by the same hook
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].split(",")[0] == "2"

    # evaluate: the module in memory, its checkpoint, and the run's own number agree
    data = _memory_data()
    mem = vz.evaluate(model, data, workers=0)
    ckpt = vz.evaluate(result.model_path, data, workers=0, out_dir=tmp_path / "eval")
    assert mem["top1"] == ckpt["top1"] == result.final_top1
    assert mem["loss"] == pytest.approx(result.final["loss"], abs=1e-6)
    assert ckpt["loss"] == pytest.approx(result.final["loss"], abs=1e-6)
    assert mem["images"] == 16 and len(mem["per_class"]) == 4 and mem["img_per_s"] > 0
    assert Path(ckpt["json"]).is_file() and Path(ckpt["confusion_png"]).is_file()
    assert "json" not in mem  # no out_dir: nothing written

    # a run of a module resumes by name: its configuration was recorded
    more = vz.train("resnet20", data, out=tmp_path / "run", resume=True, epochs=3, **FAST)
    assert more.epochs == 3 and more.model.model_config == model.model_config


def test_train_refuses_a_module_that_does_not_fit(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="num_classes=4"):
        vz.train(vz.create_model("resnet20", num_classes=10, in_chans=1), _memory_data(),
                 out=tmp_path / "a", **FAST)
    with pytest.raises(RecipeError, match="3-channel input"):
        vz.train(vz.create_model("resnet20", num_classes=4, in_chans=3), _memory_data(),
                 out=tmp_path / "b", in_chans=1, **FAST)
    with pytest.raises(RecipeError, match="create_model"):
        vz.train(torch.nn.Linear(2, 2), _memory_data(), out=tmp_path / "c", **FAST)


def _ctrl_c() -> None:
    """Ctrl-C as the training loop sees it: the SIGINT handler the loop installed, called here.
    A real SIGINT sent to this process killed its xdist worker now and then, late in the full
    suite (with no traceback, on CI and here); the real signal is tested on a `visionzoo train`
    subprocess in test_train_cli.py::test_ctrl_c_saves_a_checkpoint_before_exiting."""
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler) and handler is not signal.default_int_handler, handler
    handler(signal.SIGINT, None)


def _interrupt_after_first_epoch(metrics: dict) -> None:
    if metrics["epoch"] == 1:  # as Ctrl-C: the loop stops after the epoch's checkpoint
        _ctrl_c()


# Late in the full suite this test's xdist worker died twice on CI with no Python traceback (it
# then sent a real SIGINT to itself; see _ctrl_c). `make test` runs the tests marked serial after
# the xdist run, in one plain pytest process.
@pytest.mark.serial
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_fp16_keeps_the_scaler_in_the_checkpoint_and_resumes_exactly(tmp_path: Path) -> None:
    # float16 convolution backward is slow on CPUs (no fast kernels): 8x8 images, 2 steps/epoch
    kw = {**FAST, "epochs": 2, "amp": "fp16", "lr": 0.05, "img_size": 8, "batch_size": 8}
    data = _memory_data(16, 8, size=8)
    ref = vz.train("resnet20", data, out=tmp_path / "ref", **kw)
    losses = [r["train_loss"] for r in ref.history]
    assert all(torch.isfinite(torch.tensor(losses))) and ref.history[-1]["val_loss"] < 1e3
    state = read_header(ref.checkpoint_path)["extra"]["train_state"]
    scaler = state["scaler"]
    assert scaler["scale"] > 1 and scaler["_growth_tracker"] > 0  # a live float16 loss scale
    assert yaml.safe_load((tmp_path / "ref" / "config.yaml").read_text())["amp"] == "fp16"

    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted):
        vz.train("resnet20", data, out=cut, callbacks=_interrupt_after_first_epoch, **kw)
    assert read_header(cut / "last.safetensors")["extra"]["train_state"]["epoch"] == 1
    vz.train("resnet20", data, out=cut, resume=True, **kw)
    a, b = load_file(ref.model_path), load_file(cut / "model.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # the scaler continued from its saved state (a fresh one would count steps from 0)
    assert read_header(cut / "last.safetensors")["extra"]["train_state"]["scaler"] == scaler


def test_bf16_channels_last_on_the_command_line_and_the_old_bf16_key(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_fashion_mnist(tmp_path / "fashion-mnist", 32, 16)
    out = tmp_path / "run"
    assert main(["train", "resnet20", "--data", str(data), "--epochs", "1", "-b", "16", "-j", "0",
                 "--amp", "bf16", "--channels-last", "--img-size", "16", "--progress", "off",
                 "--out", str(out)]) == 0
    assert "amp bf16" in capsys.readouterr().out
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["amp"], cfg["channels_last"]) == ("bf16", True) and "bf16" not in cfg
    state = read_header(out / "last.safetensors")["extra"]["train_state"]
    assert state["scaler"] is None  # bfloat16 needs no loss scale
    summary = json.loads((out / "summary.json").read_text())
    assert summary["amp"] == "bf16" and 0 <= summary["final"]["loss"] < 1e3

    # a run saved before the rename (train_config with bf16: true) resumes as amp bf16
    ckpt = out / "last.safetensors"
    header = read_header(ckpt)
    old = {k: v for k, v in header["extra"]["train_config"].items() if k != "amp"}
    header["extra"]["train_config"] = {**old, "bf16": True}
    save_file(load_file(ckpt), ckpt, metadata={"visionzoo": json.dumps(header)})
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "-j", "0"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["amp"] == "bf16"
    # so do recipes and options that still say bf16
    recipe = tmp_path / "old.yaml"
    recipe.write_text("epochs: 1\nbf16: true\n")
    assert vz.train("resnet20", _memory_data(), recipe=str(recipe), out=tmp_path / "r",
                    **FAST).summary["amp"] == "bf16"
    assert main(["train", "resnet20", "--data", str(data), "--epochs", "1", "-b", "16", "-j",
                 "0", "--bf16", "--img-size", "16", "--progress", "off", "--out",
                 str(tmp_path / "flag")]) == 0
    assert yaml.safe_load((tmp_path / "flag" / "config.yaml").read_text())["amp"] == "bf16"


def test_tensorboard_logs_every_epoch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_fashion_mnist(tmp_path / "fashion-mnist", 32, 16)
    out = tmp_path / "run"
    assert main(["train", "resnet20", "--data", str(data), "--epochs", "2", "-b", "16", "-j", "0",
                 "--img-size", "16", "--log", "tensorboard", "--progress", "off",
                 "--out", str(out)]) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    top1 = acc.Scalars("val/top1")
    assert [e.step for e in top1] == [1, 2]
    history = read_header(out / "last.safetensors")["extra"]["train_state"]["history"]
    assert [e.value for e in top1] == pytest.approx([r["val_top1"] for r in history])
    assert {"train/loss", "val/loss", "opt/lr", "speed/img_per_s"} <= set(acc.Tags()["scalars"])


def test_tensorboard_missing_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    data = write_fashion_mnist(tmp_path / "fashion-mnist", 32, 16)
    assert main(["train", "resnet20", "--data", str(data), "--epochs", "1", "-b", "16", "-j", "0",
                 "--img-size", "16", "--log", "tensorboard", "--progress", "off",
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "visionzoo[tensorboard]" in err[0], err
    assert not (tmp_path / "run" / "last.safetensors").exists()  # refused before training


# ---------------------------------------------------------------------------------------------
# eval on weights files (torchvision / timm format), as predict accepts them
# ---------------------------------------------------------------------------------------------


def test_eval_accepts_the_weights_files_predict_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torchvision

    data = write_cifar(tmp_path, classes=10, n_train=16, n_test=8)
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=10)
    weights = tmp_path / "resnet18-finetuned.pth"
    torch.save(ref.state_dict(), weights)
    ported = vz.port("torchvision", "resnet18", ref.state_dict(), num_classes=10)
    expected = vz.evaluate(ported, str(data), workers=0)
    for flag in ("--checkpoint", "--weights"):
        assert main(["eval", "resnet18", flag, str(weights), "--data", str(data), "-j", "0",
                     "--out", str(tmp_path / "eval"), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert (got["top1"], got["images"]) == (expected["top1"], 8)
        assert got["loss"] == pytest.approx(expected["loss"], abs=1e-5)

    # a file whose classifier has another number of classes would evaluate a random head
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet.pth")
    assert main(["eval", "resnet18", "--checkpoint", str(tmp_path / "imagenet.pth"), "--data",
                 str(data), "-j", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "10 outputs" in err[0], err
    assert main(["eval", "--checkpoint", str(weights), "--data", str(data)]) == 1
    assert "name its model" in capsys.readouterr().err


def test_none_is_a_value_where_a_key_offers_it() -> None:
    from visionzoo.recipes import coerce, resolve_config

    assert coerce("amp", "none") == "none" and coerce("train_crop", "none") == "none"
    assert coerce("auto_augment", "none") is None  # nullable: none is "off"
    assert resolve_config(None, {"amp": "fp16", "log": "tensorboard"})["amp"] == "fp16"
    with pytest.raises(RecipeError, match="one of none, bf16, fp16"):
        coerce("amp", "fp8")
    # the old boolean maps onto the new key; a new key given beside it wins
    assert resolve_config(None, {"bf16": True})["amp"] == "bf16"
    assert resolve_config(None, {"bf16": "false"})["amp"] == "none"
    assert resolve_config(None, {"bf16": True, "amp": "fp16"})["amp"] == "fp16"


def test_fine_tune_a_ported_model_and_resume_the_run_by_name(tmp_path: Path) -> None:
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    data = write_cifar(tmp_path, classes=10, n_train=32, n_test=16)
    model = vz.create_model("resnet18", num_classes=10, pretrained=weights)  # new head
    first = vz.train(model, str(data), out=tmp_path / "run", epochs=1, **FAST)
    assert first.model is model
    # a ported model's configuration lacks in_chans; the run records it, so a rebuild by name
    # (resume without the module) has the checkpoint's configuration
    again = vz.train(None, out=tmp_path / "run", resume=True, epochs=2, workers=0)
    assert again.epochs == 2 and again.history[0] == first.history[0]
    assert again.model.model_config == model.model_config == {"num_classes": 10, "in_chans": 3}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_tensor_pipeline_resumes_mid_epoch_to_the_same_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import visionzoo.engine as engine

    kw = {**FAST, "epochs": 2, "pipeline": "tensor", "crop_padding": 2, "ema": True,
          "tta_hflip": True, "batch_size": 8}  # 6 steps per epoch
    data = _memory_data(48, 16)
    ref = vz.train("resnet20", data, out=tmp_path / "ref", **kw)
    assert (tmp_path / "ref" / "config.yaml").read_text().count("pipeline: tensor") == 1
    step = engine._train_step
    calls = []

    def interrupt_at_step_9(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 9:  # epoch 2, step 3: Ctrl-C during the step
            _ctrl_c()
        return step(*args, **kwargs)

    monkeypatch.setattr(engine, "_train_step", interrupt_at_step_9)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted):
        vz.train("resnet20", data, out=cut, **kw)
    state = read_header(cut / "last.safetensors")["extra"]["train_state"]
    assert (state["epoch"], state["step"]) == (1, 3)
    monkeypatch.setattr(engine, "_train_step", step)
    again = vz.train("resnet20", data, out=cut, resume=True, **kw)
    a, b = load_file(ref.model_path), load_file(cut / "model.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert again.final_top1 == ref.final_top1


def test_tensor_pipeline_is_refused_where_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="auto_augment"):
        vz.train("resnet20", _memory_data(), out=tmp_path / "a", pipeline="tensor",
                 auto_augment="randaugment", **FAST)


def test_fmnist_fast_recipe_trains_on_real_fashion_mnist(tmp_path: Path) -> None:
    from visionzoo.data.datasets import open_dataset

    src = open_dataset("fashion-mnist")
    train, test = src.split("train"), src.split("test")
    small = DataSource(name="fashion-mnist-small", root="", layout="memory",
                       classes=src.classes, eval_split="test", channels=1, native_size=28,
                       stats=src.stats,
                       splits={"train": ArraySplit(train.images[:384], train.labels[:384]),
                               "test": ArraySplit(test.images[:200], test.labels[:200])})
    result = vz.train("resnet20", small, recipe="fmnist_fast", out=tmp_path / "run", epochs=2,
                      batch_size=32, lr=0.05, compile=False, progress="off")  # 24 steps
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["pipeline"] == "tensor" and cfg["amp"] == "bf16" and cfg["tta_hflip"]
    assert result.epochs == 2 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.final_top1 > 0.2  # learning (10 classes, chance 0.1)
