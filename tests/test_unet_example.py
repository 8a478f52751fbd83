"""examples/unet_backbone.py: a U-Net decoder on features_only backbones trains end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "unet_backbone.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("unet_backbone", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_conv(encoder: nn.Module) -> nn.Conv2d:
    """The backbone's stem conv, by pretrained_cfg["first_conv"] (a path in the wrapped model)."""
    conv = encoder.model.get_submodule(encoder.pretrained_cfg["first_conv"])
    assert conv is next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    return conv


@pytest.mark.parametrize("backbone,size", [
    ("vgg16_bn", (64, 64)),
    ("vgg16_bn", (72, 88)),    # odd sizes: VGG's max-pools floor (pool5 of 4x5 is 2x2)
    ("resnet50", (72, 88)),    # ResNet's padded stride-2 convs ceil (5x6 -> 3x3)
    ("swin_t", (64, 64)),
])
def test_unet_trains_through_backbone(example, backbone, size):
    torch.manual_seed(0)
    num_classes = 3
    model = example.UNet(backbone, num_classes=num_classes).train()
    x = torch.randn(2, 3, *size)
    target = torch.randint(0, num_classes, (2, *size))

    logits = model(x)
    assert logits.shape == (2, num_classes, *size)

    conv = first_conv(model.encoder)
    before = conv.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(logits, target).backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(conv.weight.detach(), before)


def test_main_prints_mask_shape(example, capsys):
    example.main(["--backbone", "resnet50", "--size", "40", "56", "--num-classes", "5"])
    out = capsys.readouterr().out
    assert "mask logits (2, 5, 40, 56)" in out
    assert "params: encoder 23.51M" in out
