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
from visionzoo.registry import ModelInfo, Published, register_model

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition"]


class DenseLayer(nn.Module):
    """H_l with bottleneck: BN-ReLU-Conv(1x1, bn_size * k)-BN-ReLU-Conv(3x3, k)."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 memory_efficient: bool = False):
        super().__init__()
        width = bn_size * growth_rate  # "each 1x1 convolution produce[s] 4k feature-maps"
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def bottleneck(self, features: Sequence[torch.Tensor], update_stats: bool = True
                   ) -> torch.Tensor:
        """[x_0, ..., x_{l-1}] -> BN -> ReLU -> 1x1 conv: the part that memory grows with."""
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
        x = self.conv2(F.relu(self.norm2(self.drop(x)), inplace=True))  # -> the k new maps
        return self.drop(x)


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


class DenseNet(ZooModel):
    """Stem, four dense blocks joined by transition layers, BN-ReLU, global pool, classifier."""

    def __init__(self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                 stem_chs: int | None = None, bn_size: int = 4, compression: float = 0.5,
                 drop_rate: float = 0.0, memory_efficient: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg"):
        super().__init__()
        if not 0 < compression <= 1:
            raise ValueError(f"compression theta must be in (0, 1] (§3); got {compression}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.growth_rate, self.block_config = growth_rate, tuple(block_config)
        self.bn_size, self.compression = bn_size, compression
        self.memory_efficient = memory_efficient
        stem_chs = stem_chs or 2 * growth_rate  # "2k convolutions of size 7x7 with stride 2"
        self.stem = ConvNormAct(in_chans, stem_chs, 7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [{"name": "conv", "channels": stem_chs, "reduction": 2,
                              "module": "stem"}]
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        chs, reduction = stem_chs, 4
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
        concatenation, BN, ReLU and 1x1 conv are recomputed in backward, running statistics
        updated once."""
        self.set_memory_efficient(enable)

    def trunk(self) -> list[tuple[nn.Module, bool]]:
        """Conv, pool, then each dense block (its output a map) and the transition after it;
        the last block's map is taken after the final BN-ReLU (what the classifier pools)."""
        steps: list[tuple[nn.Module, bool]] = [(self.stem, True), (self.pool, False)]
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            steps.append((block, not last))
            if not last:
                steps.append((self.transitions[i], False))
        return steps + [(self.norm, False), (self.act, True)]

    def stage_specs(self) -> list[StageSpec]:
        """Table 1's rows: convolution, pooling, dense blocks, transitions, classification."""
        stem = self.stem.conv
        rows = [StageSpec("convolution", ("stem",), f"7x7 conv, {stem.out_channels}, stride 2"),
                StageSpec("pooling", ("pool",), "3x3 max pool, stride 2")]
        for i, block in enumerate(self.blocks):
            first = block[0]
            desc = (f"[1x1 conv, {first.conv1.out_channels}; 3x3 conv, "
                    f"{first.conv2.out_channels}] x {len(block)}")
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
          top5: str | None = None, refs: bool = True, notes: str = "") -> ModelInfo:
    name = f"densenet{depth}"
    if top1 is not None and top5 is not None:
        published += (Published("top1_err", top1, "%", "Table 3 (single-crop)"),
                      Published("top5_err", top5, "%", "Table 3 (single-crop)"))
    return ModelInfo(paper=PAPER, arxiv=ARXIV, family="densenet", published=published,
                     num_params=params, min_input_size=32,
                     references={"torchvision": name, "timm": name} if refs else {},
                     notes=notes)


def _tv(params: int, macs: str) -> tuple[Published, ...]:
    return (Published("params", str(params), "", TV_META + _NO_PAPER),
            Published("macs", macs, "G", TV_META + "; the paper plots FLOPs (Figure 3) but prints "
                      "no number"))


@register_model(_info(121, 7_978_856, _tv(7_978_856, "2.834"), "25.02", "7.71",
                      notes="DenseNet-BC, k=32, blocks 6-12-24-16 (Table 1)"))
def densenet121(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 24, 16), **kwargs)


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
