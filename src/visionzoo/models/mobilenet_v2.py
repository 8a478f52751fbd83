"""MobileNet V2 — Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and
Linear Bottlenecks." CVPR 2018. arXiv 1801.04381.

Paper map
---------
* §3.2-3.3, Fig. 3b, Table 1: the bottleneck residual block ("inverted residual with linear
  bottleneck"): 1x1 expansion by t with ReLU6, 3x3 depthwise of stride s with ReLU6, *linear*
  1x1 projection to c'; the shortcut joins the thin bottlenecks when s = 1 and c = c'
                                                                          -> ``InvertedResidual``
* Table 2: the body (conv2d 32/2, seven bottleneck rows (t, c, n, s), conv2d 1x1 1280, avgpool,
  conv2d 1x1 k), with Table 2's rows as literal data                   -> ``TABLE2``
* §4 "Trade-off hyper parameters": every layer thinned by the multiplier, "except the very last
  convolutional layer" for multipliers below one (1280 stays 1280; 1.4 widens it to 1792)
                                                     -> ``width_mult``, ``last_channels()``
* §4: ReLU6 for its robustness in low precision.

Defaults and deviations
-----------------------
* Channel rounding: the paper does not say; the authors' TF code (``mobilenet_v2.py`` in
  tensorflow/models research/slim) rounds every thinned width to a multiple of 8, up when rounding
  would lose more than 10 % (``make_divisible``). We do the same, and so do torchvision and timm:
  all three agree layer for layer at 0.35, 0.5, 0.75, 1.0 and 1.4 (the test suite checks it).
* t = 1 (the first bottleneck row): there is nothing to expand, and the authors' code leaves the
  1x1 expansion out (it is built only when it widens). The paper's 300 M multiply-adds count it
  out too (with it: 313.6 M).
* Published counts: the authors count parameters without batch norm (their checkpoint table's
  3.47 M = conv and FC weights only; ours, with BN's scale and shift, is 3.50 M): the verify rows
  take our BN parameters out (``Published.excluded``) before comparing. They truncate
  multiply-adds (300.77 M printed "300", 153.94 M printed "153"); their table rounds parameters
  (2.6098 M printed "2.61") while Table 4 truncates them (3.4708 M printed "3.4").
* Table 4 prints 585 M multiply-adds and 6.9 M parameters for MobileNetV2 (1.4); the authors'
  checkpoint table gives 582 M and 6.06 M for the same network, which ours reproduces exactly
  (582.20 M, 6.0608 M without BN). No layout consistent with the paper gives 585 M / 6.9 M, so
  those two figures are recorded in ``ModelInfo.notes``, not verified.
* Dropout before the classifier: not in the paper; the authors' code uses keep probability 0.8,
  so ``drop_rate=0.2`` (no effect in evaluation).

Ablation switches (§6.4 / Fig. 6 of the paper; not deviations: the defaults are the paper's net)
----------------------------------------------------------------------------------------------
* ``linear_bottleneck=False``: Fig. 6a's "ReLU6 in bottleneck": a ReLU6 after the projection
  1x1 conv + BN of every block (before the shortcut's addition). Parameter-free.
* ``shortcut`` (Fig. 6b), parameter-free, the same state-dict keys and MACs in every setting:
  - ``"bottleneck"`` (default): the shortcut joins the thin bottlenecks (Fig. 3b);
  - ``"none"`` (alias None, as ResNet spells it): "No residual": no block adds anything;
  - ``"expansion"``: "Shortcut between expansions". The paper gives one sentence (§6.4:
    shortcuts "connecting the expanded layers") and no layout. We read it as the classical
    residual of Fig. 3a laid over the same layers, joining the wide tensors across the
    bottleneck: each block that has the default's shortcut (s = 1, c = c') adds its expansion
    output (1x1 conv + BN + ReLU6, t·c channels) to the *next* block's expansion output, which
    then feeds that block's depthwise conv; sums carry on, so the expanded tensors form the
    residual stream (y = x + F(x), F = depthwise, projection, next expansion). The same 10
    additions as the default, the same layers, parameters, keys and MACs; the joined tensors
    always agree in shape (t = 6 after every shortcut; the constructor checks it). A choice the
    paper leaves open: the sum is taken after the ReLU6, on the expansion output as it is.
    The stream crosses the ends of Table 2's rows 2-6 (their last block joins the next row's
    first expansion), so those rows are no longer single-tensor stages: the trunk runs all
    rows as one step and ``feature_info`` keeps only the last conv's map.
  ``drop_path_rate`` (not in the paper) is defined for the default's shortcuts only and is
  refused with ``"expansion"`` and ``"none"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from visionzoo.layers import (
    ClassifierHead,
    ConvNormAct,
    DropPath,
    StageSpec,
    ZooModel,
    default_cfg,
    make_divisible,
)
from visionzoo.registry import ModelInfo, Published, Variant, register_model

__all__ = ["BottleneckRow", "ExpansionShortcutBlock", "InvertedResidual", "MobileNetV2",
           "TABLE2"]


@dataclass(frozen=True)
class BottleneckRow:
    """One bottleneck row of Table 2: expansion factor t, output channels c, repeats n, and the
    stride s of the first of the n blocks (the others have stride 1)."""

    t: int
    c: int
    n: int
    s: int


STEM_CHANNELS = 32  # Table 2, first row: conv2d, c = 32, s = 2
TABLE2 = (  # MobileNetV2 Table 2, the seven bottleneck rows
    BottleneckRow(t=1, c=16, n=1, s=1),
    BottleneckRow(t=6, c=24, n=2, s=2),
    BottleneckRow(t=6, c=32, n=3, s=2),
    BottleneckRow(t=6, c=64, n=4, s=2),
    BottleneckRow(t=6, c=96, n=3, s=1),
    BottleneckRow(t=6, c=160, n=3, s=2),
    BottleneckRow(t=6, c=320, n=1, s=1),
)
LAST_CHANNELS = 1280  # Table 2: conv2d 1x1, c = 1280
FEATURE_ROWS = (0, 1, 2, 4)  # Table 2 rows ending a resolution (1/2, 1/4, 1/8, 1/16) before 1/32


def scale_channels(channels: int, width_mult: float) -> int:
    """A thinned width, rounded to a multiple of 8 as in the authors' code."""
    return make_divisible(channels * width_mult, 8)


