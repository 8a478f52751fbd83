"""create_model(pretrained=...) and the download cache, tested with local files only."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

import visionzoo as vz
from visionzoo import ports

from conftest import max_logit_diff, randomize_


def _published_file(directory, name="resnet18"):
    """A torchvision-style weights file named <arch>-<sha256 prefix>.pth, as on their server."""
    ref = randomize_(torchvision.models.get_model(name))
    tmp = directory / "tmp.pth"
    torch.save(ref.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    final = directory / f"{name}-{digest}.pth"
    tmp.rename(final)
    return ref, final


def test_download_file_url_with_hash_check(tmp_path):
    ref, src = _published_file(tmp_path)
    cache = tmp_path / "cache"
    got = ports.download(src.as_uri(), cache)
    assert got.parent == cache and got.read_bytes() == src.read_bytes()
    # a cached file that no longer matches its hash is refused
    got.write_bytes(got.read_bytes()[:-10])
    with pytest.raises(vz.PortError, match="does not match the published hash"):
        ports.download(src.as_uri(), cache)
    # a download that does not match is not kept
    wrong = tmp_path / "resnet18-00000000.pth"
    wrong.write_bytes(src.read_bytes())
    with pytest.raises(vz.PortError, match="does not match its published hash"):
        ports.download(wrong.as_uri(), tmp_path / "cache2")
    assert not any((tmp_path / "cache2").iterdir())


def test_pretrained_true_uses_cache_and_published_url(tmp_path, monkeypatch):
    ref, src = _published_file(tmp_path)
    from visionzoo import pretrained

    table = {k: dict(v) for k, v in pretrained._table().items()}
    table["resnet18"]["tags"] = [{**t, "location": src.as_uri()} if t["tag"] == "tv_in1k" else t
                                 for t in table["resnet18"]["tags"]]
    monkeypatch.setattr(pretrained, "_table", lambda: table)  # the default tag, served locally
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    m = vz.create_model("resnet18", pretrained=True)
    assert max_logit_diff(m, ref, torch.randn(1, 3, 64, 64)) <= 1e-4
    assert (tmp_path / "cache" / src.name).exists()


def test_pretrained_local_path_and_finetune_head(tmp_path):
    ref, src = _published_file(tmp_path, "resnet50")
    m = vz.create_model("resnet50", pretrained=src)
    assert m.stride_in_1x1 is False  # torchvision's layout, set by the port
    assert max_logit_diff(m, ref, torch.randn(1, 3, 64, 64)) <= 1e-4
    ft = vz.create_model("resnet50", pretrained=src, num_classes=7)
    assert ft.head.fc.out_features == 7
    torch.testing.assert_close(ft.stem.conv.weight, ref.conv1.weight)
    # weights of the other layout are refused, not loaded silently
    with pytest.raises(vz.PortError, match="stride_in_1x1"):
        vz.create_model("resnet50", pretrained=src, stride_in_1x1=True)
    # weights of another network are refused with the keys named
    with pytest.raises(vz.PortError, match="does not fit resnet101"):
        vz.create_model("resnet101", pretrained=src)


def test_pretrained_from_visionzoo_checkpoint(tmp_path):
    m = randomize_(vz.create_model("resnet20"))
    path = vz.save_checkpoint(m, tmp_path / "c.safetensors")
    m2 = vz.create_model("resnet20", pretrained=path)
    assert max_logit_diff(m, m2, torch.randn(1, 3, 32, 32)) == 0
    with pytest.raises(vz.PortError, match="resnet20 checkpoint, not resnet32|no reference"):
        vz.create_model("resnet32", pretrained=path)


def test_truncated_weights_file(tmp_path):
    _, src = _published_file(tmp_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(vz.PortError, match="truncated or not a weights file"):
        vz.port("torchvision", "resnet18", bad)
