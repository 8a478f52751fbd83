"""timm's model contract, checked the way timm checks its own models.

The first group adapts timm's ``tests/test_models.py`` (huggingface/pytorch-image-models) to call
visionzoo: the same steps, assertions and tolerances, on one variant per family (TorchScript
scripting is left out: deprecated upstream and not part of our contract). Sizes follow timm's
targets (forward at the default input size, backward at 128, features at 96, FX at 128).
The second group checks the parts of the contract timm's file leaves implicit: the
``forward_intermediates`` arguments, pruning, ``global_pool``, ``pretrained_cfg`` keys resolving
to real modules, and gradient checkpointing giving equal gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torchvision.models.feature_extraction import (
    NodePathTracer,
    create_feature_extractor,
    get_graph_node_names,
)

import visionzoo as vz
from visionzoo.layers import FeatureInfo

# one variant per family (ResNeXt and SENet on ResNet's code, but their own blocks)
FAMILIES = ["alexnet", "vgg11_bn", "resnet18", "resnext50_32x4d", "densenet121", "se_resnet50",
            "mobilenet_v1", "mobilenet_v2", "shufflenet_v1_g3", "efficientnet_b0", "swin_t"]
# heads with layers between the trunk and the pooling (timm's EARLY_POOL_MODELS: its VGG too):
# reset_classifier(0, "") cannot give the unpooled trunk map
EARLY_POOL = {"alexnet", "vgg11_bn"}

TARGET_BWD_SIZE = 128
TARGET_FFEAT_SIZE = 96
TARGET_FX_SIZE = 128


def _input_size(model: nn.Module, target: int | None = None) -> tuple[int, int, int]:
    """timm's ``_get_input_size``: the default size, or ``target`` when the model takes any
    size (never below its minimum)."""
    cfg = model.pretrained_cfg
    size = tuple(cfg["input_size"])
    if target is None or cfg.get("fixed_input_size"):
        return size
    low = cfg.get("min_input_size", size)[-1]
    side = max(target, low)
    return (size[0], side, side)


def _create(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return vz.create_model(name, **kwargs)


# -- adapted from timm's tests/test_models.py ---------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_model_forward(name):
    model = _create(name).eval()
    inputs = torch.randn((1, *_input_size(model)))
    with torch.no_grad():
        outputs = model(inputs)
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"
    model.set_grad_checkpointing()
    with torch.no_grad():
        outputs2 = model(inputs)
    assert torch.allclose(outputs, outputs2, rtol=1e-4, atol=1e-5), "Output does not match"


@pytest.mark.parametrize("name", FAMILIES)
def test_model_backward(name):
    model = _create(name, num_classes=42)
    num_params = sum(p.numel() for p in model.parameters())
    model.train()
    inputs = torch.randn((2, *_input_size(model, TARGET_BWD_SIZE)))
    outputs = model(inputs)
    outputs.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    num_grad = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.parametrize("name", FAMILIES)
def test_model_default_cfgs(name):
    model = _create(name).eval()
    assert model.num_classes >= 0
    assert model.num_features > 0
    assert model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    pool_size = cfg["pool_size"]
    input_tensor = torch.randn((1, *cfg["input_size"]))
    with torch.no_grad():
        outputs = model.forward_features(input_tensor)
        outputs_pre = model.forward_head(outputs, pre_logits=True)
    assert outputs.shape[2] == pool_size[0], f"unpooled feature shape {outputs.shape} != config"
    assert outputs.shape[3] == pool_size[1], f"unpooled feature shape {outputs.shape} != config"
    assert outputs.shape[1] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size

    model.reset_classifier(0)
    assert model.num_classes == 0
    with torch.no_grad():
        outputs = model(input_tensor)
    assert len(outputs.shape) == 2
    assert outputs.shape[1] == model.head_hidden_size
    assert outputs.shape == outputs_pre.shape

    if name not in EARLY_POOL:
        model.reset_classifier(0, "")
        with torch.no_grad():
            outputs = model(input_tensor)
        assert len(outputs.shape) == 4
        assert outputs.shape[2] == pool_size[0] and outputs.shape[3] == pool_size[1]

        model = _create(name, num_classes=0, global_pool="").eval()
        with torch.no_grad():
            outputs = model(input_tensor)
        assert len(outputs.shape) == 4
        assert outputs.shape[2] == pool_size[0] and outputs.shape[3] == pool_size[1]

    if cfg.get("num_classes"):
        assert cfg["classifier"] + ".weight" in state_dict, "classifier not in model params"
    assert cfg["first_conv"] + ".weight" in state_dict, "first_conv not in model params"


@pytest.mark.parametrize("name", FAMILIES)
def test_model_forward_features(name):
    model = _create(name, features_only=True).eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    assert len(expected_channels) >= 3
    input_size = _input_size(model, TARGET_FFEAT_SIZE)
    with torch.no_grad():
        outputs = model(torch.randn((1, *input_size)))
    assert len(expected_channels) == len(outputs)
    for e, r, o in zip(expected_channels, expected_reduction, outputs, strict=True):
        assert e == o.shape[1]
        assert o.shape[2] <= math.ceil(input_size[1] / r) + 1
        assert o.shape[3] <= math.ceil(input_size[2] / r) + 1
        assert o.shape[0] == 1
        assert not torch.isnan(o).any()


@pytest.mark.parametrize("name", FAMILIES)
def test_model_forward_intermediates(name):
    model = _create(name).eval()
    feature_info = FeatureInfo(model.feature_info)
    expected_channels = feature_info.channels()
    expected_reduction = feature_info.reduction()
    assert len(expected_channels) >= 3
    input_size = _input_size(model, TARGET_FFEAT_SIZE)
    inpt = torch.randn((1, *input_size))
    with torch.no_grad():
        output, intermediates = model.forward_intermediates(inpt, output_fmt="NCHW")
    assert len(expected_channels) == len(intermediates)
    for e, r, o in zip(expected_channels, expected_reduction, intermediates, strict=True):
        assert e == o.shape[1]
        assert o.shape[2] <= math.ceil(input_size[1] / r) + 1
        assert o.shape[3] <= math.ceil(input_size[2] / r) + 1
        assert o.shape[0] == 1
        assert not torch.isnan(o).any()
    with torch.no_grad():
        output2 = model.forward_features(inpt)
    assert torch.allclose(output, output2)
    model.set_grad_checkpointing()
    with torch.no_grad():
        output3, _ = model.forward_intermediates(inpt, output_fmt="NCHW")
    assert torch.allclose(output, output3, rtol=1e-4, atol=1e-5), "Output does not match"


def _create_fx_model(model: nn.Module, train: bool = False) -> nn.Module:
    """timm's helper: trace, return the node(s) feeding the graph's output."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    eval_return_nodes = [eval_nodes[-1]]
    train_return_nodes = [train_nodes[-1]]
    if train:
        graph = NodePathTracer().trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(n) for n in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(model, train_return_nodes=train_return_nodes,
                                    eval_return_nodes=eval_return_nodes)


