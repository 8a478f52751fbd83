"""MobileNet V1 — Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam. "MobileNets:
Efficient Convolutional Neural Networks for Mobile Vision Applications." arXiv 1704.04861.

Paper map
---------
* §3.1, Fig. 2-3: the depthwise separable convolution, a 3x3 depthwise conv (one filter per input
  channel) then a 1x1 pointwise conv, each followed by BN and ReLU     -> ``DepthwiseSeparable``
* Table 1: the body (a full 3x3/2 conv, 13 depthwise separable layers, 7x7 average pool, FC)
                                                                       -> ``TABLE1_STEM/_BODY``
* §3.3 "Width Multiplier": every layer's channels become alpha * M (alpha in {1, .75, .5, .25})
                                                           -> ``width_mult``; Table 6 -> names
* §3.4 "Resolution Multiplier": the same network at a smaller input. Nothing in the network
  changes (global pooling), so it is the input size: Table 7's 224/192/160/128 rows are
  ``Variant`` rows with that ``input_size``.
* Table 4 "Conv MobileNet" (full 3x3 convolutions in place of the separable ones)
                                                                       -> ``depthwise=False``
* Table 5 "Shallow MobileNet" (the five 14x14x512 separable layers removed) -> ``shallow=True``

Defaults and deviations
-----------------------
* Table 1 prints the last depthwise layer as "Conv dw / s2", but its input and output are both
  7x7x1024 (the table's own "Input Size" column), and the mult-adds of Table 6 need stride 1. We
  use stride 1, as every released implementation does.
* Width rounding: the authors' TensorFlow code (TF-slim ``mobilenet_v1.py``) scales a layer of d
  channels to ``max(int(d * alpha), 8)``. For the paper's multipliers this is exact (no rounding
  happens), so any rounding rule gives the same networks; other alphas use the authors' rule.
* Activation: the paper writes ReLU; the authors' TF code and timm's ``mobilenetv1_100`` use
  ReLU6. ``act="relu6"`` selects it (same parameters and MACs); ``port()`` sets it for timm.
* Parameter counts: ours include BN's scale and shift. The paper prints 4.2 / 2.6 / 1.3 / 0.5 M,
  to which our counts round with or without them.
* Counting conventions of the paper, found by measurement (each verify row notes its own):
  Tables 6-7 include the FC layer and round (568.74 M printed 569), except the 160 row, cut to
  290 (290.68 M); Table 4's "Conv MobileNet" leaves the FC layer out (4866.27 M without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from visionzoo.layers import ClassifierHead, ConvNormAct, StageSpec, ZooModel, default_cfg
from visionzoo.registry import Deviation, ModelInfo, Published, Variant, register_model

__all__ = ["ConvRow", "DepthwiseSeparable", "MobileNetV1", "SeparableRow"]


@dataclass(frozen=True)
class ConvRow:
    """A full convolution row of Table 1 ("Conv / s2, 3x3x3x32")."""

    kernel: int
    out: int
    stride: int


@dataclass(frozen=True)
class SeparableRow:
    """A "Conv dw / s, Conv / s1" pair of Table 1: a 3x3 depthwise conv of stride ``stride``
    followed by a 1x1 conv to ``out`` channels, the pair repeated ``repeats`` times."""

    stride: int
    out: int
    repeats: int = 1


TABLE1_STEM = ConvRow(kernel=3, out=32, stride=2)  # MobileNet Table 1, first row
TABLE1_BODY = (  # MobileNet Table 1, the 13 depthwise separable layers
    SeparableRow(stride=1, out=64),
    SeparableRow(stride=2, out=128),
    SeparableRow(stride=1, out=128),
    SeparableRow(stride=2, out=256),
    SeparableRow(stride=1, out=256),
    SeparableRow(stride=2, out=512),
    SeparableRow(stride=1, out=512, repeats=5),
    SeparableRow(stride=2, out=1024),
    SeparableRow(stride=1, out=1024),  # printed "s2"; its 7x7 input and output say s1
)
SHALLOW_ROW = 6  # Table 5's "Shallow MobileNet" drops this row (5 x 14x14x512)

_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class DepthwiseSeparable(nn.Module):
    """Fig. 3 right: 3x3 depthwise conv -> BN -> ReLU -> 1x1 pointwise conv -> BN -> ReLU.

    ``depthwise=False`` gives Fig. 3 left, the standard 3x3 conv it factorises (Table 4's
    "Conv MobileNet"); the module then has ``conv`` instead of ``dw``/``pw``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, act: type[nn.Module] = nn.ReLU,
                 depthwise: bool = True):
        super().__init__()
        self.depthwise = depthwise
        if depthwise:
            self.dw = ConvNormAct(in_chs, in_chs, 3, stride=stride, groups=in_chs, act=act)
            self.pw = ConvNormAct(in_chs, out_chs, 1, act=act)
        else:
            self.conv = ConvNormAct(in_chs, out_chs, 3, stride=stride, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise:
            return self.pw(self.dw(x))
        return self.conv(x)


def scale_channels(channels: int, width_mult: float, min_depth: int = 8) -> int:
    """alpha * M as the authors' TF code computes it: ``max(int(M * alpha), 8)``."""
    return max(int(channels * width_mult), min_depth)


class MobileNetV1(ZooModel):
    """Table 1: a 3x3/2 conv, 13 depthwise separable layers, global average pool, FC.

    The separable layers are grouped into five stages, one per output resolution (1/2 ... 1/32),
    for ``feature_info``; ``stage_specs()`` lists them as Table 1's rows.
    """

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 act: str = "relu", depthwise: bool = True, shallow: bool = False,
                 drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"act must be one of {sorted(_ACTS)}; got {act!r}")
        if width_mult <= 0:
            raise ValueError(f"width_mult (alpha, §3.3) must be positive; got {width_mult}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.width_mult, self.act = width_mult, act  # layout flags (see ports)
        self.depthwise, self.shallow = depthwise, shallow
        act_layer = _ACTS[act]

        stem_chs = scale_channels(TABLE1_STEM.out, width_mult)
        self.stem = ConvNormAct(in_chans, stem_chs, TABLE1_STEM.kernel, stride=TABLE1_STEM.stride,
                                act=act_layer)
        rows = [r for i, r in enumerate(TABLE1_BODY) if not (shallow and i == SHALLOW_ROW)]
        # one stage per output resolution: a new stage starts at every stride-2 row
        stages: list[list[nn.Module]] = []
        self._row_paths: list[tuple[SeparableRow, list[str]]] = []
        in_chs, reduction = stem_chs, TABLE1_STEM.stride
        self.feature_info = []
        for row in rows:
            if row.stride == 2 or not stages:
                if stages:
                    self.feature_info.append(self._feature(len(stages), in_chs, reduction))
                stages.append([])
            reduction *= row.stride
            out_chs = scale_channels(row.out, width_mult)
            paths = []
            for j in range(row.repeats):
                stride = row.stride if j == 0 else 1
                paths.append(f"stages.{len(stages) - 1}.{len(stages[-1])}")
                stages[-1].append(DepthwiseSeparable(in_chs, out_chs, stride, act_layer, depthwise))
                in_chs = out_chs
            self._row_paths.append((row, paths))
        self.feature_info.append(self._feature(len(stages), in_chs, reduction))
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, drop_rate, global_pool)
        self.pretrained_cfg = default_cfg()
        self.init_weights()

    @staticmethod
    def _feature(index: int, channels: int, reduction: int) -> dict:
        return {"name": f"stage{index}", "channels": channels, "reduction": reduction,
                "module": f"stages.{index - 1}"}

    def trunk(self) -> list[tuple[nn.Module, bool]]:
        """Conv2d_0, then one stage per output resolution; each stage's output is a map."""
        return [(self.stem, False), *((stage, True) for stage in self.stages)]

    def stage_specs(self) -> list[StageSpec]:
        """Table 1, row by row: "Type / Stride: Filter Shape". Rows are named like the layers of
        the authors' TF code (Conv2d_0, Conv2d_1_depthwise, Conv2d_1_pointwise, ...)."""
        conv = self.stem.conv
        k, s = conv.kernel_size[0], conv.stride[0]
        specs = [StageSpec("Conv2d_0", ("stem",), f"Conv / s{s}: {k}x{k}x{conv.in_channels}x"
                                                  f"{conv.out_channels}")]
        layer = 1
        for row, paths in self._row_paths:
            first = self.get_submodule(paths[0])
            last = layer + row.repeats - 1
            tf_name = f"Conv2d_{layer}" if row.repeats == 1 else f"Conv2d_{layer}..{last}"
            if not self.depthwise:  # Table 4's "Conv MobileNet": one full conv per row
                c = first.conv.conv
                desc = f"Conv / s{row.stride}: 3x3x{c.in_channels}x{c.out_channels}"
                repeated = row.repeats > 1
                specs.append(StageSpec(tf_name, tuple(paths),
                                       f"{row.repeats}x [{desc}]" if repeated else desc,
                                       row.repeats if repeated else None))
            elif row.repeats > 1:  # Table 1 prints the repeated pair as one "5x" row
                dw, pw = first.dw.conv, first.pw.conv
                desc = (f"{row.repeats}x [Conv dw / s{row.stride}: 3x3x{dw.in_channels} dw; "
                        f"Conv / s1: 1x1x{pw.in_channels}x{pw.out_channels}]")
                specs.append(StageSpec(tf_name, tuple(paths), desc, row.repeats))
            else:
                dw, pw = first.dw.conv, first.pw.conv
                specs.append(StageSpec(f"{tf_name}_depthwise", (f"{paths[0]}.dw",),
                                       f"Conv dw / s{row.stride}: 3x3x{dw.in_channels} dw"))
                specs.append(StageSpec(f"{tf_name}_pointwise", (f"{paths[0]}.pw",),
                                       f"Conv / s1: 1x1x{pw.in_channels}x{pw.out_channels}"))
            layer = last + 1
        fc = (f"; FC / s1: {self.num_features}x{self.num_classes}; Softmax"
              if self.num_classes else "")
        specs.append(StageSpec("Logits", ("head",), f"Avg Pool / s1: Pool 7x7 (global){fc}"))
        return specs


