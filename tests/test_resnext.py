"""ResNeXt: Table 1/2 structure (cardinality x bottleneck width), the stride layout, ports."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import visionzoo as vz
from visionzoo.models.resnet import Bottleneck

from conftest import max_logit_diff, randomize_


@pytest.mark.parametrize("source,name", [("torchvision", "resnext50_32x4d"),
                                         ("timm", "resnext50_32x4d"),
                                         ("timm", "resnext101_32x4d")])
def test_port_equal_logits(source, name, rng_input):
    ref = (torchvision.models.get_model(name) if source == "torchvision"
           else timm.create_model(name, pretrained=False))
    randomize_(ref, seed=3)
    ours = vz.port(source, name, ref.state_dict())
    assert ours.groups == 32 and ours.base_width == 4 and ours.stride_in_1x1 is False
    assert max_logit_diff(ours, ref, rng_input(64)) <= 1e-4


def test_table1_resnext50_template():
    """Table 1: conv2..conv5 are [1x1, 128; 3x3, 128, C=32; 1x1, 256] ... [.., 1024, .., 2048]."""
    m = vz.create_model("resnext50_32x4d")
    rows = []
    for stage in m.stages:
        blk = stage[0]
        rows.append((blk.conv1.conv.out_channels, blk.conv2.conv.out_channels,
                     blk.conv2.conv.groups, blk.conv3.conv.out_channels, len(stage)))
    assert rows == [(128, 128, 32, 256, 3), (256, 256, 32, 512, 4), (512, 512, 32, 1024, 6),
                    (1024, 1024, 32, 2048, 3)]
    prof = vz.profile("resnext50_32x4d")
    assert prof.stages[1].layers.startswith("3x3 max pool, stride 2; [1x1, 128; 3x3, 128, C=32")


@pytest.mark.parametrize("cardinality,d,group_width", [(1, 64, 64), (2, 40, 80), (4, 24, 96),
                                                       (8, 14, 112), (32, 4, 128)])
def test_table2_cardinality_width_preserve_complexity(cardinality, d, group_width):
    """ResNeXt Table 2: each (C, d) gives a conv2 template of ~70k parameters, ~0.22 G FLOPs
    (params x 56 x 56), with a grouped conv C*d wide."""
    blk = Bottleneck(256, 64, groups=cardinality, base_width=d)
    assert blk.conv2.conv.out_channels == group_width
    weights = sum(m.weight.numel() for m in blk.modules() if isinstance(m, torch.nn.Conv2d))
    assert abs(weights - 70e3) / 70e3 < 0.025, weights
    assert abs(weights * 56 * 56 / 1e9 - 0.22) < 0.005


def test_resnext50_costs_like_resnet50():
    """Table 1: ResNeXt-50 has ResNet-50's budget (25.0 M vs 25.5 M params, 4.2 vs 4.1 G)."""
    x, r = vz.profile("resnext50_32x4d"), vz.profile("resnet50", stride_in_1x1=False)
    assert x.params < r.params and (r.params - x.params) / r.params < 0.03
    assert 0 < (x.macs - r.macs) / r.macs < 0.05
    assert round(r.macs / 1e9, 1) == 4.1  # the ResNeXt paper's ResNet-50 is the 3x3-stride count


def test_stride_layout_flag():
    m = vz.create_model("resnext50_32x4d")
    assert m.stages[1][0].conv2.conv.stride == (2, 2) and m.stages[1][0].conv1.conv.stride == (1, 1)
    caffe = vz.create_model("resnext50_32x4d", stride_in_1x1=True)
    assert caffe.stages[1][0].conv1.conv.stride == (2, 2)
    assert round(vz.profile("resnext50_32x4d", stride_in_1x1=True).macs / 1e9, 2) == 3.77
    ref = randomize_(torchvision.models.resnext50_32x4d())
    with pytest.raises(vz.PortError, match="stride_in_1x1"):
        vz.port("torchvision", "resnext50_32x4d", ref.state_dict(), model=caffe)


def test_resnext_needs_bottlenecks():
    with pytest.raises(ValueError, match="bottleneck"):
        vz.create_model("resnet18", groups=32, base_width=4)
