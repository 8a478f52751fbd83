"""Small-input switches of VGG (``width_mult``, ``fc6_window``) and DenseNet (``stem="cifar"``,
``bn_size=0``, ``compression=1.0``): the adaptations the ablations (``visionzoo ablate vgg`` /
``densenet``) train with on 28x28 / 32x32 images.

Each builds small, trains a step, traces, survives a checkpoint and leaves the paper's default
network exactly as it was; the CIFAR DenseNets have Table 2's parameter counts.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo as vz
from visionzoo.models.densenet import DenseNet
from visionzoo.models.vgg import VGG

from conftest import assert_one_sgd_step, randomize_

# (model, flags, input side)
VGG_SMALL = [(name, {"width_mult": 0.125, "fc6_window": window}, 32)
             for name in ("vgg11", "vgg13", "vgg16") for window in (1, 7)]
VGG_SMALL += [("vgg11", {"width_mult": 0.125, "fc6_window": 1, "lrn": True}, 32),
              ("vgg16_bn", {"width_mult": 0.125, "fc6_window": 1}, 32)]
PLAIN_40 = {"stem": "cifar", "growth_rate": 12, "block_config": (12, 12, 12), "bn_size": 0,
            "compression": 1.0}
SMALL_BC = {"stem": "cifar", "growth_rate": 12, "block_config": (4, 4, 4)}
DENSENET_SMALL = [("densenet121", flags, side) for flags in (PLAIN_40, SMALL_BC)
                  for side in (28, 32)]
CASES = VGG_SMALL + DENSENET_SMALL


def _ids(cases):
    return [f"{n}-{'-'.join(f'{k}={v}' for k, v in f.items())}-{s}" for n, f, s in cases]


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(side: int, batch: int = 2, chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, chans, side, side, generator=torch.Generator().manual_seed(1))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------------------------------------
# both families: build, train a step, trace, checkpoint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "flags", "side"), CASES, ids=_ids(CASES))
def test_builds_gives_finite_logits_and_trains_one_step(name, flags, side):
    torch.manual_seed(0)
    model = vz.create_model(name, num_classes=10, in_chans=1, **flags).train()
    x, target = _input(side, batch=4, chans=1), torch.tensor([1, 3, 5, 7])
    assert_one_sgd_step(model, x, target, 10)


@pytest.mark.parametrize(("name", "flags", "side"), CASES, ids=_ids(CASES))
def test_flags_survive_a_checkpoint(name, flags, side, tmp_path):
    model = randomize_(vz.create_model(name, num_classes=10, **flags)).eval()
    path = vz.save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = vz.load_checkpoint(path).eval()
    for key, value in flags.items():
        attr = "stem_type" if key == "stem" else key  # ``stem`` is DenseNet's stem module
        assert getattr(loaded, attr) == getattr(model, attr)
        assert loaded.model_config[key] == (list(value) if isinstance(value, tuple) else value)
    assert _shapes(loaded) == _shapes(model)
    x = _input(side)
    assert torch.equal(_logits(loaded, x), _logits(model, x))
    with pytest.raises(vz.CheckpointError, match="another configuration"):
        vz.load_checkpoint(path, model=vz.create_model(name, num_classes=10))


@pytest.mark.parametrize(("name", "flags", "side"), CASES, ids=_ids(CASES))
def test_fx_symbolic_trace_with_the_flags_on(name, flags, side):
    model = randomize_(vz.create_model(name, num_classes=10, **flags)).eval()
    graph = torch.fx.symbolic_trace(model)
    x = _input(side)
    torch.testing.assert_close(_logits(graph, x), _logits(model, x))


EXPORT_CASES = [("vgg11", {"width_mult": 0.125, "fc6_window": 1}, 32),
                ("densenet121", PLAIN_40, 28)]


@pytest.mark.parametrize(("name", "flags", "side"), EXPORT_CASES, ids=_ids(EXPORT_CASES))
def test_strict_export_and_fullgraph_compile_with_the_flags_on(name, flags, side):
    model = randomize_(vz.create_model(name, num_classes=10, **flags)).eval()
    x = _input(side)
    with torch.no_grad():
        ref = model(x)
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=True)
        exported = program.module()
        for xb in (x, torch.cat([x, x[:1]]), x[:1]):
            torch.testing.assert_close(exported(xb), model(xb), rtol=1e-4, atol=1e-5)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# VGG: width_mult, fc6_window
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vgg11", "vgg16", "vgg11_bn"])
def test_vgg_defaults_spelled_out_change_nothing(name):
    with torch.device("meta"):
        default = vz.create_model(name)
        explicit = vz.create_model(name, width_mult=1.0, fc6_window=7)
    assert default.width_mult == explicit.width_mult == 1.0
    assert default.fc6_window == explicit.fc6_window == default.head.grid == 7
    assert _shapes(explicit) == _shapes(default)
    assert _params(default) == vz.model_info(name).num_params  # Table 2 / torchvision counts


@pytest.mark.parametrize("config", ["A", "B", "D"])
def test_vgg_width_mult_scales_every_layer(config):
    with torch.device("meta"):
        full, small = VGG(config), VGG(config, width_mult=0.125)
    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert len(convs(small)) == len(convs(full))  # the depth Table 3 compares is kept
    for a, b in zip(convs(full), convs(small), strict=True):
        assert b.out_channels == a.out_channels // 8 and b.kernel_size == a.kernel_size
    assert small.head.width == small.head.fc7.out_features == 512  # FC-4096 -> FC-512
    assert small.num_features == 64 and small.feature_info[-1]["channels"] == 64
    specs = [s.layers for s in small.stage_specs()]
    assert specs[0].startswith("conv3-8") and "FC-512" in specs


def test_vgg_width_rounding_is_half_up_and_at_least_one():
    with torch.device("meta"):
        model = VGG("A", width_mult=0.01)
    chans = [m.conv.out_channels for stage in model.stages for m in stage]
    assert chans == [1, 1, 3, 3, 5, 5, 5, 5]  # 0.64 -> 1, 1.28 -> 1, 2.56 -> 3, 5.12 -> 5
    assert model.head.width == 41  # 40.96
    with torch.device("meta"):
        assert VGG("A", width_mult=0.3).stages[0][0].conv.out_channels == 19  # 19.2


def test_vgg_fc6_window_one_is_the_fc_layer_on_a_1x1_pool5():
    """At 32x32 pool5 is 1x1: with ``fc6_window=1`` fc6 is an FC layer over its 64 values
    (no repetition up to 7x7); with the default window the map is repeated 49 times and fc6
    holds 49 x the weights, which act on the sum of their copies."""
    torch.manual_seed(0)
    one = VGG("A", width_mult=0.125, fc6_window=1, num_classes=10).eval()
    seven = VGG("A", width_mult=0.125, num_classes=10).eval()
    assert one.head.fc6.weight.shape == (512, 64)
    assert seven.head.fc6.weight.shape == (512, 64 * 49)
    x = _input(32)
    with torch.no_grad():
        feats = one.forward_features(x)
        assert feats.shape == (2, 64, 1, 1)
        hidden = F.relu(F.linear(feats.flatten(1), one.head.fc6.weight, one.head.fc6.bias))
        hidden = F.relu(one.head.fc7(hidden[:, :, None, None])).flatten(1)
        torch.testing.assert_close(one(x), one.head.fc(hidden))
        # the default window: the same as a 1-window fc6 whose weight sums the 49 copies
        seven.load_state_dict(one.state_dict() | {
            "head.fc6.weight": seven.head.fc6.weight, "head.fc6.bias": one.head.fc6.bias})
        summed = seven.head.fc6.weight.view(512, 64, 49).sum(-1)
        one.head.fc6.weight.copy_(summed)
        torch.testing.assert_close(seven(x), one(x), rtol=1e-4, atol=1e-5)


def test_vgg_fc6_window_one_on_a_larger_input_slides_and_averages():
    torch.manual_seed(0)
    model = VGG("A", width_mult=0.125, fc6_window=1, num_classes=10).eval()
    x = _input(64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[-2:] == (2, 2)
        windows = [model.forward_head(feats[:, :, i:i + 1, j:j + 1]) for i in (0, 1)
                   for j in (0, 1)]
        torch.testing.assert_close(model(x), torch.stack(windows).mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("flags", "match"), [
    ({"width_mult": 0}, r"width_mult must be a number > 0 \(1.0: Table 1's widths"),
    ({"width_mult": -0.5}, r"width_mult must be a number > 0"),
    ({"width_mult": float("inf")}, r"width_mult must be a number > 0"),
    ({"fc6_window": 0}, r"fc6_window must be an integer >= 1 \(7: the paper's"),
    ({"width_mult": "half"}, r"width_mult must be float"),
])
def test_vgg_bad_values(flags, match):
    with pytest.raises(ValueError, match=match):
        vz.create_model("vgg11", **flags)


# ---------------------------------------------------------------------------------------------
# DenseNet: the CIFAR stem, no bottleneck, no compression
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["densenet121", "densenet169"])
def test_densenet_defaults_spelled_out_change_nothing(name):
    with torch.device("meta"):
        default = vz.create_model(name)
        explicit = vz.create_model(name, stem="imagenet", bn_size=4, compression=0.5)
    assert default.stem_type == explicit.stem_type == "imagenet"
    assert _shapes(explicit) == _shapes(default)
    assert _params(default) == vz.model_info(name).num_params


@pytest.mark.parametrize("blocks", [(4, 4, 4), (6, 12, 24, 16)])
def test_densenet_cifar_stem_changes_exactly_the_stem_keys(blocks):
    """DenseNet-BC: the stem has 2k maps either way, so only the stem's keys differ: the 7x7
    conv becomes a 3x3 conv and its BN goes (the first dense layer's BN-ReLU follows)."""
    with torch.device("meta"):
        imagenet = DenseNet(12, blocks)
        cifar = DenseNet(12, blocks, stem="cifar")
    a, b = _shapes(imagenet), _shapes(cifar)
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == {k for k in a if k.startswith("stem.")}
    assert b["stem.conv.weight"] == (24, 3, 3, 3)
    assert set(b) == {k for k in a if not k.startswith("stem.norm.")}
    assert isinstance(cifar.pool, nn.Identity) and cifar.stem.conv.stride == (1, 1)
    assert cifar.stem.conv.bias is None and len(cifar.stem) == 1  # a bare conv


def test_densenet_cifar_stem_has_16_maps_unless_bc():
    """§3: "a convolution with 16 (or twice the growth rate for DenseNet-BC) output channels"."""
    with torch.device("meta"):
        for bn_size, theta, want in ((0, 1.0, 16), (4, 1.0, 16), (0, 0.5, 16), (4, 0.5, 24)):
            model = DenseNet(12, (2, 2, 2), stem="cifar", bn_size=bn_size, compression=theta)
            assert model.stem.conv.out_channels == want, (bn_size, theta)
        assert DenseNet(12, (2, 2, 2), stem="cifar", stem_chs=32).stem.conv.out_channels == 32


@pytest.mark.parametrize("side, maps", [(32, (32, 16, 8)), (28, (28, 14, 7))])
def test_densenet_cifar_feature_maps(side, maps):
    """Three blocks at the input size, then halved by each transition (§3 Implementation
    Details: 32x32, 16x16, 8x8 on CIFAR)."""
    model = vz.create_model("densenet121", **PLAIN_40).eval()
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4]
    assert [f["channels"] for f in model.feature_info] == [16, 160, 304, 448]  # no compression
    with torch.no_grad():
        final, feats = model.forward_intermediates(_input(side))
    assert [tuple(f.shape[-2:]) for f in feats] == [(side, side)] + [(m, m) for m in maps]
    assert final.shape == (2, 448, maps[-1], maps[-1])
    assert vz.profile(model, (3, side, side)).stages[0].name == "convolution"