# ---------------------------------------------------------------------------------------------
# Registered variants: Table 6 (width multiplier), Table 7 (resolution) as Variant rows.
# ---------------------------------------------------------------------------------------------

PAPER = "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
ARXIV = "1704.04861"
_T6 = "Table 6 (million mult-adds)"
_T6P = "Table 6 (million parameters)"

_RELU6 = Deviation(
    flag="act='relu6'",
    summary="ReLU6 in place of the paper's ReLU, as in the authors' TF code and timm's "
            "mobilenetv1_100; same parameters and MACs; timm's weights need it",
    overrides={"act": "relu6"},
)


def _info(alpha: str, macs: str, params: str, top1: str, exact: int,
          variants: tuple[Variant, ...] = (), timm: str | None = None) -> ModelInfo:
    published = (
        Published("macs", macs, "M", _T6),
        Published("params", params, "M", _T6P),
        Published("top1", top1, "%", "Table 6 (ImageNet accuracy)"),
    )
    return ModelInfo(
        paper=PAPER, arxiv=ARXIV, family="mobilenet_v1", published=published, num_params=exact,
        deviations=(_RELU6,), variants=variants,
        references={"timm": timm} if timm else {},
        notes=f"width multiplier alpha = {alpha} (§3.3)",
    )


def _resolution(size: int, macs: str, top1: str, truncated: bool = False) -> Variant:
    """A Table 7 row: the 1.0 network at a smaller input (the resolution multiplier rho)."""
    note = ("the paper cuts this row to 290 (290.68 measured) while its other rows round "
            "(569 is 568.74); no single rounding reproduces all of Tables 6-7") if truncated else ""
    return Variant(
        label=f"1.0 MobileNet-{size} (Table 7)", input_size=(3, size, size),
        published=(Published("macs", macs, "M", "Table 7 (million mult-adds)", note=note,
                             rounding="truncate" if truncated else "round"),
                   Published("params", "4.2", "M", "Table 7 (million parameters)"),
                   Published("top1", top1, "%", "Table 7 (ImageNet accuracy)")),
    )


