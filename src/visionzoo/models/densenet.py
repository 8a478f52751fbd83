"""DenseNet — Huang, Liu, van der Maaten, Weinberger. "Densely Connected Convolutional Networks."
CVPR 2017. arXiv 1608.06993.

Paper map
---------
* §3 "Dense connectivity", eq. (2): x_l = H_l([x_0, x_1, ..., x_{l-1}])   -> ``DenseBlock``
* §3 "Composite function": H_l = BN -> ReLU -> 3x3 conv (pre-activation)
* §3 "Bottleneck layers": BN-ReLU-Conv(1x1, 4k)-BN-ReLU-Conv(3x3, k)      -> ``DenseLayer``
* §3 "Growth rate": each H_l produces k feature-maps                      -> ``growth_rate``
* §3 "Pooling layers" / "Compression": transition = BN, 1x1 conv to floor(theta * m) maps, 2x2
  average pool; DenseNet-BC uses theta = 0.5                               -> ``Transition``
* §3 "Implementation Details" (ImageNet): 7x7/2 conv with 2k maps, 3x3/2 max pool, four dense
  blocks, global average pool, softmax classifier                         -> ``DenseNet``
* Table 1: DenseNet-121/169/201/264 (k=32), layers per block and output sizes
                                                                           -> ``densenet121..264``
* §4.2: He initialisation; dropout 0.2 after each conv (except the first) for the data sets
  without augmentation                                                     -> ``drop_rate``
* §4.4 and Table 3: "DenseNet-201 with 20M parameters"; top-1/top-5 errors.
* ``densenet161`` (k=48, 96 stem maps, blocks 6-12-36-24) is not in the paper: it is one of the
  authors' released ImageNet models (github.com/liuzhuang13/DenseNet), shipped by torchvision/timm.

Memory-efficient option
-----------------------
§4.2 points to the authors' memory-efficient implementation (Pleiss et al., arXiv 1707.06990): the
concatenation and the first BN-ReLU-1x1 conv of each layer are recomputed in the backward pass
instead of being stored. ``memory_efficient=True`` does this with gradient checkpointing. The
outputs and gradients equal the plain path; BatchNorm running statistics are updated once per step
(the recomputation normalises with the batch statistics without touching them), so the model's
state is identical too.

Deviations
----------
None in the layout: torchvision's and timm's DenseNets are this network (their weights port without
flags). Their ``drop_rate`` drops only the 3x3 conv's output; ours follows §4.2 (after every conv
but the first), which only matters when training with dropout.

Ablation / small-input switches
-------------------------------
The registered networks are Table 1's ImageNet DenseNet-BC. Table 2 and Fig. 4 compare DenseNet,
-B, -C and -BC on CIFAR with the paper's CIFAR networks (§3 "Implementation Details"); these flags
build them (defaults = the ImageNet network, so a default build is unchanged):

* ``stem="cifar"`` (default ``"imagenet"``): the input goes through one 3x3 conv, stride 1, with 16
  output maps, or 2k for DenseNet-BC ("a convolution with 16 (or twice the growth rate for
  DenseNet-BC) output channels"), and no pooling: no BN-ReLU or bias either (every dense layer
  starts with its own BN-ReLU), as in the authors' Lua code. The model counts as DenseNet-BC when
  it has both a bottleneck and compression (``bn_size > 0 and compression < 1``); ``stem_chs``
  overrides the count. (That code starts every CIFAR network with 2k maps; Table 2's counts
  follow the text: with 2k, DenseNet L=100 would have 7.08 M / 28.07 M parameters for k = 12 / 24,
  not the printed 7.0 / 27.2.) With ``block_config`` of three blocks, e.g. ``(12, 12, 12)``
  (L = 40) or ``(16, 16, 16)`` with bottlenecks (L = 100), the feature maps are 32x32, 16x16,
  8x8 on CIFAR (28, 14, 7 on Fashion-MNIST); transitions, the final BN-ReLU, the global average
  pool and the classifier are the same as on ImageNet. The flag is kept as ``stem_type``
  (``stem`` is the stem module); ResNet's CIFAR networks take the same ``stem="cifar"``.
* ``bn_size=0``: no bottleneck (the plain DenseNet / DenseNet-C): H_l = BN-ReLU-Conv(3x3, k), held
  as ``norm1``/``conv1`` (``conv1`` is then the 3x3 conv; there is no ``norm2``/``conv2``). The
  default 4 is DenseNet-B's 1x1 conv with 4k maps.
* ``compression=1.0``: theta = 1, transitions keep every map (the plain DenseNet / DenseNet-B);
  the default 0.5 is DenseNet-C's.

So DenseNet (L=40, k=12) is ``stem="cifar", growth_rate=12, block_config=(12, 12, 12),
bn_size=0, compression=1.0``, and DenseNet-BC (L=100, k=12) is ``stem="cifar", growth_rate=12,
block_config=(16, 16, 16)``; ``verify`` checks their Table 2 parameter counts (variants of
``densenet121``, whose builder takes ``growth_rate`` and ``block_config`` for them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from visionzoo.layers import (
    ClassifierHead,
    ConvNormAct,
    StageSpec,
    ZooModel,
    default_cfg,
)
from visionzoo.registry import ModelInfo, Published, Variant, register_model

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition"]


class DenseLayer(nn.Module):
    """H_l with bottleneck: BN-ReLU-Conv(1x1, bn_size * k)-BN-ReLU-Conv(3x3, k); with
    ``bn_size=0`` (no bottleneck) H_l is BN-ReLU-Conv(3x3, k), held as ``norm1``/``conv1``."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 memory_efficient: bool = False):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.norm2: nn.Module | None = None
        self.conv2: nn.Module | None = None
        if bn_size > 0:
            width = bn_size * growth_rate  # "each 1x1 convolution produce[s] 4k feature-maps"
            self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        else:  # §3 "Composite function": BN, ReLU, 3x3 conv
            self.conv1 = nn.Conv2d(in_chs, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def bottleneck(self, features: Sequence[torch.Tensor], update_stats: bool = True
                   ) -> torch.Tensor:
        """[x_0, ..., x_{l-1}] -> BN -> ReLU -> conv1 (the 1x1 bottleneck; without one, the 3x3
        conv that ends H_l): the part that memory grows with."""
        x = torch.cat(list(features), 1)  # eq. (2): (N, k_0 + (l-1) k, H, W)
        bn = self.norm1
        if update_stats or not bn.training:
            x = bn(x)
        else:  # recomputation: same batch statistics; momentum 0 leaves the running averages
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, 0.0,
                             bn.eps)
        return self.conv1(F.relu(x, inplace=True))  # x is BN's output, read by nothing else

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if (self.memory_efficient and self.training and torch.is_grad_enabled()
                and any(f.requires_grad for f in features)):
            calls = 0

            def recomputable(*feats: torch.Tensor) -> torch.Tensor:
                nonlocal calls
                calls += 1
                return self.bottleneck(feats, update_stats=calls == 1)

            x = checkpoint(recomputable, *features, use_reentrant=False)
        else:
            x = self.bottleneck(features)
        if self.conv2 is not None:  # DenseNet-B: the 4k maps -> BN -> ReLU -> 3x3 conv
            x = self.conv2(F.relu(self.norm2(self.drop(x)), inplace=True))
        return self.drop(x)  # the k new maps


