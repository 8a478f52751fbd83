"""MobileNet V1 (arXiv 1704.04861) and V2 (arXiv 1801.04381): ports and the papers' claims."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import visionzoo as vz
from visionzoo.models.mobilenet_v1 import TABLE1_BODY, DepthwiseSeparable
from visionzoo.models.mobilenet_v2 import TABLE2, InvertedResidual, channel_plan
from visionzoo.ports import PortError

from conftest import max_logit_diff, randomize_

SIZE = 64  # small input: 2x2 at the last stage, every layer still exercised
MOBILE = vz.list_models(["mobilenet_v1*", "mobilenet_v2*"])
REFERENCES = [(name, src, ref) for name in MOBILE
              for src, ref in vz.model_info(name).references.items()]


def _reference(src: str, ref: str, **kwargs) -> torch.nn.Module:
    if src == "torchvision":
        return torchvision.models.get_model(ref, weights=None, **kwargs)
    return timm.create_model(ref, pretrained=False, **kwargs)


def _macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(x)
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------------------------------------
# ports: same weights in, same logits out
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "src", "ref"), REFERENCES)
def test_port_every_reference(name, src, ref, rng_input):
    reference = randomize_(_reference(src, ref))
    ours = vz.port(src, ref, reference.state_dict())
    assert ours.model_name == name
    assert max_logit_diff(ours, reference, rng_input(SIZE)) <= 1e-4


@pytest.mark.parametrize(("width", "name"), [
    (1.0, "mobilenet_v2"), (1.4, "mobilenet_v2_x1_4"), (0.75, "mobilenet_v2_x0_75"),
    (0.5, "mobilenet_v2_x0_5"), (0.35, "mobilenet_v2_x0_35"),
    (1.3, "mobilenet_v2"), (0.6, "mobilenet_v2"), (0.1, "mobilenet_v2"),
])
def test_torchvision_mobilenet_v2_at_every_width(width, name, rng_input):
    """torchvision has one builder for all widths: the port reads the width from the shapes."""
    reference = randomize_(torchvision.models.mobilenet_v2(width_mult=width))
    ours = vz.port("torchvision", "mobilenet_v2", reference.state_dict())
    assert ours.model_name == name
    assert channel_plan(ours.width_mult) == channel_plan(width)
    assert max_logit_diff(ours, reference, rng_input(SIZE)) <= 1e-4


def test_timm_mobilenetv1_125_is_our_width_1_25(rng_input):
    reference = randomize_(timm.create_model("mobilenetv1_125"))
    ours = vz.port("timm", "mobilenetv1_125", reference.state_dict())
    assert ours.width_mult == 1.25 and ours.act == "relu6"
    assert max_logit_diff(ours, reference, rng_input(SIZE)) <= 1e-4


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_timm_torchvision_and_ours_round_alike(width):
    """§4's thinned widths rounded to multiples of 8 as the authors' code: the two libraries and
    ours agree on every conv's shape at every paper width."""
    timm_name = f"mobilenetv2_{round(width * 100):03d}"
    with torch.device("meta"):
        shapes = [[tuple(p.shape) for p in m.parameters() if p.ndim == 4] for m in (
            timm.create_model(timm_name), torchvision.models.mobilenet_v2(width_mult=width),
            vz.create_model("mobilenet_v2", width_mult=width))]
    assert shapes[0] == shapes[1] == shapes[2]
    assert all(s[0] % 8 == 0 for s in shapes[2])


def test_timm_v1_weights_refused_by_a_relu_model():
    """timm's MobileNet V1 uses ReLU6; loading it into the paper's ReLU network is refused."""
    sd = timm.create_model("mobilenetv1_100").state_dict()
    with pytest.raises(PortError, match="act='relu6'"):
        vz.port("timm", "mobilenetv1_100", sd, model=vz.create_model("mobilenet_v1"))


