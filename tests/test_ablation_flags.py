"""Ablation switches: constructor flags that turn off each paper's central mechanism.

* ResNet (He et al.): ``shortcut=None`` / ``"none"``, the plain networks of Fig. 4 / Fig. 6;
* MobileNet V2 (Sandler et al.): ``linear_bottleneck=False`` (Fig. 6a) and
  ``shortcut="expansion"`` / ``"none"`` (Fig. 6b);
* ShuffleNet V1 (Zhang et al.): ``shuffle=False`` (Table 3).

Each flag changes exactly the mechanism it names: the same weights give other logits, and only
ResNet's plain option-B nets lose keys (their projection shortcuts).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import visionzoo as vz
from visionzoo.models import mobilenet_v2 as mnv2_module
from visionzoo.models import resnet as resnet_module
from visionzoo.models import shufflenet_v1 as shufflenet_module
from visionzoo.registry import InvalidArgumentError, builder, list_models, model_arguments

from conftest import assert_one_sgd_step, randomize_

SIZES = {"resnet20": 32, "resnet56": 32, "resnet18": 64, "resnet50": 64, "mobilenet_v2": 32,
         "shufflenet_v1_g1": 64, "shufflenet_v1_g3": 64, "shufflenet_v1_g8": 64}

# (model, flags): every value that switches a mechanism off
ABLATIONS = [
    ("resnet20", {"shortcut": None}),
    ("resnet20", {"shortcut": "none"}),
    ("resnet56", {"shortcut": None}),
    ("resnet18", {"shortcut": None}),
    ("mobilenet_v2", {"linear_bottleneck": False}),
    ("mobilenet_v2", {"shortcut": "expansion"}),
    ("mobilenet_v2", {"shortcut": "none"}),
    ("mobilenet_v2", {"shortcut": "expansion", "linear_bottleneck": False}),
    ("shufflenet_v1_g3", {"shuffle": False}),
    ("shufflenet_v1_g8", {"shuffle": False}),
]
# those that change no parameter (all but plain option-B ResNets)
PARAMETER_FREE = [(n, f) for n, f in ABLATIONS if n != "resnet18"]
# the paper's values, spelled out
DEFAULTS = [
    ("resnet20", {"shortcut": "A"}),
    ("resnet18", {"shortcut": "B"}),
    ("mobilenet_v2", {"linear_bottleneck": True, "shortcut": "bottleneck"}),
    ("shufflenet_v1_g3", {"shuffle": True}),
]


def _ids(cases):
    return [f"{n}-{'-'.join(f'{k}={v}' for k, v in f.items())}" for n, f in cases]


def _input(name: str, batch: int = 2) -> torch.Tensor:
    side = SIZES[name]
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(("name", "flags"), ABLATIONS, ids=_ids(ABLATIONS))
def test_builds_gives_finite_logits_and_trains_one_step(name, flags):
    torch.manual_seed(0)
    model = vz.create_model(name, num_classes=5, **flags).train()
    x, target = _input(name), torch.tensor([1, 3])
    assert_one_sgd_step(model, x, target, 5)


@pytest.mark.parametrize(("name", "flags"), DEFAULTS, ids=_ids(DEFAULTS))
def test_the_papers_values_spelled_out_are_the_default(name, flags):
    default, explicit = vz.create_model(name), vz.create_model(name, **flags)
    for key, value in flags.items():
        assert getattr(default, key) == getattr(explicit, key) == value
    assert _shapes(default) == _shapes(explicit)
    randomize_(default)
    explicit.load_state_dict(default.state_dict())
    x = _input(name)
    assert torch.equal(_logits(default, x), _logits(explicit, x))


@pytest.mark.parametrize(("name", "flags"), PARAMETER_FREE, ids=_ids(PARAMETER_FREE))
def test_parameter_free_flags_keep_the_keys_and_change_the_logits(name, flags):
    default = randomize_(vz.create_model(name))
    ablated = vz.create_model(name, **flags)
    assert _shapes(ablated) == _shapes(default)
    ablated.load_state_dict(default.state_dict())
    x = _input(name)
    a, b = _logits(default, x), _logits(ablated, x)
    assert torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-3 * a.abs().max()  # the mechanism is really off


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_plain_option_b_nets_lose_exactly_the_projection_shortcuts(name):
    residual, plain = _shapes(vz.create_model(name)), _shapes(vz.create_model(name, shortcut=None))
    gone = set(residual) - set(plain)
    assert set(plain) <= set(residual)
    assert all(plain[k] == residual[k] for k in plain)
    # the projections (1x1 conv + BN) of the first block of each stage that changes shape
    first = 0 if name == "resnet50" else 1  # resnet18's conv2_1 keeps 64 channels: identity
    want = {f"stages.{i}.0.shortcut.{p}" for i in range(first, 4)
            for p in ("conv.weight", "norm.weight", "norm.bias", "norm.running_mean",
                      "norm.running_var", "norm.num_batches_tracked")}
    assert gone == want
    assert all(re.fullmatch(r"stages\.\d\.0\.shortcut\.(conv|norm)\..+", k) for k in gone)
    n = lambda shapes: sum(torch.Size(s).numel() for k, s in shapes.items()  # noqa: E731
                           if "running" not in k and "num_batches" not in k)
    assert vz.profile(name).params - vz.profile(name, shortcut=None).params == n(
        {k: residual[k] for k in gone})


def test_plain_option_a_imagenet_net_has_the_keys_of_option_a():
    a, plain = vz.create_model("resnet34", shortcut="A"), vz.create_model("resnet34",
                                                                          shortcut=None)
    assert _shapes(a) == _shapes(plain)


def test_plain_block_is_relu_of_the_residual_branch():
    model = randomize_(vz.create_model("resnet20", shortcut=None)).eval()
    x = torch.randn(2, 16, 8, 8)
    for block in (model.stages[0][0], model.stages[1][0]):  # identity / downsampling positions
        assert block.shortcut is None
        with torch.no_grad():
            h = x if block is model.stages[0][0] else model.stages[0](x)
            assert torch.equal(block(h), F.relu(block.residual(h)))


@pytest.mark.parametrize("depth", [20, 56])
def test_plain_cifar_nets_have_the_resnets_parameters_and_macs(depth):
    name = f"resnet{depth}"
    residual, plain = vz.profile(name), vz.profile(name, shortcut=None)
    assert residual.params == plain.params == vz.model_info(name).num_params
    assert abs(plain.macs - residual.macs) <= 0.01 * residual.macs


@pytest.mark.parametrize(("name", "flags"), PARAMETER_FREE, ids=_ids(PARAMETER_FREE))
def test_parameter_free_flags_keep_params_and_macs(name, flags):
    default, ablated = vz.profile(name, (3, 64, 64)), vz.profile(name, (3, 64, 64), **flags)
    assert ablated.params == default.params
    assert ablated.macs == default.macs


def test_shuffle_off_with_one_group_changes_nothing():
    """g = 1: the channel shuffle is the identity, so the switch must not change the output."""
    default = randomize_(vz.create_model("shufflenet_v1_g1"))
    ablated = vz.create_model("shufflenet_v1_g1", shuffle=False)
    ablated.load_state_dict(default.state_dict())
    x = _input("shufflenet_v1_g1")
    assert torch.equal(_logits(default, x), _logits(ablated, x))


def test_shuffle_off_skips_exactly_the_shuffle():
    """A unit without shuffle is the unit with the shuffle replaced by the identity."""
    model = randomize_(vz.create_model("shufflenet_v1_g3", shuffle=False)).eval()
    unit = model.stages[1][2]
    assert not unit.shuffle and all(not u.shuffle for s in model.stages for u in s)
    x = torch.randn(2, unit.in_chs, 8, 8)
    with torch.no_grad():
        want = F.relu(x + unit.gconv2(unit.dwconv(unit.gconv1(x))))
        assert torch.equal(unit(x), want)


def _mobilenet_reference(model, x: torch.Tensor, shortcut: str) -> torch.Tensor:
    """MobileNet V2 written out block by block, for each setting of Fig. 6b."""
    x = model.stem(x)
    stream = None
    for block in (b for stage in model.stages for b in stage):
        shortcut_here = block.stride == 1 and block.in_chs == block.out_chs
        expanded = block.expand(x)
        if shortcut == "expansion":
            if stream is not None:
                expanded = expanded + stream
            stream = expanded if shortcut_here else None
        out = block.project(block.dw(expanded))
        x = x + out if shortcut == "bottleneck" and shortcut_here else out
    return model.forward_head(model.last_conv(x))


@pytest.mark.parametrize("shortcut", ["bottleneck", "expansion", "none"])
def test_mobilenet_v2_shortcut_settings_follow_their_definition(shortcut):
    model = randomize_(vz.create_model("mobilenet_v2", shortcut=shortcut)).eval()
    x = _input("mobilenet_v2")
    with torch.no_grad():
        torch.testing.assert_close(model(x), _mobilenet_reference(model, x, shortcut),
                                   rtol=1e-5, atol=1e-5)
    blocks = [b for s in model.stages for b in s]
    assert sum(b.has_shortcut for b in blocks) == (0 if shortcut == "none" else 10)


def test_mobilenet_v2_expansion_stream_joins_equal_shapes():
    model = vz.create_model("mobilenet_v2", shortcut="expansion")
    blocks = [b for s in model.stages for b in s]
    sources = [i for i, b in enumerate(blocks) if b.has_shortcut]
    assert len(sources) == 10 and blocks[-1].has_shortcut is False
    for i in sources:  # same width and resolution: the source keeps both, t = 6 on both sides
        assert blocks[i].stride == 1 and blocks[i + 1].hidden_chs == blocks[i].hidden_chs
    # the stream crosses the ends of rows 2-6, so only the last conv's map is a feature
    assert [f["module"] for f in model.feature_info] == ["last_conv"]
    x = _input("mobilenet_v2")
    with torch.no_grad():
        final, maps = model.eval().forward_intermediates(x)
        assert len(maps) == 1 and torch.equal(maps[0], final)
        assert torch.equal(final, model.forward_features(x))


def test_mobilenet_v2_relu6_in_the_bottleneck():
    block = vz.create_model("mobilenet_v2", linear_bottleneck=False).stages[2][0]
    assert isinstance(block.project.act, torch.nn.ReLU6)
    with torch.no_grad():
        out = randomize_(block).eval()(torch.randn(2, block.in_chs, 8, 8) * 10)
    assert out.min() >= 0 and out.max() <= 6  # a stride-2 block: no shortcut after the ReLU6


@pytest.mark.parametrize(("name", "flags"), ABLATIONS, ids=_ids(ABLATIONS))
def test_flags_survive_a_checkpoint(name, flags, tmp_path):
    model = randomize_(vz.create_model(name, **flags)).eval()
    path = vz.save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = vz.load_checkpoint(path).eval()
    for key, value in flags.items():
        assert getattr(loaded, key) == getattr(model, key)
        assert loaded.model_config[key] == value
    x = _input(name)
    assert torch.equal(_logits(loaded, x), _logits(model, x))


# shortcut=None included: an override given as None is not the same as one not given
@pytest.mark.parametrize(("name", "flags"), ABLATIONS, ids=_ids(ABLATIONS))
def test_an_ablation_checkpoint_does_not_load_into_the_papers_net(name, flags, tmp_path):
    path = vz.save_checkpoint(vz.create_model(name, **flags), tmp_path / "m.safetensors")
    with pytest.raises(vz.CheckpointError, match="another configuration"):
        vz.load_checkpoint(path, model=vz.create_model(name))


@pytest.mark.parametrize(("name", "flags"), ABLATIONS, ids=_ids(ABLATIONS))
def test_fx_symbolic_trace_with_the_mechanism_off(name, flags):
    model = randomize_(vz.create_model(name, **flags)).eval()
    x = _input(name)
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))


def test_mobilenet_v2_expansion_exports_and_compiles():
    """The one ablation whose forward has a new shape (a stream carried between blocks)."""
    model = randomize_(vz.create_model("mobilenet_v2", num_classes=7,
                                       shortcut="expansion")).eval()
    x = _input("mobilenet_v2")
    with torch.no_grad():
        ref = model(x)
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=True)
        torch.testing.assert_close(program.module()(x), ref, rtol=1e-4, atol=1e-5)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), ref, rtol=1e-4, atol=1e-5)


# a value of the wrong type is refused before the model is built (InvalidArgumentError, from the
# annotations); an unknown value of the right type by the constructor, naming the allowed ones
@pytest.mark.parametrize(("name", "kwargs", "error", "match"), [
    ("resnet20", {"shortcut": "bogus"}, ValueError, r"'A' or 'B'.*None / 'none'.*got 'bogus'"),
    ("resnet50", {"shortcut": "C"}, ValueError, r"'A' or 'B'.*None / 'none'.*got 'C'"),
    ("mobilenet_v2", {"shortcut": "bogus"}, ValueError,
     r"one of 'bottleneck', 'expansion', 'none'.*got 'bogus'"),
    ("resnet20", {"shortcut": 0}, InvalidArgumentError, r"shortcut must be str \| None; got 0"),
    ("mobilenet_v2", {"linear_bottleneck": "no"}, InvalidArgumentError,
     r"linear_bottleneck must be bool; got 'no'"),
    ("shufflenet_v1_g3", {"shuffle": 0}, InvalidArgumentError, r"shuffle must be bool; got 0"),
    ("resnet20", {"shortcut": None, "drop_path_rate": 0.1}, ValueError,
     r"plain network.*has none"),
    ("resnet18", {"shortcut": "none", "zero_init_residual": True}, ValueError,
     r"plain network.*has none"),
    ("mobilenet_v2", {"shortcut": "expansion", "drop_path_rate": 0.1}, ValueError,
     r"drop_path_rate is defined for the shortcuts between bottlenecks"),
])
def test_bad_values_are_one_clear_error(name, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        vz.create_model(name, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "alias", "canonical"), [
    ("resnet20", "none", None),  # the spelling is None; "none" as in MobileNet V2
    ("mobilenet_v2", None, "none"),  # the spelling is "none"; None as in ResNet
])
def test_no_shortcut_has_two_spellings(name, alias, canonical):
    a, b = vz.create_model(name, shortcut=alias), vz.create_model(name, shortcut=canonical)
    assert a.shortcut == b.shortcut == canonical
    assert _shapes(a) == _shapes(b)
    randomize_(a)
    b.load_state_dict(a.state_dict())
    x = _input(name)
    assert torch.equal(_logits(a, x), _logits(b, x))


@pytest.mark.parametrize(("family", "flags"), [
    ("resnet", {"shortcut": None}),
    ("mobilenet_v2", {"linear_bottleneck": False, "shortcut": "expansion"}),
    ("mobilenet_v2", {"shortcut": "none"}),
    ("shufflenet_v1", {"shuffle": False}),
])
def test_every_builder_of_the_family_takes_the_flag(family, flags):
    names = [n for n in list_models() if vz.model_info(n).family == family]
    assert names
    for name in names:
        assert set(flags) <= set(model_arguments(name)), name
        with torch.device("meta"):
            model = builder(name)(**flags)
        for key, value in flags.items():
            assert getattr(model, key) == value, name


@pytest.mark.parametrize(("module", "words"), [
    (resnet_module, ("Ablation switch", "shortcut=None", "Fig. 6")),
    (mnv2_module, ("Ablation switches", "linear_bottleneck=False", '"expansion"', '"none"')),
    (shufflenet_module, ("Ablation switch", "shuffle=False", "Table 3")),
])
def test_switches_are_documented_as_ablations(module, words):
    assert all(w in module.__doc__ for w in words)
