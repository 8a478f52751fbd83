"""ShuffleNet V1 (arXiv 1707.01083). No reference library ships it, so the proof is the paper:
channel shuffle, the unit of Fig. 2, Table 1's channels and the complexities of Tables 1, 2, 5
(``verify``, run for every row by test_sweep)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionzoo as vz
from visionzoo.models.shufflenet_v1 import (
    TABLE1,
    ShuffleUnit,
    channel_shuffle,
    shufflenet_plan,
)
from visionzoo.profile import format_info

from conftest import randomize_

GROUPS = (1, 2, 3, 4, 8)
SCALES = (0.25, 0.5, 1.0, 1.5, 2.0)


@pytest.mark.parametrize(("g", "n"), [(3, 4), (8, 2), (2, 5)])
def test_channel_shuffle_is_the_papers_transpose(g, n):
    """§3.1: reshape the g*n channels to (g, n), transpose, flatten: output channel i*g + j is
    input channel j*n + i (channel i of group j)."""
    x = torch.arange(g * n, dtype=torch.float32).view(1, g * n, 1, 1).expand(2, -1, 3, 3)
    out = channel_shuffle(x, g)[0, :, 0, 0]
    for i in range(n):
        for j in range(g):
            assert out[i * g + j] == j * n + i


@pytest.mark.parametrize(("g", "n"), [(3, 6), (4, 4), (8, 8), (2, 5)])
def test_channel_shuffle_feeds_every_group_from_every_group(g, n):
    """Fig. 1(c): after the shuffle each of the next layer's g groups (n consecutive channels)
    holds channels of every input group, n / g of each when g divides n; shuffling with n groups
    undoes it."""
    origin = (torch.arange(g * n) // n).float().view(1, -1, 1, 1)  # input group of each channel
    shuffled = channel_shuffle(origin, g).view(g, n).long()
    for group in shuffled:
        counts = torch.bincount(group, minlength=g)
        assert (counts > 0).all()
        if n % g == 0:
            assert (counts == n // g).all()
    x = torch.randn(1, g * n, 2, 2)
    assert torch.equal(channel_shuffle(channel_shuffle(x, g), n), x)


def test_channel_shuffle_makes_stacked_group_convs_mix():
    """Without the shuffle, stacked group convs keep each output group a function of one input
    group only (Fig. 1(a)); with it, of all of them (Fig. 1(b))."""
    g, chs = 3, 12
    conv1 = torch.nn.Conv2d(chs, chs, 1, groups=g, bias=False)
    conv2 = torch.nn.Conv2d(chs, chs, 1, groups=g, bias=False)
    torch.nn.init.normal_(conv1.weight)
    torch.nn.init.normal_(conv2.weight)
    x = torch.zeros(1, chs, 1, 1, requires_grad=True)
    for shuffle, mixed in ((False, False), (True, True)):
        h = conv1(x)
        y = conv2(channel_shuffle(h, g) if shuffle else h)
        (grad,) = torch.autograd.grad(y[0, 0].sum(), x)  # what output channel 0 depends on
        depends = {c // (chs // g) for c in grad.view(-1).nonzero().view(-1).tolist()}
        assert (depends == set(range(g))) is mixed


def test_unit_stride1_adds_and_stride2_concatenates(rng_input):
    """Fig. 2(b): ReLU(x + branch). Fig. 2(c): ReLU(concat(avgpool3x3/2(x), branch)), the branch
    making out - in channels and the bottleneck a quarter of the output."""
    x = F.relu(rng_input(8, chans=24))  # unit inputs follow a ReLU
    unit = randomize_(ShuffleUnit(24, 240, 60, stride=2, groups=3)).eval()
    with torch.no_grad():
        branch = unit.gconv2(unit.dwconv(channel_shuffle(unit.gconv1(x), 3)))
        expected = F.relu(torch.cat((F.avg_pool2d(x, 3, 2, 1), branch), 1))
        torch.testing.assert_close(unit(x), expected)
    assert branch.shape[1] == 240 - 24 and unit.mid_chs == 240 // 4

    y = F.relu(rng_input(4, chans=240))
    unit = randomize_(ShuffleUnit(240, 240, 60, stride=1, groups=3)).eval()
    with torch.no_grad():
        branch = unit.gconv2(unit.dwconv(channel_shuffle(unit.gconv1(y), 3)))
        torch.testing.assert_close(unit(y), F.relu(y + branch))
    assert not hasattr(unit.dwconv, "act")  # no ReLU after the depthwise conv (§3.2)


@pytest.mark.parametrize("g", GROUPS)
def test_table1_channels_and_groups(g):
    """Table 1: Conv1 24, stage outputs per g, repeats 1+3 / 1+7 / 1+3, bottleneck = output / 4;
    every pointwise conv grouped except the first one of Stage 2 (§3.3)."""
    model = vz.create_model(f"shufflenet_v1_g{g}")
    assert model.stem.conv.out_channels == 24
    assert [f["channels"] for f in model.feature_info[1:]] == [r.out[g] for r in TABLE1]
    assert [len(s) for s in model.stages] == [1 + r.repeat for r in TABLE1]
    units = [u for s in model.stages for u in s]
    assert all(u.mid_chs == u.out_chs // 4 for u in units)
    assert units[0].gconv1.conv.groups == 1
    assert all(u.gconv1.conv.groups == g for u in units[1:])
    assert all(u.gconv2.conv.groups == g for u in units)
    assert [u.stride for u in units] == [2, 1, 1, 1, 2] + [1] * 7 + [2, 1, 1, 1]


def test_wider_channels_for_the_same_complexity():
    """Table 1's point: more groups allow wider feature maps at about the same cost."""
    channels = [vz.create_model(f"shufflenet_v1_g{g}").num_features for g in GROUPS]
    macs = [vz.profile(f"shufflenet_v1_g{g}").macs for g in GROUPS]
    assert channels == sorted(channels) and len(set(channels)) == len(GROUPS)
    assert max(macs) / min(macs) < 1.07


