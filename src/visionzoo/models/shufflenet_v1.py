"""ShuffleNet V1 — Zhang, Zhou, Lin, Sun. "ShuffleNet: An Extremely Efficient Convolutional
Neural Network for Mobile Devices." CVPR 2018. arXiv 1707.01083.

Paper map
---------
* §3.1, Fig. 1: channel shuffle. A layer with g groups outputs g x n channels; reshape the channel
  dimension to (g, n), transpose to (n, g), flatten                      -> ``channel_shuffle``
* §3.1: pointwise group convolution (1x1 conv with g groups)      -> ``ConvNormAct(groups=g)``
* §3.2, Fig. 2(b): the ShuffleNet unit: 1x1 GConv + BN + ReLU, channel shuffle, 3x3 depthwise
  conv + BN (no ReLU), 1x1 GConv + BN, add the identity, ReLU            -> ``ShuffleUnit``
* Fig. 2(c): the stride-2 unit: a 3x3 average pool (stride 2) on the shortcut, stride 2 in the
  depthwise conv, and concatenation instead of addition           -> ``ShuffleUnit(stride=2)``
* §3.3: the bottleneck is 1/4 of the unit's output channels; "we do not apply group convolution
  on the first pointwise layer [of Stage 2] because the number of input channels is relatively
  small"                                                                 -> ``first_grouped=False``
* Table 1: Conv1 (3x3/2, 24), MaxPool (3x3/2), Stage 2-4 (one stride-2 unit, then 3 / 7 / 3
  stride-1 units), GlobalPool, FC; output channels for g = 1, 2, 3, 4, 8  -> ``TABLE1``
* §3.3 "ShuffleNet s x": the number of filters scaled by s (complexity ~ s^2)  -> ``scale``
* Complexity: the paper's "FLOPs" are multiply-adds ("the number of floating-point
  multiplication-adds"), i.e. our MACs. Tables 1, 2 and 5 are verify rows:
  - Table 1's five numbers (143 / 140 / 137 / 133 / 137 M) leave the FC layer out: only then do
    all five round to the printed ones (with it, g = 2, 4, 8 give 141, 134, 138 M).
  - Table 2 prints one nominal number per scale (140 / 38 / 13 M) for every g; Table 1 shows the
    1x networks behind its "140" at 133-143 M, so Table 2 rows pass within 5 %.
  - Tables 5 and 6 (1.5x: 292 M, 2x: 524 M) round exactly.

Defaults and deviations (where the paper is silent, the authors' released code decides:
megvii-model/ShuffleNet-Series, ``ShuffleNetV1/``, which covers g = 3 and g = 8 at 0.5x-2x)
-----------------------------------------------------------------------------------------------
* Conv1 width per scale: 12 / 24 / 24 / 48 channels at 0.5x / 1x / 1.5x / 2x as in the authors'
  code (1.5x keeps 24, not 36). At 0.25x, which the code lacks, it stays 12: Table 2's 13 M at
  0.25x needs it (with 24 x 0.25 = 6 channels, g = 1..4 give 10.8-11.3 M; with 12, 12.9-13.3 M).
* Divisibility by g at small scales: a grouped 1x1 conv needs its channels divisible by g.
  - The first unit's residual branch outputs (stage channels - Conv1 channels), concatenated to
    the pooled input; the authors' code widens Conv1 from 12 to 16 for g = 8 at 0.5x so that
    192 - 16 is divisible by 8. We apply that rule everywhere: Conv1 is rounded up to a multiple
    of g (g = 8 at 0.25x: 12 -> 16 as well).
  - Table 2's g = 8 columns (38 M at 0.5x, 13 M at 0.25x) add up with Conv1 rounded *down* to
    8 channels (36.6 / 12.4 M), not up (40.5 / 15.7 M; the authors' README itself says 40 M for
    0.5x g = 8): ``conv1_round="down"`` builds those, and the Table 2 rows use it.
  - The bottleneck: the authors' code takes (output channels) // 4. Where that is not a multiple
    of g (g = 2 at 0.5x: 25; g = 4 at 0.25x / 0.5x: 17, 34), it is rounded down to one.
    (The code's own configurations never need this; the paper's Table 2 rows for g = 2 and 4
    at 0.5x and 0.25x do.)
* Order of shuffle and depthwise conv: Fig. 2 shuffles before the depthwise conv; the authors'
  code shuffles after it. A depthwise conv acts per channel, so the two are the same function up
  to a permutation of the depthwise filters; we follow the figure.
* Shuffle direction: the paper's (g, n) -> (n, g) transpose; the authors' code reshapes to
  (n, g) and transposes back to (g, n), the inverse permutation (equally mixing). Weights
  trained with their code would need that permutation; no such port exists.
* Classifier: the paper's FC, with a bias (the authors' code has none: 1,000 parameters fewer;
  the rows of their README's parameter counts take it out).
* Their README prints 138 M for 1x g = 3, which measures 137.46 M (Table 1: 137); it rounds up
  there, and to nearest elsewhere (1x g = 8: 138.37 M printed 138). That row says so.
* Not reproduced: Table 5's "0.5x (shallow, g = 3)" and "2x (with SE)" rows, whose layers the
  paper does not specify.

Ablation switch (§4.1.2 / Table 3 of the paper; not a deviation: the default is the paper's net)
-----------------------------------------------------------------------------------------------
* ``shuffle=False``: Table 3's "no shuffle" rows (g = 3 and g = 8 at 1x, 0.5x, 0.25x): every
  unit skips the channel shuffle, so each group of the second pointwise GConv sees only its own
  group's channels. Parameter-free: the same state-dict keys, shapes and MACs. With g = 1 the
  shuffle is the identity anyway (the unit runs none), so the switch changes nothing there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.layers import ClassifierHead, ConvNormAct, StageSpec, ZooModel, default_cfg
from visionzoo.registry import ModelInfo, Published, Variant, register_model

__all__ = ["TABLE1", "ShuffleNetV1", "ShuffleUnit", "StageRow", "channel_shuffle",
           "shufflenet_plan"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """§3.1 / Fig. 1(c): reshape channels to (g, n), transpose to (n, g), flatten."""
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)  # (N, g*n, H, W) -> (N, g, n, H, W)
    x = x.transpose(1, 2)  # (N, g, n, H, W) -> (N, n, g, H, W)
    return x.reshape(n, c, h, w)  # (N, n, g, H, W) -> (N, n*g, H, W)


class ShuffleUnit(nn.Module):
    """Fig. 2(b) (stride 1: add) and Fig. 2(c) (stride 2: average-pooled shortcut, concat).

    ``out_chs`` is the unit's output; with stride 2 the residual branch makes
    ``out_chs - in_chs`` channels and the pooled input supplies the rest. ``shuffle=False``
    leaves the channel shuffle out (Table 3's ablation).
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int, groups: int,
                 first_grouped: bool = True, shuffle: bool = True):
        super().__init__()
        branch_out = out_chs - in_chs if stride == 2 else out_chs
        if stride == 1 and in_chs != out_chs:
            raise ValueError("a stride-1 ShuffleNet unit adds its input: in_chs must equal out_chs")
        self.groups, self.stride, self.shuffle = groups, stride, shuffle
        self.in_chs, self.mid_chs, self.out_chs = in_chs, mid_chs, out_chs
        self.first_groups = groups if first_grouped else 1
        # 1x1 GConv + BN + ReLU; 3x3 DWConv + BN; 1x1 GConv + BN
        self.gconv1 = ConvNormAct(in_chs, mid_chs, 1, groups=self.first_groups)
        self.dwconv = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs, act=None)
        self.gconv2 = ConvNormAct(mid_chs, branch_out, 1, groups=groups, act=None)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gconv1(x)
        if self.shuffle and self.groups > 1:  # with one group the shuffle is the identity
            out = channel_shuffle(out, self.groups)
        out = self.gconv2(self.dwconv(out))
        if self.stride == 2:
            return F.relu(torch.cat((self.pool(x), out), dim=1))  # Fig. 2(c): Concat, ReLU
        return F.relu(x + out)  # Fig. 2(b): Add, ReLU