def last_channels(width_mult: float) -> int:
    """§4: the last conv is not thinned for multipliers below one (1280), widened above."""
    return make_divisible(LAST_CHANNELS * max(1.0, width_mult), 8)


def channel_plan(width_mult: float) -> tuple[int, ...]:
    """Output channels of the stem, of each Table 2 bottleneck row and of the last conv."""
    return (scale_channels(STEM_CHANNELS, width_mult),
            *(scale_channels(r.c, width_mult) for r in TABLE2), last_channels(width_mult))


SHORTCUTS = ("bottleneck", "expansion", "none")  # Fig. 6b's three settings (``shortcut``)


class InvertedResidual(nn.Module):
    """Table 1 / Fig. 3b: 1x1 conv (k -> tk) + ReLU6, 3x3 depthwise stride s + ReLU6,
    linear 1x1 conv (tk -> k'). The shortcut connects the bottlenecks when s = 1 and k = k'.

    With t = 1 there is no expansion conv (see the module docstring). Ablation switches (module
    docstring): ``linear_bottleneck=False`` puts a ReLU6 after the projection (Fig. 6a);
    ``shortcut=False`` leaves the shortcut out (Fig. 6b, "no residual").
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: int,
                 act: type[nn.Module] = nn.ReLU6, drop_path: float = 0.0,
                 linear_bottleneck: bool = True, shortcut: bool = True):
        super().__init__()
        hidden = in_chs * expand
        self.expand = ConvNormAct(in_chs, hidden, 1, act=act) if expand != 1 else nn.Identity()
        self.dw = ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, act=act)
        # linear bottleneck: no ReLU after the projection (Fig. 6a's ablation puts ReLU6 there)
        self.project = ConvNormAct(hidden, out_chs, 1, act=None if linear_bottleneck else act)
        self.has_shortcut = shortcut and stride == 1 and in_chs == out_chs
        use_drop = drop_path > 0 and self.has_shortcut
        self.drop_path = DropPath(drop_path) if use_drop else nn.Identity()
        self.in_chs, self.out_chs, self.stride, self.t = in_chs, out_chs, stride, expand
        self.hidden_chs = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.dw(self.expand(x)))
        if self.has_shortcut:
            return x + self.drop_path(out)
        return out


class ExpansionShortcutBlock(InvertedResidual):
    """Fig. 6b's "shortcut between expansions" (an ablation switch, see the module docstring):
    the layers of ``InvertedResidual``, the shortcut moved from the bottlenecks to the expanded
    tensors. It maps (input, incoming stream) to (output, outgoing stream): the incoming stream
    (or None) is added to this block's expansion, and a block that has the default's shortcut
    (s = 1, k = k') passes its expansion on to the next block's.
    """

    def forward(  # type: ignore[override]
            self, pair: tuple[torch.Tensor, torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, stream = pair
        expanded = self.expand(x)
        if stream is not None:
            expanded = expanded + stream  # y = x + F(x) between the expansions
        out = self.project(self.dw(expanded))
        return out, expanded if self.has_shortcut else None


class MobileNetV2(ZooModel):
    """Table 2: conv2d 3x3/2, the bottleneck rows, conv2d 1x1 to 1280, average pool, classifier.

    ``stages[i]`` holds the n blocks of Table 2's i-th bottleneck row.

    Ablation switches of Fig. 6 (module docstring), kept as attributes of the same name:
    ``linear_bottleneck=False`` (ReLU6 after every projection) and ``shortcut`` ("bottleneck",
    the paper's; "expansion"; "none", or None).
    """

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.2, drop_path_rate: float = 0.0, global_pool: str = "avg",
                 linear_bottleneck: bool = True, shortcut: str | None = "bottleneck"):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult (§4) must be positive; got {width_mult}")
        if shortcut is None:  # an alias, as ResNet spells its plain network
            shortcut = "none"
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(map(repr, SHORTCUTS))} "
                             f"(Fig. 6b: between bottlenecks, between expansions, no residual; "
                             f"None is 'none'); got {shortcut!r}")
        if shortcut != "bottleneck" and drop_path_rate > 0:
            raise ValueError(f"drop_path_rate is defined for the shortcuts between bottlenecks "
                             f"only; got it with shortcut={shortcut!r}")
        self.num_classes, self.in_chans, self.width_mult = num_classes, in_chans, width_mult
        self.linear_bottleneck, self.shortcut = linear_bottleneck, shortcut
        block_type = ExpansionShortcutBlock if shortcut == "expansion" else InvertedResidual
        act = nn.ReLU6
        stem_chs = scale_channels(STEM_CHANNELS, width_mult)
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=2, act=act)
        total, idx = sum(r.n for r in TABLE2), 0
        in_chs, reduction = stem_chs, 2
        stages = []
        self.feature_info = []
        for i, row in enumerate(TABLE2):
            out_chs = scale_channels(row.c, width_mult)
            blocks = []
            for j in range(row.n):
                blocks.append(block_type(in_chs, out_chs, row.s if j == 0 else 1, row.t, act,
                                         drop_path_rate * idx / max(total - 1, 1),
                                         linear_bottleneck, shortcut != "none"))
                in_chs, idx = out_chs, idx + 1
            reduction *= row.s
            stages.append(nn.Sequential(*blocks))
            if i in FEATURE_ROWS:
                self.feature_info.append(
                    {"name": f"bottleneck{i + 1}", "channels": out_chs, "reduction": reduction,
                     "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        if shortcut == "expansion":
            # the rows' ends are no longer single-tensor stages (see the module docstring)
            self.feature_info = []
            blocks = [b for stage in stages for b in stage]
            for block, after in zip(blocks, [*blocks[1:], None], strict=True):
                if block.has_shortcut and (after is None or after.hidden_chs != block.hidden_chs):
                    raise ValueError("shortcut='expansion' needs the block after each shortcut "
                                     "to expand to the same width")
        self.num_features = last_channels(width_mult)
        self.last_conv = ConvNormAct(in_chs, self.num_features, 1, act=act)
        self.feature_info.append(
            {"name": "conv2d_1x1", "channels": self.num_features, "reduction": reduction,
             "module": "last_conv"})
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate, global_pool)
        self.pretrained_cfg = default_cfg()
        self.init_weights()

    def trunk(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], bool]]:
        """Table 2 top to bottom: conv2d, the bottleneck rows (the last of each resolution is
        a map), conv2d 1x1. With ``shortcut="expansion"`` the rows are one step."""
        if self.shortcut == "expansion":
            return [(self.stem, False), (self.forward_expansion_shortcuts, False),
                    (self.last_conv, True)]
        return [(self.stem, False), *((s, i in FEATURE_ROWS) for i, s in enumerate(self.stages)),
                (self.last_conv, True)]

    def forward_expansion_shortcuts(self, x: torch.Tensor) -> torch.Tensor:
        """All bottleneck rows with Fig. 6b's "shortcut between expansions": the stream of
        expanded tensors runs from block to block, across the rows' ends."""
        out, _ = self.stages((x, None))
        return out

    def stage_specs(self) -> list[StageSpec]:
        """Table 2's rows: operator, t, c, n, s (c after the width multiplier)."""
        stem = self.stem.conv
        specs = [StageSpec("conv2d", ("stem",), f"conv2d 3x3, c={stem.out_channels}, s=2")]
        for i, (row, stage) in enumerate(zip(TABLE2, self.stages, strict=True)):
            specs.append(StageSpec(
                f"bottleneck{i + 1}", (f"stages.{i}",),
                f"bottleneck t={row.t}, c={stage[0].out_chs}, n={row.n}, s={row.s}", row.n))
        specs.append(StageSpec("conv2d_1x1", ("last_conv",), f"conv2d 1x1, c={self.num_features}"))
        k = f"; conv2d 1x1, k={self.num_classes}" if self.num_classes else ""
        specs.append(StageSpec("avgpool", ("head",), f"avgpool 7x7{k}"))
        return specs


# ---------------------------------------------------------------------------------------------
# Registered variants: the width multipliers of §4 (Table 4 and the authors' checkpoint table)
# ---------------------------------------------------------------------------------------------

PAPER = "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
ARXIV = "1801.04381"
CKPT = "authors' checkpoint table (TF-slim nets/mobilenet/README.md)"
_TRUNC = "the authors truncate: {measured} M measured, printed {text}"


def _authors_params(text: str, source: str, bn_params: int, rounding: str = "round") -> Published:
    """The authors count parameters without batch norm; ours include BN's scale and shift, which
    the comparison takes out. (Their checkpoint table rounds parameters, Table 4 truncates.)"""
    return Published(
        "params", text, "M", source, rounding=rounding, excluded=bn_params / 1e6,
        note=f"the authors count conv and FC weights only; our count less its {bn_params:,} "
             f"batch-norm parameters (scale and shift) is compared"
             + ("; Table 4 truncates (3.47 M printed 3.4)" if rounding == "truncate" else ""))


def _info(width: str, macs: str, macs_measured: str, params: str, bn_params: int, exact: int,
          resolutions: dict[int, str], references: dict[str, str],
          extra: tuple[Published, ...] = (), notes: str = "") -> ModelInfo:
    published = (
        Published("macs", macs, "M", CKPT, rounding="truncate",
                  note=_TRUNC.format(measured=macs_measured, text=macs)),
        _authors_params(params, CKPT, bn_params),
        *extra,
    )
    variants = tuple(
        Variant(label=f"mobilenet_v2_{width}_{size}", input_size=(3, size, size),
                published=(Published("macs", m, "M", CKPT, rounding="truncate",
                                     note="the authors truncate their MAC counts"),))
        for size, m in resolutions.items())
    return ModelInfo(
        paper=PAPER, arxiv=ARXIV, family="mobilenet_v2", published=published, num_params=exact,
        variants=variants, references=references,
        notes=f"width multiplier {width} (§4); {notes}".rstrip("; "),
    )


_TV_WIDTHS = ("torchvision's mobilenet_v2(width_mult=w) builds this network too; "
              "port('torchvision', 'mobilenet_v2', sd) recognises the width from the tensors")


@register_model(_info(
    "1.0", "300", "300.77", "3.47", 34_112, 3_504_872,
    {192: "221", 160: "154", 128: "99", 96: "56"},
    {"torchvision": "mobilenet_v2", "timm": "mobilenetv2_100"},
    extra=(Published("macs", "300", "M", "Table 4 (MAdds)", rounding="truncate",
                     note=_TRUNC.format(measured="300.77", text="300")),
           _authors_params("3.4", "Table 4 (Params)", 34_112, "truncate"),
           Published("top1", "72.0", "%", "Table 4 (ImageNet Top 1)"))))
def mobilenet_v2(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 1.0, **kwargs})


@register_model(_info(
    "1.4", "582", "582.20", "6.06", 47_936, 6_108_776, {},
    {"timm": "mobilenetv2_140"},
    extra=(Published("top1", "74.7", "%", "Table 4 (ImageNet Top 1)"),),
    notes="Table 4 prints 585 M MAdds and 6.9 M parameters for this network; the authors' "
          "checkpoint table (582 M, 6.06 M) and our count (582.20 M; 6.0608 M without BN) agree, "
          "Table 4's pair matches no layout we could build (see the module docstring); "
          + _TV_WIDTHS))
def mobilenet_v2_x1_4(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 1.4, **kwargs})


@register_model(_info(
    "0.75", "209", "209.07", "2.61", 26_640, 2_636_424,
    {192: "153", 160: "107", 128: "69", 96: "39"},
    {"timm": "mobilenetv2_075"}, notes=_TV_WIDTHS))
def mobilenet_v2_x0_75(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 0.75, **kwargs})


@register_model(_info(
    "0.5", "97", "97.13", "1.95", 18_544, 1_968_680,
    {192: "71", 160: "50", 128: "32", 96: "18"},
    {"timm": "mobilenetv2_050"}, notes=_TV_WIDTHS))
def mobilenet_v2_x0_5(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 0.5, **kwargs})


@register_model(_info(
    "0.35", "59", "59.29", "1.66", 14_080, 1_677_128,
    {192: "43", 160: "30", 128: "20", 96: "11"},
    {"timm": "mobilenetv2_035"}, notes=_TV_WIDTHS))
def mobilenet_v2_x0_35(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 0.35, **kwargs})