class DenseBlock(nn.ModuleList):
    """Every layer takes the concatenation of the block input and all earlier layers' outputs."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, **layer_kwargs: object):
        super().__init__(DenseLayer(in_chs + i * growth_rate, growth_rate, **layer_kwargs)
                         for i in range(num_layers))
        self.out_chs = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)  # (N, k_0 + L k, H, W)


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv (compression theta) -> 2x2 average pool, stride 2."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float = 0.0):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chs)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        if drop_rate > 0:
            self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AvgPool2d(2, stride=2)


STEMS = ("imagenet", "cifar")


class DenseNet(ZooModel):
    """Stem, dense blocks joined by transition layers, BN-ReLU, global pool, classifier (four
    blocks on ImageNet; the CIFAR networks, ``stem="cifar"``, have three)."""

    def __init__(self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                 stem_chs: int | None = None, bn_size: int = 4, compression: float = 0.5,
                 drop_rate: float = 0.0, memory_efficient: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 stem: str = "imagenet"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS} ('imagenet': 7x7/2 conv + 3x3/2 max "
                             f"pool; 'cifar': one 3x3 conv, no pooling); got {stem!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression theta must be in (0, 1] (§3); got {compression}")
        if not (isinstance(bn_size, int) and bn_size >= 0):
            raise ValueError(f"bn_size must be an integer >= 0 (4: the 1x1 bottleneck's 4k maps, "
                             f"0: no bottleneck); got {bn_size!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.growth_rate, self.block_config = growth_rate, tuple(block_config)
        self.bn_size, self.compression = bn_size, compression
        self.memory_efficient = memory_efficient
        self.stem_type = stem  # the flag; ``self.stem`` is the stem module
        if stem == "imagenet":
            stem_chs = stem_chs or 2 * growth_rate  # "2k convolutions of size 7x7 with stride 2"
            self.stem = ConvNormAct(in_chans, stem_chs, 7, stride=2)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
            stem_reduction, reduction = 2, 4
        else:  # "a convolution with 16 (or twice the growth rate for DenseNet-BC) output channels"
            bc = bn_size > 0 and compression < 1
            stem_chs = stem_chs or (2 * growth_rate if bc else 16)
            # a bare conv: the first dense layer starts with its own BN-ReLU
            self.stem = ConvNormAct(in_chans, stem_chs, 3, norm=False, act=None, bias=False)
            self.pool = nn.Identity()  # no pooling: the first block runs at the input size
            stem_reduction, reduction = 1, 1
        self.feature_info = [{"name": "conv", "channels": stem_chs, "reduction": stem_reduction,
                              "module": "stem"}]
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        chs = stem_chs
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, chs, growth_rate, bn_size=bn_size, drop_rate=drop_rate,
                               memory_efficient=memory_efficient)
            self.blocks.append(block)
            chs = block.out_chs
            last = i == len(block_config) - 1  # the last map is after the final BN-ReLU
            self.feature_info.append({"name": f"dense_block{i + 1}", "channels": chs,
                                      "reduction": reduction,
                                      "module": "act" if last else f"blocks.{i}"})
            if i < len(block_config) - 1:
                out = int(compression * chs)  # floor(theta * m)
                self.transitions.append(Transition(chs, out, drop_rate))
                chs, reduction = out, reduction * 2
        # The blocks end in a raw concatenation (pre-activation): one more BN-ReLU before pooling.
        self.norm = nn.BatchNorm2d(chs)
        self.act = nn.ReLU(inplace=True)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, pool_type=global_pool)
        self.pretrained_cfg = default_cfg()
        self.init_weights()

    def set_memory_efficient(self, enabled: bool = True) -> None:
        """Switch gradient checkpointing in the dense layers on or off (e.g. after ``port()``)."""
        self.memory_efficient = enabled
        for m in self.modules():
            if isinstance(m, DenseLayer):
                m.memory_efficient = enabled

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """The memory-efficient implementation (see ``DenseLayer``): each layer's
        concatenation, BN, ReLU and first conv (the 1x1 bottleneck) are recomputed in backward,
        running statistics updated once."""
        self.set_memory_efficient(enable)

    def trunk(self) -> list[tuple[nn.Module, bool]]:
        """Conv, pool (none with the CIFAR stem), then each dense block (its output a map) and
        the transition after it; the last block's map is taken after the final BN-ReLU (what the
        classifier pools)."""
        steps: list[tuple[nn.Module, bool]] = [(self.stem, True)]
        if self.stem_type == "imagenet":
            steps.append((self.pool, False))
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            steps.append((block, not last))
            if not last:
                steps.append((self.transitions[i], False))
        return steps + [(self.norm, False), (self.act, True)]

    def stage_specs(self) -> list[StageSpec]:
        """Table 1's rows: convolution, pooling, dense blocks, transitions, classification
        (the CIFAR networks: a 3x3 conv and no pooling row)."""
        stem = self.stem.conv
        if self.stem_type == "imagenet":
            rows = [StageSpec("convolution", ("stem",),
                              f"7x7 conv, {stem.out_channels}, stride 2"),
                    StageSpec("pooling", ("pool",), "3x3 max pool, stride 2")]
        else:
            rows = [StageSpec("convolution", ("stem",), f"3x3 conv, {stem.out_channels}")]
        for i, block in enumerate(self.blocks):
            first = block[0]
            if first.conv2 is not None:
                desc = (f"[1x1 conv, {first.conv1.out_channels}; 3x3 conv, "
                        f"{first.conv2.out_channels}] x {len(block)}")
            else:
                desc = f"[3x3 conv, {first.conv1.out_channels}] x {len(block)}"
            last = i == len(self.blocks) - 1
            modules = (f"blocks.{i}", "norm", "act") if last else (f"blocks.{i}",)
            rows.append(StageSpec(f"dense block ({i + 1})", modules, desc, len(block)))
            if not last:
                t = self.transitions[i]
                rows.append(StageSpec(f"transition ({i + 1})", (f"transitions.{i}",),
                                      f"1x1 conv, {t.conv.out_channels}; 2x2 average pool, "
                                      f"stride 2"))
        fc = f", {self.num_classes}D fully-connected, softmax" if self.num_classes else ""
        rows.append(StageSpec("classification", ("head",), f"global average pool{fc}"))
        return rows


# ---------------------------------------------------------------------------------------------
# Registered networks: Table 1 (k=32) and the released DenseNet-161 (k=48)
# ---------------------------------------------------------------------------------------------

PAPER = "Densely Connected Convolutional Networks"
ARXIV = "1608.06993"
TV_META = "torchvision weights metadata (num_params, GFLOPS = G MACs)"
_NO_PAPER = "; the paper prints no parameter count for it"
_ECA = "ECA-Net (Wang et al., arXiv 1910.03151) Table 3, 'DenseNet-264 (k=32)'"


def _info(depth: int, params: int, published: tuple[Published, ...], top1: str | None = None,
          top5: str | None = None, refs: bool = True, notes: str = "",
          variants: tuple[Variant, ...] = ()) -> ModelInfo:
    name = f"densenet{depth}"
    if top1 is not None and top5 is not None:
        published += (Published("top1_err", top1, "%", "Table 3 (single-crop)"),
                      Published("top5_err", top5, "%", "Table 3 (single-crop)"))
    return ModelInfo(paper=PAPER, arxiv=ARXIV, family="densenet", published=published,
                     num_params=params, min_input_size=32,
                     references={"torchvision": name, "timm": name} if refs else {},
                     notes=notes, variants=variants)


def _tv(params: int, macs: str) -> tuple[Published, ...]:
    return (Published("params", str(params), "", TV_META + _NO_PAPER),
            Published("macs", macs, "G", TV_META + "; the paper plots FLOPs (Figure 3) but prints "
                      "no number"))


def _cifar(label: str, depth: int, k: int, bc: bool, params: str) -> Variant:
    """A Table 2 row: the CIFAR network of depth L (three blocks of (L - 4) / 3 layers, or
    (L - 4) / 6 bottleneck layers for DenseNet-BC), 10 classes, 32x32 input."""
    n = (depth - 4) // (6 if bc else 3)
    overrides: dict = {"stem": "cifar", "growth_rate": k, "block_config": (n, n, n),
                       "num_classes": 10}
    if not bc:
        overrides.update(bn_size=0, compression=1.0)
    return Variant(
        f"{label} (L={depth}, k={k}), Table 2", overrides, input_size=(3, 32, 32),
        published=(Published(
            "params", params, "M", "Table 2 (the CIFAR networks, million parameters)",
            note="counted with CIFAR-10's 10-way classifier: with CIFAR-100's five of the six "
                 "rows would print 0.1-0.2 M higher"),))


# Table 2's CIFAR networks (``stem="cifar"``, see the module docstring); hosted by densenet121,
# whose builder takes their growth rate and blocks
_TABLE2 = (
    _cifar("DenseNet", 40, 12, False, "1.0"),
    _cifar("DenseNet", 100, 12, False, "7.0"),
    _cifar("DenseNet", 100, 24, False, "27.2"),
    _cifar("DenseNet-BC", 100, 12, True, "0.8"),
    _cifar("DenseNet-BC", 250, 24, True, "15.3"),
    _cifar("DenseNet-BC", 190, 40, True, "25.6"),
)


@register_model(_info(121, 7_978_856, _tv(7_978_856, "2.834"), "25.02", "7.71",
                      notes="DenseNet-BC, k=32, blocks 6-12-24-16 (Table 1); growth_rate and "
                            "block_config with stem='cifar' give Table 2's CIFAR networks",
                      variants=_TABLE2))
def densenet121(growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                **kwargs) -> DenseNet:
    return DenseNet(growth_rate, block_config, **kwargs)


@register_model(_info(169, 14_149_480, _tv(14_149_480, "3.36"), "23.80", "6.85",
                      notes="DenseNet-BC, k=32, blocks 6-12-32-32 (Table 1)"))
def densenet169(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 32, 32), **kwargs)


@register_model(_info(
    201, 20_013_928,
    (Published("params", "20", "M", "§4.4 ('a DenseNet-201 with 20M parameters')"),)
    + _tv(20_013_928, "4.291"), "22.58", "6.34",
    notes="DenseNet-BC, k=32, blocks 6-12-48-32 (Table 1)"))
def densenet201(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 48, 32), **kwargs)


@register_model(_info(
    264, 33_337_704,
    (Published("params", "33334231", "", _ECA + _NO_PAPER, tolerance=5243,
               note="ECA-Net prints 31.79M counting in units of 2^20 (its DenseNet-161 entry, "
                    "27.35M, is torchvision's 28,681,000 / 2^20): 31.79 x 2^20 = 33,334,231 "
                    "+/- half a printed unit (5,243)"),),
    "22.15", "6.12", refs=False,
    notes="DenseNet-BC, k=32, blocks 6-12-64-48 (Table 1); no torchvision/timm model to port "
          "(timm's densenet264d is another network: deep stem, k=48)"))
def densenet264(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 64, 48), **kwargs)


@register_model(_info(
    161, 28_681_000, _tv(28_681_000, "7.728"),
    notes="not in the paper: the authors' released DenseNet-161 (k=48, 96 stem maps, blocks "
          "6-12-36-24); numbers from torchvision's metadata"))
def densenet161(**kwargs) -> DenseNet:
    return DenseNet(48, (6, 12, 36, 24), **kwargs)
