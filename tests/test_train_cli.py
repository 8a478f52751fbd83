"""`visionzoo train` / `visionzoo eval` end to end on tiny synthetic datasets: the run files, eval
reproducing the run's number, exact resume after SIGKILL, Ctrl-C, two torchrun processes equal
to one, undecodable images, and one-line user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_data import write_cifar, write_fashion_mnist, write_imagefolder
from visionzoo.checkpoint import read_header
from visionzoo.cli import main
from visionzoo.data.datasets import FASHION_MNIST_CLASSES

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _vz(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "visionzoo", *args], env=ENV, **kw)


def _state(path: Path) -> dict | None:
    try:
        return read_header(path)["extra"]["train_state"]
    except Exception:  # noqa: BLE001 - not written yet
        return None


def test_train_writes_the_run_files_and_eval_reproduces_its_number(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_fashion_mnist(tmp_path / "fashion-mnist", 96, 40)
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", str(data), "--epochs", "2",
                 "--batch-size", "16", "--workers", "1", "--progress", "lines",
                 "--out", str(out)]) == 0
    cap = capsys.readouterr()
    epoch_lines = [ln for ln in cap.out.splitlines() if ln.startswith("epoch ")]
    assert len(epoch_lines) == 2  # one summary line per epoch
    assert all("img/s" in ln and "data wait" in ln and "top-1" in ln for ln in epoch_lines)
    assert "ETA" in cap.err and "img/s" in cap.err  # the progress display

    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png", "last.safetensors",
                 "model.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    # Fashion-MNIST feeds the CIFAR ResNet as 1-channel 32x32 (padded), normalized by its stats
    assert (cfg["model"], cfg["recipe"], cfg["in_chans"], cfg["img_size"]) == \
        ("resnet20", "small_cpu", 1, 32)
    assert len(cfg["mean"]) == 1 and cfg["epochs"] == 2 and cfg["batch_size"] == 16
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,global_step,lr,train_loss")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert summary["data_wait_s"] >= 0 and summary["skipped_images"] == 0
    header = read_header(out / "model.safetensors")
    assert header["extra"]["class_names"] == list(FASHION_MNIST_CLASSES)

    assert main(["eval", "--model", "resnet20", "--checkpoint", str(out / "model.safetensors"),
                 "--data", str(data), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    final = summary["final"]
    assert f"top-1 {final['top1']:.2%}" in text and f"top-5 {final['top5']:.2%}" in text
    assert sum(name in text for name in FASHION_MNIST_CLASSES) == 10  # per-class accuracy
    result = json.loads(next(out.glob("eval_*.json")).read_text())
    assert result["top1"] == final["top1"] and result["loss"] == pytest.approx(final["loss"])
    assert sum(sum(r) for r in result["confusion"]) == 40
    assert Path(result["confusion_png"]).read_bytes()[:4] == b"\x89PNG"

    # predict on a 28x28 gray PNG of a test image sees exactly what training/eval saw: the
    # checkpoint's pretrained_cfg says gray, zero-padded 28 -> 32 (not resized), its mean/std
    from PIL import Image

    from visionzoo.data.datasets import open_dataset
    from visionzoo.data.presets import eval_transform
    from visionzoo.predict import load_classifier, predict

    split = open_dataset(str(data)).split("test")
    img, _ = split.load(0)  # (1, 28, 28) uint8
    png = tmp_path / "item.png"
    Image.fromarray(img.reshape(28, 28).numpy(), mode="L").save(png)
    model, names = load_classifier(checkpoint=out / "model.safetensors")
    assert names == list(FASHION_MNIST_CLASSES)
    [pred] = predict(model, [png], names, topk=3)
    with torch.no_grad():
        ref = model(eval_transform(cfg, 28, 1)(img)[None]).softmax(-1)[0]
    top_p, top_i = ref.topk(3)
    assert [c for c, _, _ in pred.topk] == top_i.tolist()
    assert [p for _, _, p in pred.topk] == pytest.approx(top_p.tolist(), abs=1e-5)


def test_resume_after_sigkill_ends_with_the_weights_of_an_uninterrupted_run(
        tmp_path: Path) -> None:
    data = write_cifar(tmp_path, classes=10, n_train=48, n_test=16)  # 3 steps per epoch
    args = ["--model", "resnet20", "--data", str(data), "--epochs", "5", "--batch-size", "16",
            "--checkpoint-every", "1", "--ema", "--mixup-alpha", "0.4", "--progress", "off"]
    killed = tmp_path / "killed"
    proc = _vz("train", *args, "--workers", "1", "--out", str(killed),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        st = _state(killed / "last.safetensors")
        if st and st["global_step"] >= 5 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = _state(killed / "last.safetensors")
    assert st and 5 <= st["global_step"] < 15 and not (killed / "model.safetensors").exists(), \
        "the run was not cut short"
    # resume in this process, without loader workers: neither may change a single bit
    assert main(["train", *args, "--workers", "0", "--out", str(killed), "--resume"]) == 0
    ref = tmp_path / "ref"
    assert main(["train", *args, "--workers", "0", "--out", str(ref)]) == 0
    a, b = load_file(killed / "model.safetensors"), load_file(ref / "model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    la, lb = load_file(killed / "last.safetensors"), load_file(ref / "last.safetensors")
    assert [k for k in lb if not k.startswith("__rng__") and not torch.equal(la[k], lb[k])] == []
    hist = [json.loads((d / "summary.json").read_text())["final"] for d in (killed, ref)]
    assert hist[0] == hist[1]


def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path: Path) -> None:
    data = write_cifar(tmp_path, classes=10, n_train=64, n_test=8)
    out = tmp_path / "run"
    proc = _vz("train", "--model", "resnet20", "--data", str(data), "--epochs", "20",
               "--batch-size", "4", "--workers", "1", "--progress", "lines", "--out", str(out),
               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
               start_new_session=True)
    for line in proc.stderr:  # the first progress line: the loop is running
        if line.startswith("epoch 1/20"):
            break
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: loader workers get it too
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err
    assert "checkpoint saved" in err and "--resume" in err
    st = _state(out / "last.safetensors")
    assert st["reason"] == "interrupted" and st["step"] > 0  # mid-epoch, the exact position
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    data = write_cifar(tmp_path, classes=10, n_train=64, n_test=32)
    common = ["--model", "resnet20", "--data", str(data), "--epochs", "1", "--batch-size", "16",
              "--lr", "0.02", "--label-smoothing", "0", "--workers", "0", "--sync-bn",
              "--progress", "off"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "visionzoo", "train", *common, "--out",
                        str(tmp_path / "two")], env=ENV, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch 1/1") == 1  # rank 0 alone reports
    assert main(["train", *common, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert (two["world_size"], one["world_size"]) == (2, 1)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), \
        load_file(tmp_path / "two" / "model.safetensors")
    # Same images per step; gradients averaged over ranks and BatchNorm statistics over the
    # global batch. Only float summation order differs (measured ~1e-6 after 4 steps).
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert diff < 2e-5
    assert two["final"]["top1"] == one["final"]["top1"]
    assert two["final"]["loss"] == pytest.approx(one["final"]["loss"], abs=1e-4)


def test_undecodable_images_are_skipped_counted_and_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_imagefolder(tmp_path / "folder", classes=3, per_class=6)
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", str(data), "--epochs", "1",
                 "--batch-size", "4", "--workers", "1", "--progress", "off",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipped 2 train / 0 val undecodable images" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_images"] == 2 and summary["final"]["split"] == "val"
    assert main(["eval", "--model", "resnet20", "--checkpoint", str(out / "model.safetensors"),
                 "--data", str(data), "--split", "train", "--workers", "0"]) == 0
    assert "skipped 2 undecodable images" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "resnet999", "--data", "DATA"], "unknown model 'resnet999'"),
    (["train", "--model", "resnet20", "--data", "/no/such/folder"], "no such dataset folder"),
    (["train", "--model", "resnet20", "--data", "DATA", "--epochs", "many"],
     "epochs expects int"),
    (["train", "--model", "resnet20", "--data", "DATA", "--recipe", "adam_paper"],
     "unknown recipe"),
    (["train", "--data", "DATA"], "--model and --data are required"),
    (["eval", "--model", "resnet32", "--checkpoint", "CKPT", "--data", "DATA"],
     "holds a resnet20 checkpoint"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                  message: str) -> None:
    import visionzoo as vz

    data = write_fashion_mnist(tmp_path / "fashion-mnist", 16, 8)
    ckpt = vz.save_checkpoint(vz.create_model("resnet20", num_classes=10, in_chans=1),
                              tmp_path / "c.safetensors")
    argv = [{"DATA": str(data), "CKPT": str(ckpt)}.get(a, a) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run"), "--progress", "off"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture
                                            ) -> None:
    data = write_fashion_mnist(tmp_path / "fashion-mnist", 16, 8)
    args = ["train", "--model", "resnet20", "--data", str(data), "--epochs", "1", "--batch-size",
            "8", "--workers", "0", "--progress", "off", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert main(args) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # finished: resuming trains nothing more
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_done"] == 1
