"""Shared layers: inference writes of BN and the SE scale into their fresh input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import visionzoo as vz
from visionzoo.layers import ConvNormAct, SqueezeExcite, batch_norm_into


def _bn(chs: int = 8) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(chs, eps=1e-3)
    with torch.no_grad():  # non-trivial statistics and affine parameters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_into_writes_bn_values_into_its_input(channels_last: bool) -> None:
    bn, x = _bn(), torch.randn(2, 8, 5, 7)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    expected = bn(x)
    with torch.inference_mode():
        y = x.clone()
        out = batch_norm_into(y, bn)
    assert out.data_ptr() == y.data_ptr()
    assert torch.equal(out, expected)  # the same kernel: bit-identical


def test_batch_norm_into_leaves_its_input_alone_where_it_must() -> None:
    bn, x = _bn(), torch.randn(2, 8, 5, 5)
    kept = x.clone()
    out = batch_norm_into(x, bn)  # autograd on
    assert out.data_ptr() != x.data_ptr() and torch.equal(x, kept) and out.requires_grad
    with torch.no_grad():
        for fallback in (copy.deepcopy(bn).train(), nn.BatchNorm2d(8, track_running_stats=False)
                         .eval(), nn.SyncBatchNorm(8).eval()):
            out = batch_norm_into(x, fallback)
            assert out.data_ptr() != x.data_ptr() and torch.equal(x, kept)
        out = batch_norm_into(x.bfloat16(), bn)  # mixed dtypes: the module's own path
        assert out.dtype == torch.bfloat16
        seen = []
        handle = bn.register_forward_hook(
            lambda _m, i, o: seen.append(i[0].data_ptr() == o.data_ptr()))
        batch_norm_into(x, bn)
        handle.remove()
        assert seen == [False] and torch.equal(x, kept)  # a hook sees the module as written


def test_conv_norm_act_in_place_at_inference_matches_autograd_path() -> None:
    torch.manual_seed(0)
    block = ConvNormAct(3, 8, 3, act=nn.ReLU6)
    block.norm.load_state_dict(_bn().state_dict())
    block.eval()
    x = torch.randn(2, 3, 9, 9)
    expected = block(x)
    with torch.inference_mode():
        assert torch.equal(block(x), expected)
    kept = []  # a hook that keeps the conv's output (no copy) must find the conv's values
    handle = block.conv.register_forward_hook(lambda _m, _i, out: kept.append(out))
    with torch.inference_mode():
        assert torch.equal(block(x), expected)
    handle.remove()
    assert torch.equal(kept[0], block.conv(x))
    gm = torch.fx.symbolic_trace(block)  # a Proxy takes the module path
    assert any(n.target == "norm" for n in gm.graph.nodes)
    assert torch.equal(gm(x), expected)
    with torch.no_grad():  # so does a TorchScript trace (export runs without autograd)
        traced = torch.jit.trace(block, x)
    assert "batch_norm" in str(traced.inlined_graph) and "native_batch_norm" not in str(
        traced.inlined_graph)
    assert torch.equal(traced(x), expected)


@pytest.mark.parametrize("inplace", [False, True])
def test_squeeze_excite_scales_in_place_only_when_asked(inplace: bool) -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(16, ratio=1 / 4, inplace=inplace).eval()
    x = torch.randn(2, 16, 6, 6)
    expected = se(x)  # autograd on: never in place
    with torch.no_grad():
        y = x.clone()
        out = se(y)
    assert torch.equal(out, expected)
    assert (out.data_ptr() == y.data_ptr()) is inplace
    assert torch.equal(y, expected if inplace else x)


@pytest.mark.parametrize("name", ["resnet18", "se_resnet50", "mobilenet_v2", "efficientnet_b0",
                                  "densenet121"])
def test_inference_logits_equal_the_autograd_path(name: str) -> None:
    """Whole models: inference (in-place BN and SE) gives the eval-mode logits bit for bit."""
    model = vz.create_model(name, num_classes=10).eval()
    vz.layers.randomize_weights_(model, seed=1)
    x = torch.randn(2, 3, 64, 64)
    for layout in (torch.contiguous_format, torch.channels_last):
        model, x = model.to(memory_format=layout), x.contiguous(memory_format=layout)
        expected = model(x)  # autograd on: the modules as written
        with torch.inference_mode():
            assert torch.equal(model(x), expected), layout