def test_densenet_plain_layer_is_bn_relu_3x3_conv():
    """bn_size=0: H_l = BN -> ReLU -> 3x3 conv (§3 "Composite function"); 40 weight layers for
    L = 40 (the stem, 36 layers, 2 transitions, the classifier)."""
    model = randomize_(vz.create_model("densenet121", num_classes=10, **PLAIN_40)).eval()
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 40
    layer = model.blocks[1][3]
    assert layer.conv2 is None and layer.norm2 is None
    assert layer.conv1.kernel_size == (3, 3) and layer.conv1.out_channels == 12
    assert all(t.conv.out_channels == t.conv.in_channels for t in model.transitions)  # theta 1
    feats = [torch.randn(2, 160, 8, 8), torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8),
             torch.randn(2, 12, 8, 8)]
    with torch.no_grad():
        want = layer.conv1(F.relu(layer.norm1(torch.cat(feats, 1))))
        assert torch.equal(layer(feats), want)
    rows = [s.layers for s in model.stage_specs()]
    assert rows[0] == "3x3 conv, 16" and rows[1] == "[3x3 conv, 12] x 12"


def test_densenet_plain_memory_efficient_equals_plain_path():
    torch.manual_seed(0)
    plain = DenseNet(8, (3, 3, 3), stem="cifar", bn_size=0, compression=1.0,
                     num_classes=5).train()
    efficient = DenseNet(8, (3, 3, 3), stem="cifar", bn_size=0, compression=1.0, num_classes=5,
                         memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 28, 28)
    outs = []
    for model in (plain, efficient):
        out = model(x)
        out.square().sum().backward()
        outs.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for name, g in outs[0][1].items():
        torch.testing.assert_close(g, outs[1][1][name], msg=name)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, efficient.state_dict()[name], msg=name)


