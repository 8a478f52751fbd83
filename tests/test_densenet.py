"""DenseNet-BC: Table 1 structure, the memory-efficient path, ports (old torchvision keys too)."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn as nn
import torchvision.models as tvm

import visionzoo as vz
from visionzoo.models.densenet import DenseLayer, DenseNet

from conftest import max_logit_diff, randomize_

REFERENCES = ["densenet121", "densenet161", "densenet169", "densenet201"]


def _reference(source: str, name: str) -> nn.Module:
    with torch.device("meta"):
        ref = tvm.get_model(name) if source == "torchvision" else timm.create_model(name)
    return randomize_(ref.to_empty(device="cpu"))


@pytest.mark.parametrize("source", ["torchvision", "timm"])
@pytest.mark.parametrize("name", REFERENCES)
def test_port_equal_logits(source, name, rng_input):
    ref = _reference(source, name)
    ours = vz.port(source, name, ref.state_dict())
    x = rng_input(32)
    assert max_logit_diff(ours, ref, x) <= 1e-4
    with torch.no_grad():
        assert ours(x).std() > 0


def test_port_torchvision_old_style_keys(rng_input):
    """torchvision's published DenseNet files use 'denselayerN.norm.1.weight' for norm1 (and
    '.conv.2.' for conv2): those files port as they are."""
    ref = _reference("torchvision", "densenet121")
    old = {re.sub(r"(denselayer\d+)\.(norm|conv)([12])\.", r"\1.\2.\3.", k): v
           for k, v in ref.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    ours = vz.port("torchvision", "densenet121", old)
    assert max_logit_diff(ours, ref, rng_input(32)) <= 1e-4


@pytest.mark.parametrize("name, depth, growth, blocks", [
    ("densenet121", 121, 32, (6, 12, 24, 16)),
    ("densenet169", 169, 32, (6, 12, 32, 32)),
    ("densenet201", 201, 32, (6, 12, 48, 32)),
    ("densenet264", 265, 32, (6, 12, 64, 48)),  # Table 1's "264" has 265 weight layers
    ("densenet161", 161, 48, (6, 12, 36, 24)),
])
def test_table1_structure(name, depth, growth, blocks):
    """Table 1: a 7x7/2 conv with 2k maps, four blocks of [1x1 conv (4k); 3x3 conv (k)], three
    transitions compressing to floor(0.5 m), the FC layer; the depth counts those layers."""
    with torch.device("meta"):
        model = vz.create_model(name)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth
    assert tuple(len(b) for b in model.blocks) == blocks
    assert model.stem.conv.out_channels == 2 * growth
    layer = model.blocks[0][0]
    assert (layer.conv1.out_channels, layer.conv2.out_channels) == (4 * growth, growth)
    chs = 2 * growth
    for i, n in enumerate(blocks):
        chs += n * growth  # each layer adds k maps (eq. 2)
        assert model.feature_info[i + 1]["channels"] == chs
        if i < 3:
            assert model.transitions[i].conv.out_channels == chs // 2
            chs //= 2


def test_table1_output_sizes():
    """Table 1's output-size column at 224: 112, 56, 56, 28, 28, 14, 14, 7, 7, 1."""
    prof = vz.profile("densenet121")
    sizes = [s.output[1] if len(s.output) == 3 else 1 for s in prof.stages]
    assert sizes == [112, 56, 56, 28, 28, 14, 14, 7, 7, 1]


def _train_step(model: DenseNet, x: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), grads, x.grad


def test_memory_efficient_equals_plain_path(monkeypatch):
    """Outputs, parameter and input gradients, and BN running statistics are the same; the
    bottleneck really is recomputed in the backward pass."""
    torch.manual_seed(0)
    plain = DenseNet(growth_rate=8, block_config=(3, 3, 3, 3), num_classes=5).train()
    efficient = DenseNet(growth_rate=8, block_config=(3, 3, 3, 3), num_classes=5,
                         memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 64, 64)
    out_a, grads_a, xg_a = _train_step(plain, x)
    calls: list[bool] = []
    bottleneck = DenseLayer.bottleneck

    def counted(self, features, update_stats=True):
        calls.append(update_stats)
        return bottleneck(self, features, update_stats)

    monkeypatch.setattr(DenseLayer, "bottleneck", counted)
    out_b, grads_b, xg_b = _train_step(efficient, x)
    # every bottleneck ran twice: in the forward pass, and recomputed (stats untouched) in backward
    assert calls == [True] * 12 + [False] * 12
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(xg_a, xg_b)
    for name, g in grads_a.items():
        torch.testing.assert_close(g, grads_b[name], msg=name)
    sa, sb = plain.state_dict(), efficient.state_dict()
    for name in sa:  # running statistics updated once, not twice
        torch.testing.assert_close(sa[name], sb[name], msg=name)


def test_memory_efficient_switched_on_a_full_network():
    torch.manual_seed(0)
    plain = vz.create_model("densenet121", num_classes=3).train()
    efficient = vz.create_model("densenet121", num_classes=3).train()
    efficient.load_state_dict(plain.state_dict())
    efficient.set_memory_efficient(True)  # e.g. on a ported model
    assert all(m.memory_efficient for m in efficient.modules() if isinstance(m, DenseLayer))
    x = torch.randn(2, 3, 32, 32)
    out_a, grads_a, _ = _train_step(plain, x)
    out_b, grads_b, _ = _train_step(efficient, x)
    torch.testing.assert_close(out_a, out_b)
    for name, g in grads_a.items():
        torch.testing.assert_close(g, grads_b[name], msg=name)


def test_features_only_maps():
    backbone = vz.create_model("densenet121", features_only=True)
    assert backbone.channels == [64, 256, 512, 1024, 1024]
    assert backbone.reductions == [2, 4, 8, 16, 32]
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 32, 32), (256, 16, 16), (512, 8, 8),
                                                  (1024, 4, 4), (1024, 2, 2)]
    assert (maps[-1] >= 0).all()  # the last map is the final BN-ReLU output (forward_features)


def test_bad_arguments():
    with pytest.raises(ValueError, match="compression theta"):
        vz.create_model("densenet121", compression=0.0)
    model = vz.create_model("densenet121").eval()
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