@pytest.mark.parametrize("name", FAMILIES)
def test_model_forward_fx(name):
    model = _create(name).eval()
    input_size = _input_size(model, TARGET_FX_SIZE)
    with torch.inference_mode():
        inputs = torch.randn((1, *input_size))
        outputs = model(inputs)
        fx_model = _create_fx_model(model)
        fx_outputs = torch.cat(tuple(fx_model(inputs).values()))
    assert torch.all(fx_outputs == outputs)
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.parametrize("name", FAMILIES)
def test_model_backward_fx(name):
    model = _create(name, num_classes=42)
    model.train()
    num_params = sum(p.numel() for p in model.parameters())
    input_size = _input_size(model, TARGET_BWD_SIZE)
    fx_model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(torch.randn((2, *input_size))).values()))
    outputs.mean().backward()
    for n, p in fx_model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    num_grad = sum(p.grad.numel() for p in fx_model.parameters() if p.grad is not None)
    assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


# -- the rest of the contract -------------------------------------------------------------------


def _small(name: str) -> torch.Tensor:
    side = max(vz.model_info(name).min_input_size, 64)
    return torch.randn(2, 3, side, side)


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates_arguments(name):
    model = _create(name).eval()
    x = _small(name)
    n = len(model.feature_info)
    with torch.no_grad():
        final, every = model.forward_intermediates(x)
        assert len(every) == n
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        stopped, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        nhwc = model.forward_intermediates(x, indices=[-1], output_fmt="NHWC",
                                           intermediates_only=True)
    assert isinstance(last2, list) and len(last2) == 2
    for got, want in zip(last2, every[-2:], strict=True):
        assert torch.equal(got, want)
    assert torch.equal(picked[0], every[0]) and torch.equal(picked[1], every[-1])
    assert torch.equal(early[0], every[1]) and torch.equal(stopped, every[1])
    assert torch.equal(nhwc[0], every[-1].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[n])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("name", FAMILIES)