def test_scale_factor_gives_about_s_squared_complexity():
    """§3.3: "ShuffleNet s x" scales the filters by s; complexity is roughly s^2 of 1x."""
    base = vz.profile("shufflenet_v1_g3").macs
    for name, s in (("shufflenet_v1_g3_x0_5", 0.5), ("shufflenet_v1_g3_x1_5", 1.5),
                    ("shufflenet_v1_g3_x2", 2.0)):
        assert vz.profile(name).macs / base == pytest.approx(s * s, rel=0.1)


@pytest.mark.parametrize("g", GROUPS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_table2_network_builds(g, scale):
    """Every g at every scale of Tables 2 and 5 builds: channels rounded so every grouped conv
    divides (the module docstring's rules)."""
    plan = shufflenet_plan(g, scale)
    assert plan.conv1 % g == 0
    for out, mid in plan.stages:
        assert out % g == 0 and mid % g == 0 and 0 < mid <= out // 4
    with torch.device("meta"):
        vz.create_model("shufflenet_v1_g3", groups=g, scale=scale)


def test_authors_code_channels():
    """The released code's configurations (megvii ShuffleNet-Series): g = 3 and 8 at 0.5x-2x."""
    authors = {  # (g, scale): (Conv1, Stage2, Stage3, Stage4) from their network.py
        (3, 0.5): (12, 120, 240, 480), (3, 1.0): (24, 240, 480, 960),
        (3, 1.5): (24, 360, 720, 1440), (3, 2.0): (48, 480, 960, 1920),
        (8, 0.5): (16, 192, 384, 768), (8, 1.0): (24, 384, 768, 1536),
        (8, 1.5): (24, 576, 1152, 2304), (8, 2.0): (48, 768, 1536, 3072),
    }
    for (g, scale), channels in authors.items():
        plan = shufflenet_plan(g, scale)
        assert (plan.conv1, *(out for out, _ in plan.stages)) == channels
        assert all(mid == out // 4 for out, mid in plan.stages)
    assert shufflenet_plan(8, 0.5, conv1_round="down").conv1 == 8


def test_info_prints_table1_for_the_chosen_g():
    text = format_info("shufflenet_v1_g8")
    for stage, chans in zip(("Stage2", "Stage3", "Stage4"), (384, 768, 1536), strict=True):
        rows = [line for line in text.splitlines() if line.startswith(stage)]
        assert len(rows) == 2 and all(f" {chans} " in r for r in rows)
    assert "GConv g=8" in text and "1x1 Conv, bottleneck 96" in text


@pytest.mark.parametrize("kwargs", [{"groups": 5}, {"scale": 0.75}, {"conv1_round": "nearest"}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        vz.create_model("shufflenet_v1_g3", **kwargs)
