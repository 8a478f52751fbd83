"""Registry-driven sweeps: every registered model, present and future, is checked here."""

from __future__ import annotations

import pytest
import torch

import visionzoo as vz
from visionzoo.registry import builder

MODELS = vz.list_models()


def small_size(name: str) -> int:
    return max(vz.model_info(name).min_input_size, 32)


def test_registry_is_populated():
    assert len(MODELS) >= 10
    assert MODELS == sorted(set(MODELS), key=MODELS.index)  # unique


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_contract(name):
    """Shape with num_classes=7, forward == head(features), every parameter gets a gradient."""
    torch.manual_seed(0)
    model = vz.create_model(name, num_classes=7)
    size = small_size(name)
    x = torch.randn(2, 3, size, size)
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad():
        a = model(x)
        b = model(x)
        feats = model.forward_features(x)
        assert feats.ndim == 4, "forward_features returns (N, C, H, W)"
        c = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
    assert torch.equal(a, b), "eval is deterministic"
    torch.testing.assert_close(a, c)
    assert pre.shape[0] == 2 and pre.ndim == 2
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    size = small_size(name)
    backbone = vz.create_model(name, features_only=True)
    info = backbone.feature_info
    assert info and all({"name", "channels", "reduction"} <= set(f) for f in info)
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, size, size))
    assert len(maps) == len(info)
    for m, f in zip(maps, info, strict=True):
        assert m.ndim == 4, "stage maps are NCHW"
        assert m.shape[1] == f["channels"], (f, m.shape)
        expected = -(-size // f["reduction"])  # ceil: padded convs round up
        if "border" in f:  # unpadded convs/pools (AlexNet) lose `border` input pixels
            expected = (size - f["border"]) // f["reduction"] + 1
        assert m.shape[2] in (expected, size // f["reduction"]), (f, m.shape)
    assert not any("head" in n and "fc" in n for n, _ in backbone.named_parameters())


@pytest.mark.parametrize("name", MODELS)
def test_params_equal_model_info(name):
    info = vz.model_info(name)
    assert info.num_params is not None, f"{name}: ModelInfo.num_params missing"
    with torch.device("meta"):
        model = builder(name)(num_classes=info.num_classes)
    assert sum(p.numel() for p in model.parameters()) == info.num_params


@pytest.mark.parametrize("name", MODELS)
def test_model_info_complete(name):
    info = vz.model_info(name)
    assert info.paper and info.arxiv and info.family
    assert info.published, f"{name}: no published number to verify against"
    for pub in info.published:
        assert pub.source, f"{name}: published {pub.metric} without its table/section"
    cfg = vz.create_model(name).pretrained_cfg
    assert {"input_size", "mean", "std", "crop_pct", "interpolation"} <= set(cfg)


@pytest.mark.parametrize("name", MODELS)
def test_verify_passes(name):
    rows = vz.verify(name)
    assert rows, f"{name}: verify produced no row"
    failed = [(r.variant, r.metric, r.published, r.measured) for r in rows if not r.passed]
    assert not failed, failed


@pytest.mark.parametrize("name", MODELS)
def test_wrong_channels_is_a_clear_error(name):
    model = vz.create_model(name).eval()
    size = small_size(name)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\)"):
        model(torch.randn(1, 2, size, size))