@dataclass(frozen=True)
class StageRow:
    """A stage of Table 1: one stride-2 unit, then ``repeat`` stride-1 units, with the output
    channels for each number of groups g."""

    name: str
    repeat: int
    out: dict[int, int] = field(hash=False)


CONV1_CHANNELS = 24  # Table 1, Conv1: 3x3, stride 2, 24 output channels
TABLE1 = (  # ShuffleNet Table 1 (g = 1, 2, 3, 4, 8)
    StageRow("Stage2", repeat=3, out={1: 144, 2: 200, 3: 240, 4: 272, 8: 384}),
    StageRow("Stage3", repeat=7, out={1: 288, 2: 400, 3: 480, 4: 544, 8: 768}),
    StageRow("Stage4", repeat=3, out={1: 576, 2: 800, 3: 960, 4: 1088, 8: 1536}),
)
# Conv1 width per scale: the authors' code for 0.5x-2x; 0.25x, which it lacks, keeps 0.5x's 12
# (Table 2's 13 MFLOPs at 0.25x need it: 6 channels give 10.8-11.3 M for g = 1..4, 12 give
# 12.9-13.3 M)
AUTHORS_CONV1 = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


@dataclass(frozen=True)
class ShufflePlan:
    """Channels of one ShuffleNet s x (g): Conv1, and per stage (output, bottleneck)."""

    conv1: int
    stages: tuple[tuple[int, int], ...]


