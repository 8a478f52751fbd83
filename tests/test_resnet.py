"""ResNet: Table 1 / §4.2 structure, the stride layouts, shortcut options, ports."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import visionzoo as vz
from visionzoo.models.resnet import BasicBlock, Bottleneck, ShortcutA

from conftest import max_logit_diff, randomize_

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", IMAGENET)
@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_port_equal_logits(name, source, rng_input):
    ref = torchvision.models.get_model(name) if source == "torchvision" else timm.create_model(
        name, pretrained=False)
    randomize_(ref, seed=hash(name) % 1000)
    ours = vz.port(source, name, ref.state_dict())
    assert max_logit_diff(ours, ref, rng_input(64)) <= 1e-4


def test_port_sets_v15_layout_and_refuses_the_other():
    ref = randomize_(torchvision.models.resnet50())
    ours = vz.port("torchvision", "resnet50", ref.state_dict())
    assert ours.stride_in_1x1 is False
    # the paper's layout (stride in the 1x1) has identical tensor shapes: only the flag tells
    paper_layout = vz.create_model("resnet50")
    with pytest.raises(vz.PortError, match="stride_in_1x1"):
        vz.port("torchvision", "resnet50", ref.state_dict(), model=paper_layout)
    v15 = vz.create_model("resnet50", stride_in_1x1=False)
    vz.port("torchvision", "resnet50", ref.state_dict(), model=v15)
    assert max_logit_diff(v15, ref, torch.randn(1, 3, 64, 64)) <= 1e-4


def test_port_wrong_architecture_names_the_keys():
    sd = torchvision.models.resnet18().state_dict()
    with pytest.raises(vz.PortError, match="do not fit resnet34.*missing"):
        vz.port("torchvision", "resnet34", sd)
    with pytest.raises(vz.PortError, match="no port for torchvision model 'resnet5'"):
        vz.port("torchvision", "resnet5", sd)


def test_table1_stage_shapes_resnet50():
    prof = vz.profile("resnet50")
    shapes = {s.name: s.output for s in prof.stages}
    assert shapes["conv1"] == (64, 112, 112)
    assert shapes["conv2_x"] == (256, 56, 56)
    assert shapes["conv3_x"] == (512, 28, 28)
    assert shapes["conv4_x"] == (1024, 14, 14)
    assert shapes["conv5_x"] == (2048, 7, 7)
    assert [s.blocks for s in prof.stages[1:5]] == [3, 4, 6, 3]
    # stage MACs add up to the total (nothing is counted outside the rows)
    assert sum(s.macs for s in prof.stages) == prof.macs


def test_stride_layouts_macs():
    """The paper's layout is 3.86 G MACs, torchvision's v1.5 4.09 G; parameters identical."""
    paper = vz.profile("resnet50")
    v15 = vz.profile("resnet50", stride_in_1x1=False)
    assert round(paper.macs / 1e9, 2) == 3.86
    assert round(v15.macs / 1e9, 2) == 4.09
    assert paper.params == v15.params
    m = vz.create_model("resnet50")
    first = m.stages[1][0]
    assert first.conv1.conv.stride == (2, 2) and first.conv2.conv.stride == (1, 1)
    m = vz.create_model("resnet50", stride_in_1x1=False)
    first = m.stages[1][0]
    assert first.conv1.conv.stride == (1, 1) and first.conv2.conv.stride == (2, 2)


def test_macs_match_torchvision_metadata():
    """torchvision publishes GFLOPS (MACs) and num_params per weight: our v1.5 layout agrees."""
    for name in IMAGENET:
        meta = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta
        flags = {"stride_in_1x1": False} if name in ("resnet50", "resnet101", "resnet152") else {}
        prof = vz.profile(name, **flags)
        assert prof.params == meta["num_params"]
        assert abs(prof.macs / 1e9 - meta["_ops"]) < 0.005, (name, prof.macs, meta["_ops"])


def test_shortcut_options():
    b = vz.create_model("resnet34")
    a = vz.create_model("resnet34", shortcut="A")
    assert isinstance(a.stages[1][0].shortcut, ShortcutA)
    n_proj = sum(p.numel() for s in b.stages for blk in s
                 for p in blk.shortcut.parameters())
    assert n_proj > 0
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters()) - n_proj
    with pytest.raises(ValueError, match="option|'A' or 'B'"):
        vz.create_model("resnet18", shortcut="C")
    # option A: identity on the first channels, zeros on the new ones, subsampled by 2
    x = torch.randn(1, 16, 8, 8)
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


@pytest.mark.parametrize("depth,n", [(20, 3), (32, 5), (44, 7), (56, 9), (110, 18)])
def test_cifar_nets_follow_section_4_2(depth, n):
    m = vz.create_model(f"resnet{depth}")
    assert m.num_classes == 10
    assert [len(s) for s in m.stages] == [n, n, n]
    assert all(isinstance(b, BasicBlock) for s in m.stages for b in s)
    assert [f["channels"] for f in m.feature_info] == [16, 16, 32, 64]
    # 6n + 2 weighted layers: stem conv + 2 per block + fc
    convs = sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())
    assert convs + 1 == 6 * n + 2
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # option A shortcuts have no parameters
    assert not any("shortcut" in k for k, _ in m.named_parameters())


def test_bottleneck_widths():
    m = vz.create_model("resnet50")
    blk = m.stages[0][0]
    assert isinstance(blk, Bottleneck)
    assert [blk.conv1.conv.out_channels, blk.conv2.conv.out_channels,
            blk.conv3.conv.out_channels] == [64, 64, 256]


def test_features_only_out_indices():
    bb = vz.create_model("resnet18", features_only=True, out_indices=(2, 4))
    assert [f["reduction"] for f in bb.feature_info] == [8, 32]
    maps = bb(torch.randn(1, 3, 64, 64))
    assert [tuple(t.shape[1:]) for t in maps] == [(128, 8, 8), (512, 2, 2)]
    with pytest.raises(ValueError, match="out_indices"):
        vz.create_model("resnet18", features_only=True, out_indices=(7,))


def test_drop_path_and_zero_init():
    m = vz.create_model("resnet50", drop_path_rate=0.1, zero_init_residual=True)
    assert m.stages[-1][-1].drop_path.drop_prob == pytest.approx(0.1)
    assert not m.stages[0][0].conv3.norm.weight.any()
