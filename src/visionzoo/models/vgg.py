"""VGG — Simonyan, Zisserman. "Very Deep Convolutional Networks for Large-Scale Image
Recognition." ICLR 2015. arXiv 1409.1556.

Paper map
---------
* §2.1: 3x3 convs, stride 1, padding 1; five 2x2/2 max pools; ReLU on every hidden layer; no
  normalization except A-LRN, whose LRN uses Krizhevsky et al.'s constants   -> ``VGG``
* Table 1: configurations A, A-LRN, B, C, D, E ("conv<receptive field>-<channels>")
                                                                             -> ``TABLE1``
* Table 1 (bottom): FC-4096, FC-4096, FC-1000, soft-max                      -> ``VGGHead``
* Table 2: parameters 133 (A, A-LRN), 133 (B), 134 (C), 138 (D), 144 (E) M   -> ``published``
* §3.1: dropout 0.5 on the first two FC layers; weights initialised with Glorot & Bengio's
  procedure, which the authors found works "without pre-training" (§3.1)    -> ``init_weights``
* §3.2: dense evaluation: fc6 becomes a 7x7 conv, fc7/fc8 1x1 convs, and the class score map is
  averaged over space                                                        -> ``FCConv``

Registered names: A, B, D, E are ``vgg11 vgg13 vgg16 vgg19``. A-LRN (``lrn=True`` on vgg11) and C
(``config="C"`` on vgg16, 16 weight layers with 1x1 convs) are paper variants checked by ``verify``.

Input size and the classifier (``fc_input``)
--------------------------------------------
The network is trained on 224x224 crops (§3.1), where pool5 is 7x7x512 and fc6 is an ordinary FC
layer. At test time the paper applies it densely (§3.2): that is our default,
``fc_input="dense"``. At 224 it is exactly the FC network; on a larger image fc6 slides over the
pool5 map as a 7x7 convolution and the scores are averaged (timm's ConvMlp head computes the same).
Below 224 the paper defines nothing; we then adaptively average-pool the pool5 map *up* to 7x7 (a
1x1 map is repeated, larger ones get overlapping bins), as torchvision and timm both do, so small
inputs (down to 32) work; the registry sweeps run at 32 (``min_input_size=32``).
``fc_input="adaptive"`` is torchvision's classifier: adaptive average pooling of pool5 to 7x7, then
the FC layers. It equals the dense head at 224 and below, and differs above 224 (it shrinks the
map instead of sliding fc6). ``port("torchvision", ...)`` sets it, ``port("timm", ...)`` keeps
"dense", so ported logits equal the reference's at every size.

Deviations
----------
* ``batch_norm=True`` (``vgg*_bn``): BatchNorm after every conv, before the ReLU; not in the paper
  (it predates BN), added by torchvision/timm. The convs keep their biases, as in their weights.

Ablation / small-input switches
-------------------------------
Adaptations for training Table 3's configurations small (``visionzoo ablate vgg``); the defaults
are the paper's network, so neither changes a default build (or Table 2's counts).

* ``width_mult`` (default 1.0): multiplies every conv's channels and the width of fc6/fc7, each
  rounded half up and kept >= 1: ``max(1, int(c * width_mult + 0.5))``. At 0.125 Table 1's
  64/128/256/512 convs become 8/16/32/64 and FC-4096 becomes FC-512; the number of layers (the
  depth that Table 3 compares) is unchanged.
* ``fc6_window`` (default 7): the side of the pool5 window fc6 covers (the head's ``grid``). The
  paper's 7 is pool5's size at its 224 training crops. At a 32x32 input pool5 is 1x1; the default
  repeats it up to 7x7 (see above), which works but gives fc6 49 weights per input value that all
  see the same number: 49 x the parameters for what is in effect one FC layer (whose weight is
  the sum of the 49 copies). ``fc6_window=1`` makes fc6 an ordinary FC layer on the 1x1 pool5
  map, which is what fc6 is at 224 (its window is all of pool5): use it with 32x32 inputs. On
  larger inputs dense evaluation slides the 1x1 window (scores averaged over pool5's positions)
  and ``fc_input="adaptive"`` pools pool5 to 1x1 first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.layers import ConvNormAct, StageSpec, ZooModel, default_cfg
from visionzoo.registry import Deviation, ModelInfo, Published, Variant, register_model

__all__ = ["TABLE1", "VGG", "Conv", "FCConv", "VGGHead"]


@dataclass(frozen=True)
class Conv:
    """One "conv<receptive field size>-<number of channels>" entry of Table 1."""

    kernel: int
    channels: int


# Table 1: one tuple per conv stack; each stack is followed by a 2x2/2 max pool.
TABLE1: dict[str, tuple[tuple[Conv, ...], ...]] = {
    "A": (  # 11 weight layers
        (Conv(3, 64),),
        (Conv(3, 128),),
        (Conv(3, 256), Conv(3, 256)),
        (Conv(3, 512), Conv(3, 512)),
        (Conv(3, 512), Conv(3, 512)),
    ),
    "B": (  # 13 weight layers
        (Conv(3, 64), Conv(3, 64)),
        (Conv(3, 128), Conv(3, 128)),
        (Conv(3, 256), Conv(3, 256)),
        (Conv(3, 512), Conv(3, 512)),
        (Conv(3, 512), Conv(3, 512)),
    ),
    "C": (  # 16 weight layers, the third conv of stacks 3-5 is 1x1
        (Conv(3, 64), Conv(3, 64)),
        (Conv(3, 128), Conv(3, 128)),
        (Conv(3, 256), Conv(3, 256), Conv(1, 256)),
        (Conv(3, 512), Conv(3, 512), Conv(1, 512)),
        (Conv(3, 512), Conv(3, 512), Conv(1, 512)),
    ),
    "D": (  # 16 weight layers
        (Conv(3, 64), Conv(3, 64)),
        (Conv(3, 128), Conv(3, 128)),
        (Conv(3, 256), Conv(3, 256), Conv(3, 256)),
        (Conv(3, 512), Conv(3, 512), Conv(3, 512)),
        (Conv(3, 512), Conv(3, 512), Conv(3, 512)),
    ),
    "E": (  # 19 weight layers
        (Conv(3, 64), Conv(3, 64)),
        (Conv(3, 128), Conv(3, 128)),
        (Conv(3, 256), Conv(3, 256), Conv(3, 256), Conv(3, 256)),
        (Conv(3, 512), Conv(3, 512), Conv(3, 512), Conv(3, 512)),
        (Conv(3, 512), Conv(3, 512), Conv(3, 512), Conv(3, 512)),
    ),
}

FC_INPUT_MODES = ("dense", "adaptive")


class FCConv(nn.Linear):
    """A fully connected layer over a ``window`` x ``window`` x ``in_chs`` input that, given a
    larger map, slides over it as a convolution (§3.2's dense evaluation).

    The weight keeps the FC shape (out, in_chs * window^2), flattened channel-major like
    ``Tensor.flatten``, so FC weights (torchvision) and conv weights (timm) both load.
    """

    def __init__(self, in_chs: int, out_features: int, window: int = 1):
        super().__init__(in_chs * window * window, out_features)
        self.in_chs, self.window = in_chs, window

    def reset_parameters(self) -> None:
        # Glorot & Bengio (§3.1) right away: fc6 holds 103 M weights, initialise them only once
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return slide_fc(x, self.weight, self.bias, self.window)


@torch.fx.wrap  # shape-dependent: one node in an FX trace, traced through by torch.export
def slide_fc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int) -> torch.Tensor:
    """An FC layer over k x k windows of ``x`` (N, C, H, W): (N, out, H-k+1, W-k+1)."""
    if x.shape[-2:] == (k, k):  # one window: the plain FC layer (a GEMM)
        return F.linear(x.flatten(1), weight, bias)[:, :, None, None]  # (N, out, 1, 1)
    w = weight.view(weight.shape[0], -1, k, k)  # (out, C*k*k) -> (out, C, k, k), channel-major
    return F.conv2d(x, w, bias)  # (N, out, H-k+1, W-k+1): a score map


@torch.fx.wrap
def fit_fc6_input(x: torch.Tensor, grid: int, fc_input: str) -> torch.Tensor:
    """pool5 as fc6 takes it: shrunk (or repeated) to grid x grid with ``fc_input="adaptive"``
    (torchvision); under dense evaluation left as is, or pooled up to the grid below 224."""
    h, w = x.shape[-2:]
    if fc_input == "adaptive":
        return F.adaptive_avg_pool2d(x, grid)
    if h < grid or w < grid:
        return F.adaptive_avg_pool2d(x, (max(grid, h), max(grid, w)))
    return x


class VGGHead(nn.Module):
    """FC-4096, FC-4096 (ReLU, dropout 0.5 each), FC-num_classes; see the module docstring for
    ``fc_input``."""

    def __init__(self, in_chs: int, num_classes: int, fc_input: str = "dense",
                 drop_rate: float = 0.5, width: int = 4096, grid: int = 7,
                 pool_type: str = "avg"):
        super().__init__()
        self.in_chs, self.width, self.grid, self.fc_input = in_chs, width, grid, fc_input
        self.hidden_size = width
        self.pool_type = _check_pool(pool_type)
        self.fc6 = FCConv(in_chs, width, window=grid)
        self.fc7 = FCConv(width, width)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = fit_fc6_input(x, self.grid, self.fc_input)
        x = self.drop(self.act(self.fc6(x)))  # (N, 4096, h, w); 1 x 1 at the design size
        x = self.drop(self.act(self.fc7(x)))
        # Dense evaluation: average over positions. fc8 is affine, so averaging its input equals
        # averaging the class score map as §3.2 does. ("max" takes the strongest position.)
        x = x.mean((2, 3)) if self.pool_type == "avg" else x.amax((2, 3))  # -> (N, 4096)
        return x if pre_logits else self.fc(x)


def scale_width(channels: int, width_mult: float) -> int:
    """Table 1's width ``channels`` times ``width_mult``, rounded half up, at least 1."""
    return max(1, int(channels * width_mult + 0.5))


def _check_pool(pool_type: str) -> str:
    if pool_type not in ("avg", "max"):
        raise ValueError(f"VGG's global_pool (over the positions of the dense fc7 map) must be "
                         f"'avg' (§3.2) or 'max'; got {pool_type!r}")
    return pool_type


class VGG(ZooModel):
    """Five conv stacks (Table 1) with max pooling, then three FC layers."""

    def __init__(self, config: str = "D", batch_norm: bool = False, lrn: bool = False,
                 fc_input: str = "dense", drop_rate: float = 0.5, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", width_mult: float = 1.0,
                 fc6_window: int = 7):
        super().__init__()
        if config not in TABLE1:
            raise ValueError(f"config must be one of {sorted(TABLE1)} (Table 1); got {config!r}")
        if fc_input not in FC_INPUT_MODES:
            raise ValueError(f"fc_input must be one of {FC_INPUT_MODES}; got {fc_input!r}")
        if not (isinstance(width_mult, (int, float)) and 0 < width_mult < float("inf")):
            raise ValueError(f"width_mult must be a number > 0 (1.0: Table 1's widths; e.g. "
                             f"0.125: 8..64 channels, FC-512); got {width_mult!r}")
        if not (isinstance(fc6_window, int) and fc6_window >= 1):
            raise ValueError(f"fc6_window must be an integer >= 1 (7: the paper's 7x7 pool5 "
                             f"at 224; 1 for 32x32 inputs); got {fc6_window!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.config, self.batch_norm, self.lrn, self.fc_input = config, batch_norm, lrn, fc_input
        self.width_mult, self.fc6_window = width_mult, fc6_window
        self.stages = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.feature_info = []
        in_chs = in_chans
        for i, stack in enumerate(TABLE1[config]):
            layers: list[nn.Module] = []
            for j, conv in enumerate(stack):
                out_chs = scale_width(conv.channels, width_mult)
                layers.append(ConvNormAct(in_chs, out_chs, conv.kernel, norm=batch_norm,
                                          bias=True))
                if lrn and i == 0 and j == 0:  # A-LRN: "conv3-64, LRN" (Table 1)
                    # Krizhevsky et al.'s constants; PyTorch divides alpha by n, hence n * 1e-4
                    layers.append(nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0))
                in_chs = out_chs
            self.stages.append(nn.Sequential(*layers))
            self.pools.append(nn.MaxPool2d(2, stride=2))
            self.feature_info.append({"name": f"conv{i + 1}", "channels": in_chs,
                                      "reduction": 2**i, "module": f"stages.{i}"})
        self.feature_info.append({"name": "pool5", "channels": in_chs,
                                  "reduction": 2 ** len(self.stages),
                                  "module": f"pools.{len(self.stages) - 1}"})
        self.num_features = in_chs
        self.head = VGGHead(in_chs, num_classes, fc_input, drop_rate,
                            width=scale_width(4096, width_mult), grid=fc6_window,
                            pool_type=global_pool)
        self.pretrained_cfg = default_cfg()
        self.init_weights(fc=False)

    def init_weights(self, fc: bool = True) -> None:
        """Glorot & Bengio (uniform) weights and zero biases (§3.1); BN at unit scale.

        ``fc=False`` leaves fc6/fc7 alone (they initialise themselves on construction)."""
        for m in self.modules():
            if isinstance(m, FCConv):
                if fc:
                    m.reset_parameters()
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def trunk(self) -> list[tuple[nn.Module, bool]]:
        """Each conv stack (its map before pooling: U-Net's skips) and its max pool; pool5's
        output, fc6's input, is the last map."""
        steps = []
        for i, (stage, pool) in enumerate(zip(self.stages, self.pools, strict=True)):
            steps += [(stage, True), (pool, i == len(self.stages) - 1)]
        return steps

    def feature_size(self, hw: Sequence[int]) -> tuple[int, int]:
        r = self.feature_info[-1]["reduction"]
        return tuple(s // r for s in hw)  # 2x2/2 pools round down

    def stage_specs(self) -> list[StageSpec]:
        """Table 1's column for this configuration: conv stacks, maxpools, FC layers."""
        rows = []
        bn = " + BN" if self.batch_norm else ""
        for i, stage in enumerate(self.stages):
            names = []
            for m in stage:
                if isinstance(m, ConvNormAct):
                    k = m.conv.kernel_size[0]
                    names.append(f"conv{k}-{m.conv.out_channels}")
                else:
                    names.append("LRN")
            convs = sum(isinstance(m, ConvNormAct) for m in stage)
            rows.append(StageSpec(f"conv{i + 1}", (f"stages.{i}",), ", ".join(names) + bn, convs))
            rows.append(StageSpec(f"pool{i + 1}", (f"pools.{i}",), "maxpool"))
        if isinstance(self.head, VGGHead):
            rows.append(StageSpec("fc6", ("head.fc6",), f"FC-{self.head.width}"))
            rows.append(StageSpec("fc7", ("head.fc7",), f"FC-{self.head.width}"))
            if self.num_classes:
                rows.append(StageSpec("fc8", ("head.fc",), f"FC-{self.num_classes}, soft-max"))
        return rows


# ---------------------------------------------------------------------------------------------
# Registered configurations (Table 1) with Table 2's parameter counts
# ---------------------------------------------------------------------------------------------

PAPER = "Very Deep Convolutional Networks for Large-Scale Image Recognition"
ARXIV = "1409.1556"
TV_META = "torchvision weights metadata (num_params, GFLOPS = G MACs)"
_TABLE2 = "Table 2 (millions, whole numbers)"
_ADAPTIVE = Deviation(
    flag="fc_input='adaptive'",
    summary="torchvision's classifier: pool5 adaptively averaged to 7x7 before fc6; equals the "
            "dense head up to 224, shrinks the map above it",
    overrides={"fc_input": "adaptive"})


def _info(config: str, depth: int, table2: str, params: int, macs: str,
          bn: bool = False, variants: tuple[Variant, ...] = ()) -> ModelInfo:
    name = f"vgg{depth}" + ("_bn" if bn else "")
    published: tuple[Published, ...] = (
        Published("params", table2, "M", f"{_TABLE2}, configuration {config}",
                  note="Table 2 counts the network without BN; BN adds 2 parameters per conv "
                       "channel, far below the printed precision" if bn else ""),
        Published("macs", macs, "G", TV_META + "; the paper prints none"),
    )
    deviations: tuple[Deviation, ...] = (_ADAPTIVE,)
    if bn:
        deviations = (Deviation(
            flag="batch_norm=True",
            summary="BatchNorm after every conv (torchvision/timm '_bn' networks); not in the "
                    "paper, which predates BN",
            overrides={"batch_norm": True}, default=True,
            published=(Published("params", str(params), "", TV_META),)),) + deviations
    else:
        published += (Published("params", str(params), "", TV_META),)
    return ModelInfo(
        paper=PAPER, arxiv=ARXIV, family="vgg", published=published, num_params=params,
        min_input_size=32, deviations=deviations, variants=variants,
        references={"torchvision": name, "timm": name},
        notes=f"configuration {config} of Table 1 ({depth} weight layers)"
              + (" with BatchNorm" if bn else "")
              + "; dense evaluation (§3.2) above 224, pool5 repeated up to 7x7 below it")


_A_LRN = Variant("A-LRN", {"lrn": True},
                 published=(Published("params", "133", "M", f"{_TABLE2}, configuration A-LRN"),))
_C = Variant("C", {"config": "C"},
             published=(Published("params", "134", "M", f"{_TABLE2}, configuration C"),))


@register_model(_info("A", 11, "133", 132_863_336, "7.609", variants=(_A_LRN,)))
def vgg11(**kwargs) -> VGG:
    return VGG("A", **kwargs)


@register_model(_info("B", 13, "133", 133_047_848, "11.308"))
def vgg13(**kwargs) -> VGG:
    return VGG("B", **kwargs)


@register_model(_info("D", 16, "138", 138_357_544, "15.47", variants=(_C,)))
def vgg16(config: str = "D", **kwargs) -> VGG:
    if config not in ("C", "D"):  # Table 1's two 16-layer networks
        raise ValueError(f"vgg16 is configuration D (or C, with 1x1 convs); got {config!r}")
    return VGG(config, **kwargs)


@register_model(_info("E", 19, "144", 143_667_240, "19.632"))
def vgg19(**kwargs) -> VGG:
    return VGG("E", **kwargs)


@register_model(_info("A", 11, "133", 132_868_840, "7.609", bn=True))
def vgg11_bn(**kwargs) -> VGG:
    kwargs.setdefault("batch_norm", True)
    return VGG("A", **kwargs)


@register_model(_info("B", 13, "133", 133_053_736, "11.308", bn=True))
def vgg13_bn(**kwargs) -> VGG:
    kwargs.setdefault("batch_norm", True)
    return VGG("B", **kwargs)


@register_model(_info("D", 16, "138", 138_365_992, "15.47", bn=True))
def vgg16_bn(**kwargs) -> VGG:
    kwargs.setdefault("batch_norm", True)
    return VGG("D", **kwargs)


@register_model(_info("E", 19, "144", 143_678_248, "19.632", bn=True))
def vgg19_bn(**kwargs) -> VGG:
    kwargs.setdefault("batch_norm", True)
    return VGG("E", **kwargs)