def shufflenet_plan(groups: int, scale: float, conv1_round: str = "up") -> ShufflePlan:
    """Table 1's channels for ``groups`` scaled by ``scale`` (see the module docstring).

    ``conv1_round``: Conv1 is rounded to a multiple of g, "up" as the authors' code does (12 -> 16
    for g = 8 at 0.5x) or "down" (12 -> 8), which is what Table 2's g = 8 columns add up to.
    """
    if groups not in TABLE1[0].out:
        raise ValueError(f"Table 1 has g in {sorted(TABLE1[0].out)}; got groups={groups}")
    if scale not in AUTHORS_CONV1:
        raise ValueError(f"scale must be one of {sorted(AUTHORS_CONV1)} (§3.3, Tables 2 and 5); "
                         f"got {scale}")
    if conv1_round not in ("up", "down"):
        raise ValueError(f"conv1_round must be 'up' or 'down'; got {conv1_round!r}")
    rounded = (math.ceil if conv1_round == "up" else math.floor)(AUTHORS_CONV1[scale] / groups)
    stages = []
    for row in TABLE1:
        out = int(row.out[groups] * scale)
        stages.append((out, out // 4 // groups * groups))  # bottleneck = out / 4 (§3.3)
    return ShufflePlan(rounded * groups, tuple(stages))


class ShuffleNetV1(ZooModel):
    """Table 1: Conv1, MaxPool, Stages 2-4 of ShuffleNet units, global pool, FC.

    ``shuffle=False``: Table 3's ablation, no channel shuffle in any unit (module docstring).
    """

    def __init__(self, groups: int = 3, scale: float = 1.0, num_classes: int = 1000,
                 in_chans: int = 3, conv1_round: str = "up", drop_rate: float = 0.0,
                 global_pool: str = "avg", shuffle: bool = True):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.groups, self.scale, self.conv1_round = groups, scale, conv1_round
        self.shuffle = shuffle
        plan = shufflenet_plan(groups, scale, conv1_round)
        self.stem = ConvNormAct(in_chans, plan.conv1, 3, stride=2)  # Conv1
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # MaxPool
        self.feature_info = [{"name": "Conv1", "channels": plan.conv1, "reduction": 2,
                              "module": "stem"}]
        in_chs, reduction, stages = plan.conv1, 4, []
        for i, (row, (out_chs, mid_chs)) in enumerate(zip(TABLE1, plan.stages, strict=True)):
            units = [ShuffleUnit(in_chs, out_chs, mid_chs, 2, groups, first_grouped=i > 0,
                                 shuffle=shuffle)]
            units += [ShuffleUnit(out_chs, out_chs, mid_chs, 1, groups, shuffle=shuffle)
                      for _ in range(row.repeat)]
            stages.append(nn.Sequential(*units))
            in_chs, reduction = out_chs, reduction * 2
            self.feature_info.append(
                {"name": row.name, "channels": out_chs, "reduction": reduction,
                 "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, drop_rate, global_pool)
        self.pretrained_cfg = default_cfg()
        self.init_weights()

    def stage_specs(self) -> list[StageSpec]:
        """Table 1 for this g and scale: layer, KSize/stride, repeat, output channels."""
        specs = [StageSpec("Conv1", ("stem",), f"3x3, stride 2, {self.stem.conv.out_channels}"),
                 StageSpec("MaxPool", ("pool",), "3x3, stride 2")]
        for i, (row, stage) in enumerate(zip(TABLE1, self.stages, strict=True)):
            first = stage[0]
            pw = "1x1 Conv" if first.first_groups == 1 else f"1x1 GConv g={self.groups}"
            specs.append(StageSpec(
                f"{row.name} s2", (f"{stage_path(i)}.0",),
                f"unit Fig. 2(c), stride 2: {pw}, bottleneck {first.mid_chs}; "
                f"avg pool + concat"))
            specs.append(StageSpec(
                f"{row.name} s1", tuple(f"{stage_path(i)}.{j}" for j in range(1, len(stage))),
                f"unit Fig. 2(b), stride 1: 1x1 GConv g={self.groups}, bottleneck "
                f"{first.mid_chs}; add", len(stage) - 1))
        fc = f", FC {self.num_classes}" if self.num_classes else ""
        specs.append(StageSpec("GlobalPool", ("head",), f"7x7 (global){fc}"))
        return specs


def stage_path(i: int) -> str:
    return f"stages.{i}"


# ---------------------------------------------------------------------------------------------
# Registered variants: Table 1 (g = 1..8 at 1x) and the scale factors of Tables 2 and 5.
# ---------------------------------------------------------------------------------------------

PAPER = "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices"
ARXIV = "1707.01083"
MEGVII = "authors' code README (megvii-model/ShuffleNet-Series/ShuffleNetV1)"
_NOMINAL = ("Table 2 prints one nominal complexity per scale for all g: Table 1 shows the 1x "
            "networks behind its '140' at 133-143 M, so these rows pass within 5 %")


def _table1(text: str, fc_in: int) -> Published:
    """Table 1's exact complexity. It leaves the FC layer out: only then do all five g round to
    the printed numbers (with the FC, g = 2, 4, 8 give 141, 134, 138)."""
    return Published("macs", text, "M", "Table 1 'Complexity' (MFLOPs = mult-adds)",
                     excluded=fc_in * 1000 / 1e6,
                     note=f"the paper counts without the FC layer ({fc_in}x1000 mult-adds)")


def _nominal(text: str, source: str = "Table 2 (MFLOPs = mult-adds)") -> Published:
    return Published("macs", text, "M", source, tolerance=0.05 * float(text), note=_NOMINAL)


def _megvii(macs: str | None, params: str, macs_note: str = "") -> tuple[Published, ...]:
    rows = (Published("params", params, "M", MEGVII + " '#Params'", excluded=0.001,
                      note="their classifier has no bias (1,000 parameters fewer)"),)
    if macs is not None:  # a note marks the one row the README rounds up
        rows = (Published("macs", macs, "M", MEGVII + " 'FLOPs' (mult-adds)", note=macs_note,
                          rounding="ceil" if macs_note else "round"),) + rows
    return rows


def _info(published: tuple[Published, ...], exact: int, variants: tuple[Variant, ...] = (),
          notes: str = "") -> ModelInfo:
    return ModelInfo(paper=PAPER, arxiv=ARXIV, family="shufflenet_v1", published=published,
                     num_params=exact, variants=variants, notes=notes)


def _table2_variants(scale: str, text: str) -> tuple[Variant, ...]:
    """Table 2's other columns at this scale: g = 1, 2, 4, 8 (g = 3 is the registered model).

    Table 2's g = 8 complexities add up with Conv1 rounded *down* to a multiple of 8 (8 channels:
    36.6 / 12.4 M), not up as in the authors' later code (16: 40.5 / 15.7 M, and their README's
    "40M" for 0.5x): those columns are built with ``conv1_round="down"``.
    """
    rows = []
    for g in (1, 2, 4, 8):
        overrides = {"groups": g, **({"conv1_round": "down"} if g == 8 else {})}
        rows.append(Variant(label=f"ShuffleNet {scale} (g = {g}), Table 2", overrides=overrides,
                            published=(_nominal(text),)))
    return tuple(rows)


@register_model(_info((_table1("143", 576), _nominal("140")), 1_531_936))
def shufflenet_v1_g1(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 1, "scale": 1.0, **kwargs})


@register_model(_info((_table1("140", 800), _nominal("140")), 1_733_848))
def shufflenet_v1_g2(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 2, "scale": 1.0, **kwargs})


@register_model(_info((_table1("137", 960), _nominal("140"), *_megvii(
    "138", "1.9", "their README rounds this one up (137.46 M printed 138); its 1x g = 8 row "
                  "(138.37 M printed 138) rounds to nearest")), 1_865_728))
def shufflenet_v1_g3(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 3, "scale": 1.0, **kwargs})


@register_model(_info((_table1("133", 1088), _nominal("140")), 1_968_344))
def shufflenet_v1_g4(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 4, "scale": 1.0, **kwargs})