def test_torchvision_width_refused_by_a_model_of_another_width():
    sd = torchvision.models.mobilenet_v2(width_mult=0.5).state_dict()
    ours = vz.port("torchvision", "mobilenet_v2", sd, model=vz.create_model("mobilenet_v2_x0_5"))
    assert ours.width_mult == 0.5
    with pytest.raises(PortError, match="width_mult=0.5"):
        vz.port("torchvision", "mobilenet_v2", sd, model=vz.create_model("mobilenet_v2"))


def test_relu6_flag_matters(rng_input):
    """The act flag is not cosmetic: with ReLU (the paper's) timm's weights give other logits."""
    reference = randomize_(timm.create_model("mobilenetv1_100"))
    ported = vz.port("timm", "mobilenetv1_100", reference.state_dict())
    paper = vz.create_model("mobilenet_v1")  # act="relu"
    paper.load_state_dict(ported.state_dict())
    x = rng_input(SIZE) * 20  # large activations, so that ReLU6 clips
    assert max_logit_diff(ported, reference, x) <= 1e-4
    assert max_logit_diff(paper, reference, x) > 1e-3


def test_torchvision_port_refuses_an_unknown_width():
    """round_nearest=3 gives channel counts no width of ours (multiples of 8) reproduces."""
    sd = torchvision.models.mobilenet_v2(width_mult=0.5, round_nearest=3).state_dict()
    with pytest.raises(PortError, match="no width multiplier"):
        vz.port("torchvision", "mobilenet_v2", sd)


# ---------------------------------------------------------------------------------------------
# MobileNet V1
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_chs", "out_chs", "size"), [(32, 64, 28), (512, 512, 14),
                                                          (1024, 1024, 7)])
def test_v1_separable_cost_reduction_eq5(in_chs, out_chs, size):
    """§3.1, eq. (5): a depthwise separable conv costs 1/N + 1/D_K^2 of the standard conv."""
    x = torch.zeros(1, in_chs, size, size)
    sep = _macs(DepthwiseSeparable(in_chs, out_chs, 1), x)
    full = _macs(DepthwiseSeparable(in_chs, out_chs, 1, depthwise=False), x)
    assert sep / full == pytest.approx(1 / out_chs + 1 / 9, rel=1e-12)


def test_v1_resolution_multiplier_scales_cost_by_rho_squared():
    """§3.4: the resolution multiplier rho reduces every conv's cost by rho^2 (FC unchanged)."""
    fc = 1024 * 1000
    base = vz.profile("mobilenet_v1", (3, 224, 224)).macs - fc
    for size in (192, 160, 128):
        assert vz.profile("mobilenet_v1", (3, size, size)).macs - fc == pytest.approx(
            base * (size / 224) ** 2, rel=1e-9)


def test_v1_width_multiplier_thins_every_layer():
    """§3.3: alpha scales the channels of every layer (stem included); cost ~ alpha^2."""
    full = vz.create_model("mobilenet_v1")
    for alpha, name in ((0.75, "mobilenet_v1_x0_75"), (0.5, "mobilenet_v1_x0_5"),
                        (0.25, "mobilenet_v1_x0_25")):
        thin = vz.create_model(name)
        wide = [m.out_channels for m in full.modules() if isinstance(m, torch.nn.Conv2d)]
        narrow = [m.out_channels for m in thin.modules() if isinstance(m, torch.nn.Conv2d)]
        assert narrow == [int(c * alpha) for c in wide]


def test_v1_follows_table1_rows():
    """Table 1: 13 separable layers, strides, filter shapes; the last dw layer is stride 1 (the
    table's "s2" contradicts its own 7x7 -> 7x7 sizes)."""
    model = vz.create_model("mobilenet_v1")
    blocks = [b for stage in model.stages for b in stage]
    expected = [(r.stride if j == 0 else 1, r.out) for r in TABLE1_BODY for j in range(r.repeats)]
    assert len(blocks) == 13
    assert [(b.dw.conv.stride[0], b.pw.conv.out_channels) for b in blocks] == expected
    assert all(b.dw.conv.groups == b.dw.conv.in_channels for b in blocks)  # depthwise
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 7, 7)
    layers = [s.layers for s in model.stage_specs()]
    assert layers[0] == "Conv / s2: 3x3x3x32"
    assert layers[1:3] == ["Conv dw / s1: 3x3x32 dw", "Conv / s1: 1x1x32x64"]
    assert layers[-3:-1] == ["Conv dw / s1: 3x3x1024 dw", "Conv / s1: 1x1x1024x1024"]


