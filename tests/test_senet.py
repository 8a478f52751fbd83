"""SENet: the SE block on ResNet/ResNeXt, the authors' layouts, Table 2/10 and §4 claims, ports."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import visionzoo as vz
from visionzoo.layers import SqueezeExcite
from visionzoo.profile import format_info
from visionzoo.registry import builder

from conftest import max_logit_diff, randomize_

LEGACY = [("legacy_seresnet50", "se_resnet50"), ("legacy_seresnet101", "se_resnet101"),
          ("legacy_seresnet152", "se_resnet152"),
          ("legacy_seresnext50_32x4d", "se_resnext50_32x4d"),
          ("legacy_seresnext101_32x4d", "se_resnext101_32x4d"), ("legacy_senet154", "senet154")]
TORCH_LAYOUT = [("seresnet50", "se_resnet50"), ("seresnet101", "se_resnet101"),
                ("seresnet152", "se_resnet152"), ("seresnext50_32x4d", "se_resnext50_32x4d"),
                ("seresnext101_32x4d", "se_resnext101_32x4d"), ("senet154", "senet154")]


@pytest.mark.parametrize("name,ours", LEGACY + TORCH_LAYOUT)
def test_port_equal_logits(name, ours, rng_input):
    ref = randomize_(timm.create_model(name, pretrained=False), seed=len(name))
    model = vz.port("timm", name, ref.state_dict())
    assert model.model_name == ours
    assert model.ceil_pool is name.startswith("legacy")
    assert max_logit_diff(model, ref, rng_input(64)) <= 1e-4


def test_layouts_are_checked_and_both_flags_matter(rng_input):
    """Legacy (Caffe) weights need stride-in-1x1 and Caffe pooling; timm's ResNet-based weights
    the torchvision layout. Tensor shapes agree, so only the flags tell; each flag changes the
    function, and a model of the other layout is refused."""
    legacy = randomize_(timm.create_model("legacy_seresnet50"), seed=1)
    modern = randomize_(timm.create_model("seresnet50"), seed=2)
    with pytest.raises(vz.PortError, match="ceil_pool"):
        vz.port("timm", "legacy_seresnet50", legacy.state_dict(),
                model=vz.create_model("se_resnet50", ceil_pool=False))
    with pytest.raises(vz.PortError, match="stride_in_1x1"):
        vz.port("timm", "seresnet50", modern.state_dict(), model=vz.create_model("se_resnet50"))
    ported = vz.port("timm", "legacy_seresnet50", legacy.state_dict())
    x = rng_input(64)
    for flag in ({"ceil_pool": False}, {"stride_in_1x1": False}):
        other = vz.create_model("se_resnet50", **flag)
        other.load_state_dict(ported.state_dict())
        assert max_logit_diff(other, legacy, x) > 1e-2, flag


@pytest.mark.parametrize("base,se_name", [("resnet101", "se_resnet101"),
                                          ("resnext50_32x4d", "se_resnext50_32x4d")])
def test_se_ratio_attaches_to_any_resnet(base, se_name):
    """create_model(base, se_ratio=1/16) is the SE network: same keys, shapes, params, MACs, and
    (with the authors' Caffe pooling) the same function."""
    torch.manual_seed(0)
    composed = vz.create_model(base, se_ratio=1 / 16)
    named = vz.create_model(se_name)
    assert {k: v.shape for k, v in composed.state_dict().items()} == {
        k: v.shape for k, v in named.state_dict().items()}
    a, b = vz.profile(base, se_ratio=1 / 16), vz.profile(se_name)
    assert (a.params, a.macs) == (b.params, b.macs) == (vz.model_info(se_name).num_params, b.macs)
    same = vz.create_model(base, se_ratio=1 / 16, ceil_pool=True)
    same.load_state_dict(randomize_(named).state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert max_logit_diff(same, named, x) == 0.0


def test_se_block_equations():
    """eq. (2)-(4): z = mean over HxW; s = sigmoid(W2 relu(W1 z)); out = s_c * u_c."""
    se = randomize_(SqueezeExcite(64, ratio=1 / 16))
    assert se.reduced == 4 and se.fc1.weight.shape == (4, 64, 1, 1)
    u = torch.randn(2, 64, 5, 7)
    z = u.mean((2, 3))
    s = torch.sigmoid(torch.relu(z @ se.fc1.weight[:, :, 0, 0].T + se.fc1.bias)
                      @ se.fc2.weight[:, :, 0, 0].T + se.fc2.bias)
    torch.testing.assert_close(se(u), u * s[:, :, None, None])


def test_se_sits_on_the_residual_before_the_addition():
    """Fig. 3 right: closing the SE gate (sigmoid -> 0) removes the residual, leaving
    relu(shortcut(x)); every block of every stage has one, with C/r = C/16."""
    m = vz.create_model("se_resnet50").eval()
    for stage in m.stages:
        for blk in stage:
            assert isinstance(blk.se, SqueezeExcite)
            assert blk.se.channels == blk.conv3.conv.out_channels == 16 * blk.se.reduced
    blk = m.stages[1][0]
    x = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        blk.se.fc2.bias.fill_(-1e4)
        torch.testing.assert_close(blk(x), torch.relu(blk.shortcut(x)))


def _elementwise_se_work(name: str) -> int:
    """H*W*C of every SE input: one addition each for the squeeze, one product for the scale."""
    seen = []
    with torch.device("meta"):
        model = builder(name)()
        for mod in model.modules():
            if isinstance(mod, SqueezeExcite):
                mod.register_forward_hook(lambda _m, _i, out: seen.append(out[0].numel()))
        with FlopCounterMode(display=False), torch.no_grad():
            model.eval()(torch.zeros(1, 3, 224, 224))
    return 2 * sum(seen)


@pytest.mark.parametrize("name,gflops", [("se_resnet50", 3.87), ("se_resnet101", 7.60),
                                         ("se_resnet152", 11.32), ("se_resnext50_32x4d", 4.25),
                                         ("se_resnext101_32x4d", 8.00)])
def test_table2_macs_with_the_se_elementwise_work(name, gflops):
    """Table 2 prints 0.01-0.03 G more than conv/linear MACs; adding the SE's squeeze and scale
    brings each row within 0.01 G (the paper's convention, documented in ModelInfo's note)."""
    macs = vz.profile(name).macs
    assert 0 < gflops - macs / 1e9 < 0.035
    assert abs((macs + _elementwise_se_work(name)) / 1e9 - gflops) < 0.01


def test_table10_closed_form_and_section4_claims():
    """Table 10: params = ResNet-50 + sum over blocks of (2 C^2/r + C/r + C); §4: r = 16 adds
    ~2.5 M (~10 %) for a fraction of a percent of MACs, most of it in the last stage (without
    the conv5_x SE blocks the increase is ~4 %)."""
    base = vz.profile("resnet50")
    chans = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    for r in (2, 4, 8, 16, 32):
        extra = sum(2 * c * c // r + c // r + c for c in chans)
        assert vz.profile("se_resnet50", se_ratio=1 / r).params == base.params + extra
    prof = vz.profile("se_resnet50")
    se_rows = {s.part_of: s for s in prof.stages if s.part_of}
    added = prof.params - base.params
    assert sum(s.params for s in se_rows.values()) == added
    assert round(added / 1e6, 1) == 2.5 and round(100 * added / base.params) == 10
    assert (prof.macs - base.macs) / base.macs < 0.001
    assert round(100 * (added - se_rows["conv5_x"].params) / base.params) == 4


def test_info_shows_each_se_block_and_its_cost():
    prof = vz.profile("se_resnet101")
    parts = [s for s in prof.stages if s.part_of]
    assert [s.part_of for s in parts] == ["conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert [s.blocks for s in parts] == [3, 4, 23, 3]
    assert sum(s.macs for s in prof.stages if not s.part_of) == prof.macs  # parts not re-added
    plain = vz.profile("resnet101")
    assert sum(s.macs for s in parts) == prof.macs - plain.macs
    text = format_info("se_resnet101")
    assert "  conv4_x SE" in text and "fc, [64, 1024]" in text
    assert "network, all SE" in text and "+10.72%" in text and "+0.063%" in text


def test_senet154_appendix_modifications():
    m = vz.create_model("senet154")
    assert [s.conv.out_channels for s in m.stem] == [64, 64, 128]  # (2) three 3x3 convs
    assert [s.conv.kernel_size for s in m.stem] == [(3, 3)] * 3 and m.stem[0].conv.stride == (2, 2)
    blk = m.stages[0][0]
    assert blk.conv1.conv.out_channels * 2 == blk.conv2.conv.out_channels == 256  # (1) halved
    assert blk.conv2.conv.groups == 64 and blk.shortcut.conv.kernel_size == (1, 1)
    for stage in m.stages[1:]:  # (3) 3x3 stride-2 projections where a stage downsamples
        proj = stage[0].shortcut.conv
        assert proj.kernel_size == (3, 3) and proj.stride == (2, 2)
    assert m.head.drop.p == 0.2  # (4)
    assert [len(s) for s in m.stages] == [3, 8, 36, 3]


def test_ceil_pool_is_caffe_arithmetic():
    """Caffe pools unpadded and rounds the size up: equal sizes at even inputs, not at odd."""
    caffe = vz.create_model("se_resnet50", features_only=True, out_indices=(1,)).eval()
    torch_ = vz.create_model("se_resnet50", ceil_pool=False, features_only=True,
                             out_indices=(1,)).eval()
    even, odd = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 66, 66)
    with torch.no_grad():
        assert caffe(even)[0].shape == torch_(even)[0].shape == (1, 256, 16, 16)
        assert caffe(odd)[0].shape[-1] == 16 and torch_(odd)[0].shape[-1] == 17


@pytest.mark.parametrize("kwargs,match", [({"se_ratio": 0}, "se_ratio"),
                                          ({"se_ratio": 2}, "se_ratio"),
                                          ({"shortcut_kernel": 2}, "shortcut_kernel"),
                                          ({"halve_first_1x1": True}, "bottleneck")])
def test_bad_flags_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vz.create_model("resnet18", **kwargs)
    with pytest.raises(ValueError, match="CIFAR"):
        vz.create_model("resnet20", deep_stem=True)