def test_prune_intermediate_layers(name):
    model = _create(name).eval()
    x = _small(name)
    with torch.no_grad():
        _, every = model.forward_intermediates(x)
    before = sum(p.numel() for p in model.parameters())
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1]
    assert sum(p.numel() for p in model.parameters()) < before  # later stages and head gone
    assert model.num_classes == 0
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert torch.equal(maps[0], every[0]) and torch.equal(maps[1], every[1])


@pytest.mark.parametrize("name", FAMILIES)
def test_pretrained_cfg_names_real_modules(name):
    model = _create(name)
    cfg = model.pretrained_cfg
    keys = {"num_classes", "input_size", "pool_size", "crop_pct", "interpolation", "mean", "std",
            "first_conv", "classifier", "fixed_input_size", "min_input_size"}
    assert keys <= set(cfg)
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    # the first conv is the first one the input meets
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)) is first
    classifier = model.get_submodule(cfg["classifier"])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg["num_classes"]
    assert classifier is model.get_classifier()
    model.reset_classifier(5)
    assert model.pretrained_cfg["num_classes"] == 5
    # the smallest input it promises gives logits
    side = cfg["min_input_size"][-1]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, side, side)).shape == (1, 5)


@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in ("alexnet",)])
def test_global_pool_argument(name):
    x = _small(name)
    avg = _create(name, num_classes=0).eval()
    mx = _create(name, num_classes=0, global_pool="max").eval()
    assert avg.global_pool == "avg" and mx.global_pool == "max"
    with torch.no_grad():
        feats = avg.forward_features(x)
        if name in EARLY_POOL:  # VGG pools the dense fc7 map over positions (§3.2)
            assert mx(x).shape == avg(x).shape == (2, avg.head_hidden_size)
        else:
            torch.testing.assert_close(mx(x), feats.amax((2, 3)))
            torch.testing.assert_close(avg(x), feats.mean((2, 3)))
    avg.reset_classifier(4, "max")
    assert avg.global_pool == "max" and avg.num_classes == 4
    with pytest.raises(ValueError, match="global_pool"):
        _create(name, global_pool="median")


def test_global_pool_refused_where_the_head_does_not_pool():
    with pytest.raises(ValueError, match="takes no argument 'global_pool'"):
        vz.create_model("alexnet", global_pool="avg")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        vz.create_model("resnet18", global_pool="")


def test_head_hidden_size_is_the_pre_logits_width():
    assert vz.create_model("vgg11").head_hidden_size == 4096
    assert vz.create_model("alexnet").head_hidden_size == 4096
    model = vz.create_model("resnet50")
    assert model.head_hidden_size == model.num_features == 2048


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_checkpointing_gives_equal_gradients(name):
    x = _small(name)
    grads = []
    for enable in (False, True):
        model = _create(name, num_classes=5).train()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)  # the same dropout / drop-path draws
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", FAMILIES)
def test_feature_info_module_is_the_map(name):
    """timm's ``module`` key names the module whose output is the map: torchvision's feature
    extraction on those names returns exactly ``forward_intermediates``'s maps."""
    model = _create(name).eval()
    x = _small(name)
    modules = [f["module"] for f in model.feature_info]
    extractor = create_feature_extractor(model, return_nodes={m: m for m in modules})
    with torch.no_grad():
        got = extractor(x)
        want = model.forward_intermediates(x, intermediates_only=True)
    for m, w in zip(modules, want, strict=True):
        torch.testing.assert_close(got[m], w, rtol=0, atol=0, msg=m)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": -1}, r"num_classes must be an integer >= 0"),
    ({"in_chans": 0}, r"in_chans must be an integer >= 1"),
    ({"foo": 1}, r"resnet50 takes no argument 'foo'; it accepts: .*stride_in_1x1"),
    ({"stride_in_1x1": "maybe"}, r"stride_in_1x1 must be bool; got 'maybe'"),
    ({"drop_rate": "high"}, r"drop_rate must be float"),
    ({"depths": (1, 1, 1, 1)}, r"takes no argument 'depths'"),  # what the variant fixes
])
def test_bad_constructor_arguments_are_one_clear_error(kwargs, match):
    with pytest.raises(vz.registry.InvalidArgumentError, match=match) as err:
        vz.create_model("resnet50", **kwargs)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_a_keyword_the_variant_sets_is_named():
    with pytest.raises(ValueError, match="towers.*the variant sets it"):
        vz.create_model("alexnet", towers=1)