def test_v1_shallow_drops_the_five_14x14_layers():
    """Table 5's "Shallow MobileNet": the 5 x (14x14x512) separable layers removed."""
    deep, shallow = vz.create_model("mobilenet_v1"), vz.create_model("mobilenet_v1", shallow=True)
    count = lambda m: sum(isinstance(b, DepthwiseSeparable) for b in m.modules())  # noqa: E731
    assert count(deep) - count(shallow) == 5


@pytest.mark.parametrize("kwargs", [{"width_mult": 0}, {"act": "gelu"}])
def test_v1_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        vz.create_model("mobilenet_v1", **kwargs)


# ---------------------------------------------------------------------------------------------
# MobileNet V2
# ---------------------------------------------------------------------------------------------


def test_v2_table2_rows_and_shortcuts():
    """Table 2: n blocks per row, stride s on the first; shortcuts only where s = 1 and the
    input and output widths agree (Fig. 3b, Table 1)."""
    model = vz.create_model("mobilenet_v2")
    for row, stage in zip(TABLE2, model.stages, strict=True):
        assert len(stage) == row.n
        assert [b.stride for b in stage] == [row.s] + [1] * (row.n - 1)
        assert all(b.out_chs == row.c for b in stage)
        assert [b.has_shortcut for b in stage] == [
            b.stride == 1 and b.in_chs == b.out_chs for b in stage]
    assert sum(b.has_shortcut for s in model.stages for b in s) == 10


def test_v2_linear_bottleneck_and_relu6(rng_input):
    """§3.2: the projection is linear (no ReLU: outputs go negative); the other convs use ReLU6
    (outputs within [0, 6])."""
    block = randomize_(InvertedResidual(24, 32, 2, expand=6)).eval()
    x = rng_input(16, chans=24) * 10
    with torch.no_grad():
        hidden = block.dw(block.expand(x))
        out = block(x)
    assert block.project.conv.out_channels == 32 and not hasattr(block.project, "act")
    assert out.min() < 0
    assert 0 <= hidden.min() and hidden.max() <= 6 and (hidden == 6).any()


def test_v2_first_row_has_no_expansion():
    """t = 1: no 1x1 expansion conv (the authors' code; Table 4's 300 M MAdds count none)."""
    model = vz.create_model("mobilenet_v2")
    assert isinstance(model.stages[0][0].expand, torch.nn.Identity)
    assert all(not isinstance(b.expand, torch.nn.Identity) for s in model.stages[1:] for b in s)


@pytest.mark.parametrize(("name", "last"), [
    ("mobilenet_v2", 1280), ("mobilenet_v2_x0_35", 1280), ("mobilenet_v2_x0_5", 1280),
    ("mobilenet_v2_x0_75", 1280), ("mobilenet_v2_x1_4", 1792)])
def test_v2_last_layer_not_thinned(name, last):
    """§4: the width multiplier applies to all layers but the very last conv, for < 1."""
    model = vz.create_model(name)
    assert model.last_conv.conv.out_channels == last == model.feature_info[-1]["channels"]


def test_v2_bad_width():
    with pytest.raises(ValueError, match="width_mult"):
        vz.create_model("mobilenet_v2", width_mult=-1)


def test_table7_resolutions_are_verify_rows():
    """§3.4: the resolution multiplier is the input size; Table 7's rows are variants of the
    registered 1.0 network at 192/160/128 (test_sweep's verify checks that they pass)."""
    variants = {v.input_size: v for v in vz.model_info("mobilenet_v1").variants}
    assert {(3, s, s) for s in (192, 160, 128)} <= set(variants)
    assert all(not variants[(3, s, s)].overrides for s in (192, 160, 128))
