"""MobileNet V1 / V2 keys of timm and torchvision. (ShuffleNet V1: ports/shufflenet.py.)

* timm ``mobilenetv1_100`` (and ``mobilenetv1_125``, width 1.25): ReLU6, so ``act="relu6"``;
  its ``blocks.i.j`` are our ``stages.i.j`` (one stage per resolution in both).
* timm ``mobilenetv2_035/050/075/100/140``: the authors' rounding, layer for layer ours; its
  first block is a "depthwise separable" block (no expansion), as ours is for t = 1.
* torchvision ``mobilenet_v2``: one builder for every width (``width_mult``), so the port reads
  the width from the tensor shapes: a paper width gives that registered model
  (``mobilenet_v2_x0_5``, ...); any other width gives ``mobilenet_v2`` with ``width_mult=w``
  (the simplest w that reproduces every layer's channels). torchvision's ``round_nearest``
  other than 8 and custom ``inverted_residual_setting`` are not ours and are refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from functools import cache
from typing import Any

from visionzoo.layers import default_cfg
from visionzoo.models.mobilenet_v2 import LAST_CHANNELS, STEM_CHANNELS, TABLE2, channel_plan
from visionzoo.ports import PortError, StateDict, register_port, rename_keys

# ---------------------------------------------------------------------------------------------
# MobileNet V1 (timm)
# ---------------------------------------------------------------------------------------------

_V1_TIMM_RULES = [
    (r"conv_stem\.weight", r"stem.conv.weight"),
    (r"bn1\.(.+)", r"stem.norm.\1"),
    (r"blocks\.(\d+)\.(\d+)\.conv_dw\.weight", r"stages.\1.\2.dw.conv.weight"),
    (r"blocks\.(\d+)\.(\d+)\.bn1\.(.+)", r"stages.\1.\2.dw.norm.\3"),
    (r"blocks\.(\d+)\.(\d+)\.conv_pw\.weight", r"stages.\1.\2.pw.conv.weight"),
    (r"blocks\.(\d+)\.(\d+)\.bn2\.(.+)", r"stages.\1.\2.pw.norm.\3"),
    (r"classifier\.(weight|bias)", r"head.fc.\1"),
]


def convert_mobilenet_v1_timm(sd: StateDict) -> StateDict:
    return rename_keys(sd, _V1_TIMM_RULES)


# timm's ra4 weights: Inception mean/std (0.5), bicubic, crop 0.875 at 224
_V1_TIMM_CFG = default_cfg(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
register_port("timm", "mobilenetv1_100", "mobilenet_v1", convert_mobilenet_v1_timm,
              {"act": "relu6"}, _V1_TIMM_CFG)
register_port("timm", "mobilenetv1_125", "mobilenet_v1", convert_mobilenet_v1_timm,
              {"act": "relu6", "width_mult": 1.25}, _V1_TIMM_CFG)

# ---------------------------------------------------------------------------------------------
# MobileNet V2 (timm)
# ---------------------------------------------------------------------------------------------

_V2_TIMM_RULES = [
    (r"conv_stem\.weight", r"stem.conv.weight"),
    (r"bn1\.(.+)", r"stem.norm.\1"),
    # blocks.0: t = 1, depthwise separable (dw -> linear pw)
    (r"blocks\.0\.0\.conv_dw\.weight", r"stages.0.0.dw.conv.weight"),
    (r"blocks\.0\.0\.bn1\.(.+)", r"stages.0.0.dw.norm.\1"),
    (r"blocks\.0\.0\.conv_pw\.weight", r"stages.0.0.project.conv.weight"),
    (r"blocks\.0\.0\.bn2\.(.+)", r"stages.0.0.project.norm.\1"),
    # inverted residuals: conv_pw (expand) -> conv_dw -> conv_pwl (linear projection)
    (r"blocks\.(\d+)\.(\d+)\.conv_pw\.weight", r"stages.\1.\2.expand.conv.weight"),
    (r"blocks\.(\d+)\.(\d+)\.bn1\.(.+)", r"stages.\1.\2.expand.norm.\3"),
    (r"blocks\.(\d+)\.(\d+)\.conv_dw\.weight", r"stages.\1.\2.dw.conv.weight"),
    (r"blocks\.(\d+)\.(\d+)\.bn2\.(.+)", r"stages.\1.\2.dw.norm.\3"),
    (r"blocks\.(\d+)\.(\d+)\.conv_pwl\.weight", r"stages.\1.\2.project.conv.weight"),
    (r"blocks\.(\d+)\.(\d+)\.bn3\.(.+)", r"stages.\1.\2.project.norm.\3"),
    (r"conv_head\.weight", r"last_conv.conv.weight"),
    (r"bn2\.(.+)", r"last_conv.norm.\1"),
    (r"classifier\.(weight|bias)", r"head.fc.\1"),
]


def convert_mobilenet_v2_timm(sd: StateDict) -> StateDict:
    return rename_keys(sd, _V2_TIMM_RULES)


_TIMM_V2_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
_TIMM_V2 = {  # timm name -> (our name, published weights file or None)
    "mobilenetv2_035": ("mobilenet_v2_x0_35", None),
    "mobilenetv2_050": ("mobilenet_v2_x0_5", "mobilenetv2_050-3d30d450.pth"),
    "mobilenetv2_075": ("mobilenet_v2_x0_75", None),
    "mobilenetv2_100": ("mobilenet_v2", "mobilenetv2_100_ra-b33bc2c4.pth"),
    "mobilenetv2_140": ("mobilenet_v2_x1_4", "mobilenetv2_140_ra-21a4e913.pth"),
}
for _timm_name, (_ours, _file) in _TIMM_V2.items():
    register_port("timm", _timm_name, _ours, convert_mobilenet_v2_timm, {},
                  default_cfg(interpolation="bicubic"), _TIMM_V2_URL + _file if _file else None)

# ---------------------------------------------------------------------------------------------
# MobileNet V2 (torchvision, every width)
# ---------------------------------------------------------------------------------------------

# torchvision numbers the blocks 1..17 in one flat "features" list; ours are per Table 2 row
_TV_BLOCKS = {k + 1: (row, j) for k, (row, j) in enumerate(
    (i, j) for i, r in enumerate(TABLE2) for j in range(r.n))}
_TV_LAST = len(_TV_BLOCKS) + 1  # features.18: the 1x1 conv to 1280


def _tv_block(m: Any, part: str) -> str:
    row, j = _TV_BLOCKS[int(m[1])]
    return f"stages.{row}.{j}.{part}"


_TV_V2_RULES = [
    (r"features\.0\.0\.weight", r"stem.conv.weight"),
    (r"features\.0\.1\.(.+)", r"stem.norm.\1"),
    # features.1 (t = 1): conv.0 = dw (+BN, ReLU6), conv.1 = linear pw, conv.2 = its BN
    (r"features\.(1)\.conv\.0\.0\.weight", lambda m: _tv_block(m, "dw.conv.weight")),
    (r"features\.(1)\.conv\.0\.1\.(.+)", lambda m: _tv_block(m, f"dw.norm.{m[2]}")),
    (r"features\.(1)\.conv\.1\.weight", lambda m: _tv_block(m, "project.conv.weight")),
    (r"features\.(1)\.conv\.2\.(.+)", lambda m: _tv_block(m, f"project.norm.{m[2]}")),
    # features.2..17: conv.0 = expand, conv.1 = dw, conv.2 = linear pw, conv.3 = its BN
    (r"features\.(\d+)\.conv\.0\.0\.weight", lambda m: _tv_block(m, "expand.conv.weight")),
    (r"features\.(\d+)\.conv\.0\.1\.(.+)", lambda m: _tv_block(m, f"expand.norm.{m[2]}")),
    (r"features\.(\d+)\.conv\.1\.0\.weight", lambda m: _tv_block(m, "dw.conv.weight")),
    (r"features\.(\d+)\.conv\.1\.1\.(.+)", lambda m: _tv_block(m, f"dw.norm.{m[2]}")),
    (r"features\.(\d+)\.conv\.2\.weight", lambda m: _tv_block(m, "project.conv.weight")),
    (r"features\.(\d+)\.conv\.3\.(.+)", lambda m: _tv_block(m, f"project.norm.{m[2]}")),
    (rf"features\.{_TV_LAST}\.0\.weight", r"last_conv.conv.weight"),
    (rf"features\.{_TV_LAST}\.1\.(.+)", r"last_conv.norm.\1"),
    (r"classifier\.1\.(weight|bias)", r"head.fc.\1"),
]


def convert_mobilenet_v2_torchvision(sd: StateDict) -> StateDict:
    try:
        return rename_keys(sd, _TV_V2_RULES)
    except KeyError as e:  # a block index past Table 2's 17 (a custom inverted_residual_setting)
        raise PortError(f"torchvision mobilenet_v2 with blocks beyond Table 2's 17: {e}") from None


# our registered widths, tried first so a paper width gets its own name
_REGISTERED_WIDTHS = {1.0: "mobilenet_v2", 1.4: "mobilenet_v2_x1_4", 0.75: "mobilenet_v2_x0_75",
                      0.5: "mobilenet_v2_x0_5", 0.35: "mobilenet_v2_x0_35"}


@cache
def _candidate_widths(max_width: float = 4.0) -> tuple[float, ...]:
    """One width inside every interval on which ``channel_plan`` is constant, up to
    ``max_width``. A thinned width changes only where c * w crosses a rounding threshold of
    ``make_divisible`` (8k - 4) or its 10 % rule (8k / 0.9); between consecutive thresholds of all
    the layers the plan is constant, so those points and their midpoints cover every width."""
    bases = {STEM_CHANNELS, LAST_CHANNELS, *(r.c for r in TABLE2)}
    points = {p for c, k in itertools.product(bases, range(1, int(max_width * 1280 / 8) + 2))
              for p in ((8 * k - 4) / c, 8 * k / (0.9 * c)) if 0 < p <= max_width}
    points = sorted(points)
    mids = [(a + b) / 2 for a, b in zip(points, points[1:], strict=False)]
    return tuple(sorted(points + mids))


def infer_width(plan: tuple[int, ...]) -> float:
    """The width multiplier whose ``channel_plan`` is ``plan``: a registered one if it fits,
    else the value with the fewest decimals in the interval of widths that give it."""
    for w in _REGISTERED_WIDTHS:
        if channel_plan(w) == plan:
            return w
    for w in _candidate_widths():
        if channel_plan(w) == plan:
            for decimals in range(1, 7):
                nice = round(w, decimals)
                if nice > 0 and channel_plan(nice) == plan:
                    return nice
            return w
    raise PortError(f"no width multiplier (up to 4) gives MobileNetV2 channels {plan} with "
                    f"Table 2's rows and rounding to multiples of 8 (a torchvision round_nearest "
                    f"other than 8?)")


def resolve_mobilenet_v2(sd: StateDict) -> tuple[str, Mapping[str, Any]]:
    """Which of our MobileNetV2 networks a converted torchvision state dict is."""
    try:
        plan = (sd["stem.conv.weight"].shape[0],
                *(sd[f"stages.{i}.0.project.conv.weight"].shape[0] for i in range(len(TABLE2))),
                sd["last_conv.conv.weight"].shape[0])
    except KeyError as e:
        raise PortError(f"not a torchvision mobilenet_v2 state dict: {e} missing") from None
    width = infer_width(tuple(int(c) for c in plan))
    return _REGISTERED_WIDTHS.get(width, "mobilenet_v2"), {"width_mult": width}


register_port("torchvision", "mobilenet_v2", "mobilenet_v2", convert_mobilenet_v2_torchvision,
              {}, default_cfg(),  # IMAGENET1K_V1: resize 256, crop 224, bilinear
              "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
              resolve=resolve_mobilenet_v2)
