"""Primitives shared by two or more families, and the model contract every family implements.

The contract (``ZooModel``) is timm's, with timm's names and semantics:

* ``forward(x) == forward_head(forward_features(x))``;
* ``forward_features(x)`` returns the last feature map (N, C, H, W) before pooling;
* ``forward_head(x, pre_logits=False)`` pools and classifies (``pre_logits`` stops before the
  classifier; its width is ``head_hidden_size``);
* ``forward_intermediates(x, indices, norm, stop_early, output_fmt, intermediates_only)``
  returns ``(final, [maps])``; ``prune_intermediate_layers(indices, prune_norm, prune_head)``;
* ``num_classes``, ``num_features``, ``head_hidden_size``, ``global_pool``, ``get_classifier()``,
  ``reset_classifier(num_classes, global_pool=None)``, ``set_grad_checkpointing()``;
* ``feature_info``: ``[{"name", "channels", "reduction", "module"}, ...]`` one per stage output;
* ``pretrained_cfg`` (alias ``default_cfg``): input_size, mean, std, crop_pct, interpolation,
  num_classes, pool_size, first_conv, classifier, fixed_input_size, min_input_size;
* ``stage_specs()``: the rows of the paper's architecture table (used by ``visionzoo info``);
* ``no_weight_decay()``: names of parameters that must not be decayed.

Every model traces: shape checks and shape-dependent Python live in functions wrapped for
``torch.fx`` (one node in a symbolic trace), and ``torch.export``/``torch.compile`` see static
sizes, so the same forward serves eager mode, FX feature extraction and export.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ClassifierHead",
    "Conv2dSame",
    "ConvNormAct",
    "DropPath",
    "FeatureExtractor",
    "FeatureInfo",
    "SqueezeExcite",
    "StageSpec",
    "ZooModel",
    "check_batch",
    "create_conv2d",
    "default_cfg",
    "feature_take_indices",
    "make_divisible",
    "pad_same",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor``, never below ``round_limit`` of it.

    This is the rounding of the MobileNet/EfficientNet authors' code (``_make_divisible``).
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


def default_cfg(input_size: tuple[int, int, int] = (3, 224, 224), *,
                mean: Sequence[float] = (0.485, 0.456, 0.406),
                std: Sequence[float] = (0.229, 0.224, 0.225),
                crop_pct: float = 0.875, interpolation: str = "bilinear") -> dict:
    """An evaluation preprocessing description: resize to input/crop_pct, center-crop, normalise."""
    return {"input_size": tuple(input_size), "mean": tuple(mean), "std": tuple(std),
            "crop_pct": crop_pct, "interpolation": interpolation}


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation; ``act=None`` leaves the activation out.

    ``padding=None`` is symmetric "half" padding, ``(k - 1) // 2`` (the papers' convention);
    ``padding="same"`` is TensorFlow's "SAME" (see ``create_conv2d``). A plain ``nn.Sequential``
    of submodules ``conv``, ``norm``, ``act``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, padding: int | str | None = None, dilation: int = 1,
                 act: type[nn.Module] | None = nn.ReLU, norm: bool = True,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool | None = None):
        layers: dict[str, nn.Module] = {
            "conv": create_conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation,
                                  groups=groups, bias=(not norm) if bias is None else bias),
        }
        if norm:
            layers["norm"] = nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum)
        if act is not None:
            layers["act"] = act(inplace=True) if _takes_inplace(act) else act()
        super().__init__()
        for key, module in layers.items():
            self.add_module(key, module)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride


def _takes_inplace(act: type[nn.Module]) -> bool:
    return act in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., arXiv 1603.09382): drop a residual branch per sample.

    Surviving samples are scaled by 1/(1-p) so the expectation is unchanged; identity in eval.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., arXiv 1709.01507, Fig. 2-3, eq. 2-4).

    Paper symbols -> arguments:

    * U (H x W x C), the feature map being recalibrated: the input ``x``, C = ``channels``;
    * squeeze F_sq, eq. (2): z_c = mean over H x W of u_c (global average pooling);
    * excitation F_ex, eq. (3): s = sigmoid(W_2 relu(W_1 z)) with W_1 in R^{C/r x C} (``fc1``)
      and W_2 in R^{C x C/r} (``fc2``); r = 1 / ``ratio`` when ``reduced`` is not given.
      ``reduced`` fixes C/r directly (EfficientNet/MobileNet reduce from the block's *input*
      channels, not from C); ``divisor`` rounds C/r to a multiple (MobileNetV3-style);
    * scale F_scale, eq. (4): x~_c = s_c * u_c.

    ``act``/``gate`` replace ReLU/sigmoid (EfficientNet uses swish inside). The FCs are 1x1 convs,
    the same linear maps on the pooled (N, C, 1, 1) tensor.
    """

    def __init__(self, channels: int, ratio: float = 1 / 16, reduced: int | None = None,
                 act: type[nn.Module] = nn.ReLU, gate: type[nn.Module] = nn.Sigmoid,
                 divisor: int = 1):
        super().__init__()
        if reduced is None:
            reduced = channels * ratio
            reduced = make_divisible(reduced, divisor) if divisor > 1 else max(1, int(reduced))
        self.channels, self.reduced = channels, reduced
        self.fc1 = nn.Conv2d(channels, reduced, 1)  # W_1: C -> C/r
        self.act = act(inplace=True) if _takes_inplace(act) else act()
        self.fc2 = nn.Conv2d(reduced, channels, 1)  # W_2: C/r -> C
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean((2, 3), keepdim=True)  # squeeze: (N, C, H, W) -> (N, C, 1, 1)
        s = self.gate(self.fc2(self.act(self.fc1(z))))  # excitation, eq. (3)
        return x * s  # scale, eq. (4)


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None = None
                         ) -> tuple[list[int], int]:
    """timm's index rule for ``forward_intermediates``: ``None`` takes every feature, an int
    ``n`` the last ``n``, a sequence those positions (negative counts from the end). Returns the
    sorted-as-given positions and the largest one (where ``stop_early`` may stop)."""
    if indices is None:
        take = list(range(num_features))
    elif isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"indices={indices}: an int takes the last n of the {num_features} "
                             f"feature maps, so it must be in 1..{num_features}")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            if not -num_features <= int(i) < num_features:
                raise ValueError(f"feature index {i} out of range for {num_features} feature maps "
                                 f"(valid: {-num_features}..{num_features - 1})")
            take.append(int(i) % num_features)
    return take, max(take) if take else -1