_V1_VARIANTS = (
    _resolution(192, "418", "69.1"),
    _resolution(160, "290", "67.2", truncated=True),
    _resolution(128, "186", "64.4"),
    Variant(label="Conv MobileNet (Table 4)", overrides={"depthwise": False},
            published=(Published("macs", "4866", "M", "Table 4 (million mult-adds)",
                                 excluded=1.024,
                                 note="this row of the paper leaves the FC layer out (1024x1000 "
                                      "mult-adds: 4866.27 M without it, 4867.29 M with it); "
                                      "Table 6's 569 keeps it (568.74 M; 567.72 M without)"),
                       Published("params", "29.3", "M", "Table 4 (million parameters)"))),
    Variant(label="Shallow MobileNet (Table 5)", overrides={"shallow": True},
            published=(Published("macs", "307", "M", "Table 5 (million mult-adds)"),
                       Published("params", "2.9", "M", "Table 5 (million parameters)"))),
)


@register_model(_info("1.0", "569", "4.2", "70.6", 4_231_976, _V1_VARIANTS, timm="mobilenetv1_100"))
def mobilenet_v1(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 1.0, **kwargs})


@register_model(_info("0.75", "325", "2.6", "68.4", 2_585_560))
def mobilenet_v1_x0_75(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 0.75, **kwargs})


@register_model(_info("0.5", "149", "1.3", "63.7", 1_331_592))
def mobilenet_v1_x0_5(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 0.5, **kwargs})


@register_model(_info("0.25", "41", "0.5", "50.6", 470_072))
def mobilenet_v1_x0_25(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 0.25, **kwargs})