@register_model(_info((_table1("137", 1536), _nominal("140"),
                       _nominal("140", "Table 5 / Table 6 'ShuffleNet 1x (g = 8)'"),
                       *_megvii("138", "2.4")), 2_434_768))
def shufflenet_v1_g8(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 8, "scale": 1.0, **kwargs})


@register_model(_info(
    (_nominal("38"), *_megvii("38", "0.7")), 718_324,
    (*_table2_variants("0.5x", "38"),
     Variant(label="ShuffleNet 0.5x (g = 4), Table 5 / Table 6", overrides={"groups": 4},
             published=(_nominal("38", "Table 5 / Table 6 (MFLOPs = mult-adds)"),)),
     Variant(label="ShuffleNet 0.5x (g = 8), authors' code", overrides={"groups": 8},
             published=_megvii("40", "1.0")))))
def shufflenet_v1_g3_x0_5(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 3, "scale": 0.5, **kwargs})


@register_model(_info((_nominal("13"),), 306_124, _table2_variants("0.25x", "13")))
def shufflenet_v1_g3_x0_25(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 3, "scale": 0.25, **kwargs})


@register_model(_info(
    (Published("macs", "292", "M", "Table 5 'ShuffleNet 1.5x (g = 3)' (MFLOPs = mult-adds)"),
     *_megvii("292", "3.4")), 3_442_168,
    (Variant(label="ShuffleNet 1.5x (g = 8), authors' code", overrides={"groups": 8},
             published=_megvii("290", "4.3")),)))
def shufflenet_v1_g3_x1_5(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 3, "scale": 1.5, **kwargs})


@register_model(_info(
    (Published("macs", "524", "M",
               "Table 5 / Table 6 'ShuffleNet 2x (g = 3)' (MFLOPs = mult-adds)"),
     *_megvii("524", "5.4")), 5_450_776,
    (Variant(label="ShuffleNet 2x (g = 8), authors' code", overrides={"groups": 8},
             published=_megvii("522", "6.5")),)))
def shufflenet_v1_g3_x2(**kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": 3, "scale": 2.0, **kwargs})