@torch.fx.wrap
def check_batch(x: torch.Tensor, in_chans: int, name: str) -> torch.Tensor:
    """A one-line error for a batch the network cannot take (instead of a deep conv error).

    Wrapped for ``torch.fx``: a symbolic trace records one call (the check still runs in the
    traced graph); ``torch.export``/``torch.compile`` see static channel counts and trace it.
    """
    if torch.jit.is_tracing():  # sizes are traced tensors there; the trace fixes them anyway
        return x
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"{name} expects a batch of shape (N, {in_chans}, H, W) (in_chans={in_chans}); got a "
            f"tensor of shape {tuple(x.shape)}")
    return x


POOL_TYPES = ("avg", "max", "")

# registered name -> smallest H = W it takes; filled by registry.register_model (the registry sits
# above this module, so the value comes down to it rather than being looked up)
MIN_INPUT_SIZES: dict[str, int] = {}


def _check_pool(pool_type: str, num_classes: int) -> str:
    if pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of {POOL_TYPES} ('' keeps the map); got "
                         f"{pool_type!r}")
    if pool_type == "" and num_classes > 0:
        raise ValueError("global_pool='' returns the unpooled feature map, so it needs "
                         "num_classes=0 (a classifier needs pooled features)")
    return pool_type


class ClassifierHead(nn.Module):
    """Global pool -> (dropout) -> linear. ``num_classes=0`` gives pooled features; with
    ``pool_type=""`` (and no classifier) the map is returned unpooled."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0,
                 pool_type: str = "avg"):
        super().__init__()
        self.in_features = self.hidden_size = in_features
        self.pool_type = _check_pool(pool_type, num_classes)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type, num_classes)
        elif self.pool_type == "":
            _check_pool("", num_classes)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean((2, 3))  # (N, C, H, W) -> (N, C)
        elif self.pool_type == "max":
            x = x.amax((2, 3))
        if pre_logits:
            return x
        return self.fc(self.drop(x))

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


@dataclass(frozen=True)
class StageSpec:
    """One row of a paper's architecture table, tied to the modules that compute it.

    ``modules``: dotted module paths whose parameters and MACs make up the row; the output size is
    that of the last one. ``layers``: the row's description as the paper writes it. ``fmt``: the
    layout of that module's output ("NCHW", "NHWC" or "NLC" with ``hw`` its grid) so the table
    can print its spatial size and channels. ``part_of``: the name of the row whose modules
    already include this row's (e.g. a stage's SE blocks): a breakdown, not another stage, so
    ``info`` shows the parent with and without it and totals skip it.
    """

    name: str
    modules: tuple[str, ...]
    layers: str
    blocks: int | None = None
    fmt: str = "NCHW"
    part_of: str | None = None


class ZooModel(nn.Module):
    """Base class of every visionzoo classifier (see the module docstring for the contract).

    A family describes its network once, as ``trunk()``: the modules of the backbone in execution
    order, each marked when its output is a ``feature_info`` map. ``forward_features``,
    ``forward_intermediates``, ``prune_intermediate_layers`` and gradient checkpointing all run
    that one list, so they cannot disagree.
    """

    feature_info: list[dict]
    num_classes: int
    num_features: int
    in_chans: int
    model_name: str = ""
    grad_checkpointing: bool = False

    # -- the backbone ---------------------------------------------------------------------------

    def trunk(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], bool]]:
        """``[(step, is_feature), ...]`` in execution order. The default is the common layout
        ``stem -> pool -> stages`` (ResNet, ShuffleNet, ...): the stem output and each stage's
        are the feature maps."""
        return [(self.stem, True), (self.pool, False), *((s, True) for s in self.stages)]

    def _run(self, step: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(step, x, use_reentrant=False)  # recompute in backward
        return step(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)
        for step, _ in self.trunk():
            x = self._run(step, x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's signature and semantics: ``(final_features, [maps])``, the maps at
        ``indices`` of ``feature_info`` (all by default; an int n: the last n), or only the list
        when ``intermediates_only``. ``stop_early`` stops after the last map asked for (the
        "final" output is then that partial map). ``norm`` applies a final norm the model keeps
        outside its trunk to the last map (Swin); in these CNNs the trunk includes it.
        ``output_fmt`` "NCHW" (default) or "NHWC"."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC'; got {output_fmt!r}")
        take, last = feature_take_indices(len(self.feature_info), indices)
        x = self.check_input(x)
        maps: list[torch.Tensor] = []
        feature = 0
        for step, is_feature in self.trunk():
            x = self._run(step, x)
            if is_feature:
                if feature in take:
                    maps.append(x if output_fmt == "NCHW" else x.permute(0, 2, 3, 1))
                feature += 1
                if stop_early and feature > last:
                    break
        if intermediates_only:
            return maps
        return x, maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop every trunk module after the last map in ``indices`` (and, with ``prune_head``,
        the head), so an encoder stores and runs only what it returns. Returns the kept feature
        positions (timm's semantics)."""
        take, last = feature_take_indices(len(self.feature_info), indices)
        names = {id(m): n for n, m in self.named_modules()}
        feature, cut, dropped = 0, False, []
        for step, is_feature in self.trunk():
            if cut:
                owner = step if isinstance(step, nn.Module) else getattr(step, "__self__", None)
                if id(owner) not in names:
                    raise RuntimeError(f"cannot prune trunk step {step!r}: not a submodule")
                dropped.append(names[id(owner)])
            if is_feature:
                feature += 1
                cut = cut or feature > last
        for name in dropped:  # outermost first: a step inside a dropped module goes with it
            if any(name.startswith(d + ".") for d in dropped if d != name):
                continue
            parent, _, leaf = name.rpartition(".")
            setattr(self.get_submodule(parent) if parent else self, leaf, nn.Identity())
        self.feature_info = self.feature_info[:last + 1]
        if prune_head:
            self.remove_head()
        return take

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each trunk step's activations in backward instead of storing them
        (``torch.utils.checkpoint``): the same gradients for a fraction of the memory."""
        self.grad_checkpointing = bool(enable)

    # -- the head -------------------------------------------------------------------------------

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if isinstance(self.head, nn.Identity):  # removed (features_only, pruned)
            return x
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: the classifier's input (4096 for the
        fc6/fc7 heads of AlexNet and VGG, ``num_features`` where the head only pools)."""
        return getattr(self.head, "hidden_size", self.num_features)

    @property
    def global_pool(self) -> str:
        return getattr(self.head, "pool_type", "")

    def get_classifier(self) -> nn.Module:
        return getattr(self.head, "fc", nn.Identity())

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, forward returns pooled features);
        ``global_pool`` "avg", "max" or "" (no pooling: forward returns the map)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0; got {num_classes}")
        if isinstance(self.head, nn.Identity):
            raise ValueError("this model's head was removed (features_only / pruned)")
        if global_pool is not None and not hasattr(self.head, "pool_type"):
            raise ValueError(f"{self.model_name or type(self).__name__}'s head does not pool "
                             f"globally, so global_pool does not apply")
        if global_pool is None:
            self.head.reset(num_classes)
        else:
            self.head.reset(num_classes, global_pool)
        self.num_classes = num_classes
        if "num_classes" in self.__dict__.get("_pretrained_cfg", {}):
            self._pretrained_cfg["num_classes"] = num_classes

    def remove_head(self) -> None:
        """Drop the whole head (``features_only``): the backbone stores no classifier weights,
        hidden FC layers (AlexNet/VGG fc6, fc7) included."""
        self.head = nn.Identity()
        self.num_classes = 0

    # -- description ----------------------------------------------------------------------------

    @property
    def pretrained_cfg(self) -> dict:
        """timm's keys: input_size, mean, std, crop_pct, interpolation (what the family sets),
        and num_classes, pool_size, first_conv, classifier, fixed_input_size, min_input_size
        (filled in from the model itself). The same dict object each time, so updates stick."""
        cfg = self.__dict__.setdefault("_pretrained_cfg", default_cfg())
        size = tuple(cfg.get("input_size", (self.in_chans, 224, 224)))
        cfg["num_classes"] = self.num_classes
        cfg.setdefault("pool_size", self.feature_size(size[1:]))
        cfg.setdefault("first_conv", self._first_conv())
        cfg.setdefault("classifier", "head.fc")
        cfg.setdefault("fixed_input_size", False)
        if "min_input_size" not in cfg and self.model_name in MIN_INPUT_SIZES:
            m = MIN_INPUT_SIZES[self.model_name]
            cfg["min_input_size"] = (size[0], m, m)
        return cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: Mapping[str, Any]) -> None:
        self.__dict__["_pretrained_cfg"] = dict(cfg)

    @property
    def default_cfg(self) -> dict:  # timm's older name
        return self.pretrained_cfg

    def _first_conv(self) -> str:
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                return name
        return ""

    def feature_size(self, hw: Sequence[int]) -> tuple[int, int]:
        """(H, W) of ``forward_features`` for an (H, W) input: sides divide by the last map's
        reduction, rounding up (padded convs and pools); "border" entries (unpadded AlexNet
        layers) subtract a border first."""
        f = self.feature_info[-1]
        r, b = f["reduction"], f.get("border")
        if b is not None:
            return tuple((s - b) // r + 1 for s in hw)
        return tuple(-(-s // r) for s in hw)

    def stage_specs(self) -> list[StageSpec]:
        return []

    def no_weight_decay(self) -> set[str]:
        return set()

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x``, or a one-line ValueError naming the expected (N, in_chans, H, W)."""
        return check_batch(x, self.in_chans, self.model_name or type(self).__name__)

    def init_weights(self) -> None:
        """He (fan-out) init for convs, unit/zero BN, small-normal linear layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


class FeatureInfo(list):
    """``feature_info`` of a backbone: the list of dicts, plus timm's accessors."""

    def channels(self) -> list[int]:
        return [f["channels"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class FeatureExtractor(nn.Module):
    """A backbone view of a ZooModel: forward returns the selected stage maps (NCHW).

    The model is pruned after the last selected map (``prune_intermediate_layers``), so neither
    the classifier nor unused stages are stored or run.
    """

    def __init__(self, model: ZooModel, out_indices: Sequence[int] | None = None):
        super().__init__()
        n = len(model.feature_info)
        out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        for i in out_indices:
            if not -n <= i < n:
                raise ValueError(f"out_indices {out_indices} out of range for {n} feature stages")
        self.out_indices = tuple(i % n for i in out_indices)
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)
        # maps come un-normed (forward_intermediates' default), so a final norm kept outside
        # the trunk (Swin's) goes too, as timm's feature wrapper does
        model.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self.model = model
        self.model_name = getattr(model, "model_name", "")
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    @property
    def channels(self) -> list[int]:
        return self.feature_info.channels()

    @property
    def reductions(self) -> list[int]:
        return self.feature_info.reduction()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices,
                                                intermediates_only=True)


def shortcut_zero_pad(x: torch.Tensor, extra_chs: int, stride: int) -> torch.Tensor:
    """Parameter-free shortcut: subsample by ``stride`` and append ``extra_chs`` zero channels.

    (ResNet paper §3.3, option A.) The counts are the block's, known when it is built, so the
    function is the same graph for every input (it traces).
    """
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    if extra_chs > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, extra_chs))  # pad the channel dim (dim 1) at its end
    return x


@torch.no_grad()
def randomize_weights_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded random values for every parameter and persistent buffer, BN statistics included.

    For checks whose meaning needs every tensor to matter: a port that swaps two tensors shows in
    the logits, and an export's parity is not tested on all-zero or 1e5-sized logits (what default
    inits give for zero-initialised classifiers or untrained DenseNets). Scales keep logits O(1):
    fan-in scaled weights, positive norm scales and variances, small biases and means. Derived
    buffers (Swin's index tables and shift masks) are not in ``state_dict`` and keep their values.
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", ".bias")):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        elif name.endswith(("norm.weight", "bn.weight")) or ".bn" in name and name.endswith(
                "weight"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            fan_in = t[0].numel() if t.ndim > 1 else 1
            t.copy_(torch.randn(t.shape, generator=g) / max(fan_in, 1) ** 0.5)
    return model


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal linear weights (transformer convention), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one spatial dim."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _same_total(size, kernel: int, stride: int, dilation: int):
    """Total TF "SAME" padding of one dim: ``(ceil(n/s) - 1) * s + (k-1)*d + 1 - n``, >= 0.

    Written as ``(-n) % s + (k-1)*d + 1 - s`` (equal when the dilated kernel covers the stride), so
    it is plain integer arithmetic that ``torch.export`` can trace on a symbolic size.
    """
    span = (kernel - 1) * dilation + 1
    if span >= stride:
        return (-size) % stride + span - stride
    return max((math.ceil(size / stride) - 1) * stride + span - size, 0)


def same_is_symmetric(kernel: int, stride: int, dilation: int = 1) -> bool:
    """Is TF "SAME" padding the symmetric ``d * (k - 1) / 2`` for every input size? (True for
    stride 1 with an odd kernel: the padding then never depends on the input.)"""
    return stride == 1 and ((kernel - 1) * dilation) % 2 == 0


def pad_same(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int],
             dilation: Sequence[int] = (1, 1), value: float = 0.0) -> torch.Tensor:
    """Zero-pad ``x`` (N, C, H, W) as TensorFlow's "SAME": the odd pixel goes after (bottom/right).

    The amounts come from ``x``'s own size, so they are Python ints whenever the size is known
    (eager mode, or an export at a static input size: a constant ONNX ``Pad``), and symbolic
    arithmetic under a dynamic-shape export (a ``Pad`` computed from ``Shape``).
    """
    ph = _same_total(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    pw = _same_total(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    # F.pad order is (left, right, top, bottom): W first
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (the layout of TF-trained weights).

    TF pads ``total = (ceil(n/s) - 1) * s + k - n`` and puts the odd pixel at the bottom/right;
    PyTorch's symmetric padding puts the same amount on both sides. The two differ only when the
    total is odd, which for odd kernels happens only with stride > 1 (on even sizes), so
    ``create_conv2d`` uses this class only there. Parameters and state-dict keys are those of
    ``nn.Conv2d``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_chs, out_chs, kernel_size, stride, 0, dilation=dilation,
                         groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride, self.dilation))


def create_conv2d(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                  padding: int | str | None = None, dilation: int = 1, groups: int = 1,
                  bias: bool = True) -> nn.Conv2d:
    """A conv with ``padding``: an int, None (symmetric ``d * (k - 1) // 2``) or "same" (TF).

    "same" gives a plain ``nn.Conv2d`` with static symmetric padding where that is what SAME
    means for every input size (stride 1, odd kernel), and a ``Conv2dSame`` otherwise.
    """
    if padding == "same":
        if not same_is_symmetric(kernel_size, stride, dilation):
            return Conv2dSame(in_chs, out_chs, kernel_size, stride, dilation, groups, bias)
        padding = None
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    if not isinstance(padding, int):
        raise ValueError(f"padding must be an int, None or 'same'; got {padding!r}")
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation,
                     groups=groups, bias=bias)