# Table 2: (label, flags, published millions); the paper counts the CIFAR-10 networks
TABLE2 = [
    ("DenseNet L=40 k=12", PLAIN_40, 1.0),
    ("DenseNet-BC L=100 k=12", {"stem": "cifar", "growth_rate": 12,
                                "block_config": (16, 16, 16)}, 0.8),
]


@pytest.mark.parametrize(("label", "flags", "millions"), TABLE2, ids=[t[0] for t in TABLE2])
def test_densenet_table2_parameter_counts(label, flags, millions):
    params = vz.profile("densenet121", (3, 32, 32), num_classes=10, **flags).params
    assert round(params / 1e6, 1) == millions


def test_densenet_table2_rows_are_verified_variants():
    rows = [r for r in vz.verify("densenet121") if r.kind == "variant"]
    labels = {r.variant for r in rows}
    assert {"DenseNet (L=40, k=12), Table 2", "DenseNet-BC (L=100, k=12), Table 2"} <= labels
    assert len(rows) == 6 and all(r.passed for r in rows)


@pytest.mark.parametrize(("flags", "match"), [
    ({"stem": "bogus"}, r"stem must be one of \('imagenet', 'cifar'\)"),
    ({"bn_size": -1}, r"bn_size must be an integer >= 0 \(4: .*0: no bottleneck\)"),
    ({"compression": 1.5}, r"compression theta must be in \(0, 1\]"),
])
def test_densenet_bad_values(flags, match):
    with pytest.raises(ValueError, match=match):
        vz.create_model("densenet121", **flags)


def test_growth_rate_and_blocks_stay_fixed_on_the_other_densenets():
    with pytest.raises(ValueError, match="the variant sets it"):
        vz.create_model("densenet169", growth_rate=12)
