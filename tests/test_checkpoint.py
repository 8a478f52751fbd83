"""Checkpoints: safetensors + JSON header; clear errors for truncated or foreign files."""

from __future__ import annotations

import pytest
import torch

import visionzoo as vz
from visionzoo.checkpoint import read_header

from conftest import randomize_


def test_roundtrip_rebuilds_the_model(tmp_path):
    m = randomize_(vz.create_model("resnet20", num_classes=4, shortcut="B")).eval()
    path = vz.save_checkpoint(m, tmp_path / "m.safetensors", extra={"class_names": list("abcd")})
    header = read_header(path)
    assert header["model"] == "resnet20"
    assert header["config"] == {"num_classes": 4, "in_chans": 3, "shortcut": "B"}
    assert header["extra"]["class_names"] == ["a", "b", "c", "d"]
    m2 = vz.load_checkpoint(path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    # no pickle: the file is a plain safetensors file
    assert path.read_bytes()[8:9] == b"{"


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    m = vz.create_model("resnet20")
    path = vz.save_checkpoint(m, tmp_path / "m.safetensors")
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(vz.CheckpointError, match="truncated"):
        vz.load_checkpoint(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(vz.CheckpointError, match="truncated or not"):
        vz.load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        vz.load_checkpoint(tmp_path / "missing.safetensors")


def test_other_architecture_or_layout_refused(tmp_path):
    path = vz.save_checkpoint(vz.create_model("resnet50"), tmp_path / "r50.safetensors")
    with pytest.raises(vz.CheckpointError,
                       match="resnet50 checkpoint; it cannot load into resnet101"):
        vz.load_checkpoint(path, model=vz.create_model("resnet101"))
    with pytest.raises(vz.CheckpointError, match="stride_in_1x1"):
        vz.load_checkpoint(path, model=vz.create_model("resnet50", stride_in_1x1=False))
    same = vz.create_model("resnet50")
    assert vz.load_checkpoint(path, model=same) is same


def test_save_is_atomic_and_keeps_previous_on_failure(tmp_path, monkeypatch):
    m = vz.create_model("resnet20")
    path = vz.save_checkpoint(m, tmp_path / "m.safetensors")
    before = path.read_bytes()
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        vz.save_checkpoint(m, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
