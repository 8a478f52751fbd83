"""Shared layers are plain PyTorch: ConvNormAct is an nn.Sequential, SE multiplies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import visionzoo as vz
from visionzoo.layers import ConvNormAct, SqueezeExcite

from conftest import randomize_


def test_conv_norm_act_is_a_plain_sequential() -> None:
    assert ConvNormAct.forward is nn.Sequential.forward  # no forward of its own
    block = randomize_(ConvNormAct(3, 8, 3, act=nn.ReLU6)).eval()
    assert [n for n, _ in block.named_children()] == ["conv", "norm", "act"]
    assert list(block.state_dict()) == [
        "conv.weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
        "norm.num_batches_tracked"]
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        expected = block.act(block.norm(block.conv(x)))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    gm = torch.fx.symbolic_trace(block)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["conv", "norm", "act"]
    assert [n for n, _ in ConvNormAct(3, 8, 1, act=None, norm=False).named_children()] == ["conv"]


def test_squeeze_excite_is_x_times_s() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(16, ratio=1 / 4).eval()
    x = torch.randn(2, 16, 6, 6)
    kept = x.clone()
    with torch.no_grad():
        z = x.mean((2, 3), keepdim=True)  # squeeze, eq. (2)
        s = torch.sigmoid(se.fc2(torch.relu(se.fc1(z))))  # excitation, eq. (3)
        out = se(x)
    assert se.reduced == 4 and s.shape == (2, 16, 1, 1)
    torch.testing.assert_close(out, x * s, rtol=0, atol=0)  # scale, eq. (4)
    assert torch.equal(x, kept) and out.data_ptr() != x.data_ptr()  # the input is left alone


@pytest.mark.parametrize("name", ["resnet18", "se_resnet50", "mobilenet_v2", "efficientnet_b0",
                                  "densenet121"])
def test_inference_logits_equal_the_autograd_path(name: str) -> None:
    """Whole models: inference mode gives the eval-mode logits bit for bit and leaves the input
    alone, in both memory layouts."""
    model = vz.create_model(name, num_classes=10).eval()
    vz.layers.randomize_weights_(model, seed=1)
    x = torch.randn(2, 3, 64, 64)
    for layout in (torch.contiguous_format, torch.channels_last):
        model, x = model.to(memory_format=layout), x.contiguous(memory_format=layout)
        kept = x.clone()
        expected = model(x)  # autograd on
        with torch.inference_mode():
            assert torch.equal(model(x), expected), layout
        assert torch.equal(x, kept)
