"""ResNet — He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
arXiv 1512.03385.

Paper map
---------
* Fig. 2, eq. (1)-(2): the residual block, y = F(x, {W_i}) + x, then ReLU     -> ``BasicBlock``
* Fig. 5 right: the bottleneck block 1x1 -> 3x3 -> 1x1 (x4 expansion)         -> ``Bottleneck``
* §3.3 "Residual Network": shortcut options when dimensions increase
    (A) identity with zero-padded extra channels, parameter-free              -> ``shortcut="A"``
    (B) 1x1 projection (+BN) only where dimensions increase                   -> ``shortcut="B"``
* §3.4: BN after every conv and before the activation; He initialisation.
* Table 1: the ImageNet networks (conv1, conv2_x ... conv5_x, average pool, 1000-d fc)
                                                                              -> ``resnet18..152``
* §4.2, Table 6: the CIFAR-10 networks, 6n+2 layers, 3x3 stem, 16/32/64 filters at
  32x32/16x16/8x8, option-A shortcuts                                         -> ``resnet20..110``

Defaults and deviations
-----------------------
* Bottleneck downsampling: the authors' released models (the Caffe prototxts of
  KaimingHe/deep-residual-networks) put stride 2 on the *first 1x1* conv of the first block of
  conv3_x..conv5_x. That is our default (``stride_in_1x1=True``) and is what Table 1's FLOPs count
  (3.86 G MACs for ResNet-50, printed "3.8"). torchvision and timm put the stride on the 3x3 conv
  ("ResNet v1.5", from Facebook's fb.resnet.torch / NVIDIA): same parameters, 4.09 G MACs, about
  0.5 % better top-1. ``stride_in_1x1=False`` selects it; ``port()`` sets it for their weights, and
  loading their weights into a model of the other layout is refused.
* Shortcuts of the ImageNet nets: option B by default. §4.1 compares A/B/C on ResNet-34 and uses B
  for the bottleneck nets; the published FLOPs/parameter counts and every released model use B.
  ``shortcut="A"`` gives the parameter-free option of Table 2's first comparison.
* The CIFAR nets use option A as §4.2 states (that gives Table 6's 0.27 M ... 1.7 M parameters).

Ablation switch (the paper's own comparison; not a deviation: the default is the paper's ResNet)
-----------------------------------------------------------------------------------------------
* ``shortcut=None`` (alias ``"none"``): the *plain* counterpart of §3.3 "Plain Network", compared
  with the ResNets in Fig. 4 / Table 2 (plain-18/34, ImageNet) and Fig. 6 left (plain-20 ... 56,
  CIFAR-10). Every block keeps its layers and ends with the same ReLU, but adds nothing: y = F(x)
  instead of y = F(x) + x. Option A shortcuts have no parameters, so a CIFAR net and its plain
  counterpart have the same parameters (state-dict keys included) and the same MACs; an option-B
  net loses its projection shortcuts (``stages.*.0.shortcut.*``). Stochastic depth
  (``drop_path_rate``) and ``zero_init_residual`` act on a residual branch and are refused.

ResNeXt — Xie, Girshick, Dollár, Tu, He. "Aggregated Residual Transformations for Deep Neural
Networks." CVPR 2017. arXiv 1611.05431. Built on the same code:

* Fig. 3(c): the aggregated transformation as one grouped 3x3 conv of C groups, each d wide
  (cardinality C = ``groups``, bottleneck width d = ``base_width``)               -> ``Bottleneck``
* Table 1: ResNeXt-50 (32x4d), 25.0 M parameters, 4.2 G FLOPs (multiply-adds)
                                                                              -> ``resnext50_32x4d``
* Table 3 (bottom): ResNeXt-101 (32x4d) at ResNet-101's complexity (~7.8 G)  -> ``resnext101_32x4d``
* Default layout: stride on the 3x3 conv and a padded 3x3/2 stem max pool, as in the authors'
  released code (facebookresearch/ResNeXt, built on fb.resnet.torch); that is also what the
  ResNeXt paper counts (its ResNet-50 baseline is 4.1 G in Table 1, the 3x3-stride count).
  ``stride_in_1x1=True`` gives the ResNet Caffe layout (3.77 G for ResNeXt-50).

The SENet networks (``visionzoo.models.senet``) are this ResNet with an SE block in every residual
branch (``se_ratio``) and SENet-154's stem/shortcut/bottleneck flags; see ``ResNet``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from visionzoo.layers import (
    ClassifierHead,
    ConvNormAct,
    DropPath,
    SqueezeExcite,
    StageSpec,
    ZooModel,
    default_cfg,
    shortcut_zero_pad,
)
from visionzoo.registry import Deviation, ModelInfo, Published, register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


class ShortcutA(nn.Module):
    """Option A (§3.3): identity, subsampled by the stride, extra channels zero-padded."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shortcut_zero_pad(x, self.out_chs - self.in_chs, self.stride)


def make_shortcut(in_chs: int, out_chs: int, stride: int, option: str,
                  kernel: int = 1) -> nn.Module:
    """Identity when shapes agree; otherwise option A (zero-pad) or B (projection + BN).

    The projection is 1x1; ``kernel=3`` makes the *downsampling* ones 3x3 (SENet-154, SENet
    Appendix: the stride-2 1x1 projection "replaced with a 3x3 stride-2 convolution"). A
    projection that only widens (stride 1) stays 1x1.
    """
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    if option == "A":
        return ShortcutA(in_chs, out_chs, stride)
    return ConvNormAct(in_chs, out_chs, kernel if stride > 1 else 1, stride=stride, act=None)


def make_se(channels: int, se_ratio: float | None) -> nn.Module:
    """The SE block of SENet Fig. 3 (r = 1 / ``se_ratio``), or nothing when ``se_ratio`` is None."""
    return SqueezeExcite(channels, ratio=se_ratio) if se_ratio else nn.Identity()


class BasicBlock(nn.Module):
    """Fig. 2 / Fig. 5 left: two 3x3 convs; the shortcut is added before the last ReLU.

    ``se_ratio``: a squeeze-and-excitation block recalibrates the residual before the addition
    (SENet Fig. 3 right). ``shortcut=None``: the plain block (§3.3), no shortcut at all.
    """

    expansion = 1

    def __init__(self, in_chs: int, width: int, stride: int = 1, shortcut: str | None = "B",
                 drop_path: float = 0.0, se_ratio: float | None = None,
                 shortcut_kernel: int = 1, **_: object):
        super().__init__()
        out_chs = width * self.expansion
        self.conv1 = ConvNormAct(in_chs, width, 3, stride=stride)
        self.conv2 = ConvNormAct(width, out_chs, 3, act=None)
        self.se = make_se(out_chs, se_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = (None if shortcut is None  # plain network (§3.3): no shortcut at all
                         else make_shortcut(in_chs, out_chs, stride, shortcut, shortcut_kernel))
        self.act = nn.ReLU(inplace=True)

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # F(x, {W_i}) of eq. (1)
        return self.se(self.conv2(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.residual(x))
        if self.shortcut is None:  # the plain network's block: y = F(x)
            return self.act(out)
        return self.act(out + self.shortcut(x))  # eq. (1): y = F(x) + x


class Bottleneck(nn.Module):
    """Fig. 5 right: 1x1 (reduce) -> 3x3 -> 1x1 (restore, x4), shortcut added before the ReLU.

    ``groups``/``base_width`` give the ResNeXt form (ResNeXt Fig. 3(c), cardinality C = ``groups``,
    bottleneck width d = ``base_width``): the 3x3 conv is a grouped conv of width
    ``C * d * out/256``. ``se_ratio`` recalibrates the residual with an SE block before the
    addition (SENet Fig. 3 right). ``halve_first_1x1``: the first 1x1 gives half that width and
    the grouped 3x3 restores it (SENet-154). ``shortcut=None``: the plain block, no shortcut.
    """

    expansion = 4

    def __init__(self, in_chs: int, width: int, stride: int = 1, shortcut: str | None = "B",
                 stride_in_1x1: bool = True, groups: int = 1, base_width: int = 64,
                 drop_path: float = 0.0, se_ratio: float | None = None,
                 halve_first_1x1: bool = False, shortcut_kernel: int = 1):
        super().__init__()
        out_chs = width * self.expansion
        mid = int(width * base_width / 64) * groups
        first = mid // 2 if halve_first_1x1 else mid
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNormAct(in_chs, first, 1, stride=s1)
        self.conv2 = ConvNormAct(first, mid, 3, stride=s3, groups=groups)
        self.conv3 = ConvNormAct(mid, out_chs, 1, act=None)
        self.se = make_se(out_chs, se_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = (None if shortcut is None  # plain network (§3.3): no shortcut at all
                         else make_shortcut(in_chs, out_chs, stride, shortcut, shortcut_kernel))
        self.act = nn.ReLU(inplace=True)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv3(self.conv2(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.residual(x))
        if self.shortcut is None:  # the plain network's block: y = F(x)
            return self.act(out)
        return self.act(out + self.shortcut(x))  # eq. (1): y = F(x) + x


class ResNet(ZooModel):
    """A stem, residual stages, global average pooling and a fully connected classifier.

    ``stem="imagenet"``: 7x7/2 conv (64) and 3x3/2 max pool (Table 1).
    ``stem="cifar"``: 3x3/1 conv to the first stage's width, no pooling (§4.2).
    ``shortcut``: "A" or "B" (§3.3's options), or None / "none" for the plain network of §3.3 /
    Fig. 4 / Fig. 6 (an ablation switch: no shortcuts, every block's output is ReLU(F(x))).
    The forward pass is ZooModel's ``stem -> pool -> stages``, then ``head``.

    The ResNeXt and SENet networks are this class with flags (each kept as an attribute of the
    same name, so ports can check a layout):

    * ``groups``, ``base_width``: ResNeXt cardinality C and bottleneck width d (ResNeXt Table 1);
    * ``se_ratio``: an SE block with reduction ratio r = 1/``se_ratio`` in every residual block
      (SENet Fig. 3); None leaves it out;
    * ``deep_stem``: conv1 as three 3x3 convs (64, 64, 128), the first with stride 2 (SENet-154);
    * ``shortcut_kernel=3``: 3x3 stride-2 projection shortcuts where a stage downsamples
      (SENet-154);
    * ``halve_first_1x1``: each bottleneck's first 1x1 has half the grouped conv's width
      (SENet-154);
    * ``ceil_pool``: the stem max pool computed as Caffe does (no padding, output size rounded up)
      instead of with padding 1 (the weights of the authors' released Caffe SENets need it).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000,
                 in_chans: int = 3, stem: str = "imagenet", shortcut: str | None = "B",
                 stride_in_1x1: bool = True, groups: int = 1, base_width: int = 64,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 zero_init_residual: bool = False, se_ratio: float | None = None,
                 deep_stem: bool = False, shortcut_kernel: int = 1,
                 halve_first_1x1: bool = False, ceil_pool: bool = False,
                 global_pool: str = "avg"):
        super().__init__()
        if shortcut not in ("A", "B", "none", None):
            raise ValueError(f"shortcut must be 'A' or 'B' (§3.3's options), or None / 'none' "
                             f"(the plain network of Fig. 4 / Fig. 6); got {shortcut!r}")
        if shortcut == "none":
            shortcut = None
        if shortcut is None and (drop_path_rate > 0 or zero_init_residual):
            raise ValueError("drop_path_rate and zero_init_residual act on a residual branch; "
                             "the plain network (shortcut=None) has none")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar'; got {stem!r}")
        if stem == "cifar" and (deep_stem or ceil_pool):
            raise ValueError("deep_stem/ceil_pool change the ImageNet stem; the CIFAR stem has "
                             "a single 3x3 conv and no pooling")
        if shortcut_kernel not in (1, 3):
            raise ValueError(f"shortcut_kernel must be 1 or 3; got {shortcut_kernel!r}")
        if se_ratio is not None and not 0 < se_ratio <= 1:
            raise ValueError(f"se_ratio is 1/r for a reduction ratio r >= 1; got {se_ratio!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        # layout flags, kept under their constructor names (ports check them)
        self.stride_in_1x1, self.shortcut = stride_in_1x1, shortcut
        self.groups, self.base_width, self.se_ratio = groups, base_width, se_ratio
        self.deep_stem, self.shortcut_kernel = deep_stem, shortcut_kernel
        self.halve_first_1x1, self.ceil_pool = halve_first_1x1, ceil_pool
        self.block_type = block.__name__
        self.paper_names = ("conv1",) + tuple(f"conv{i + 2}_x" for i in range(len(depths)))

        if stem == "imagenet" and deep_stem:
            stem_chs = 128
            self.stem = nn.Sequential(  # SENet-154's conv1: 3x3/2, 64; 3x3, 64; 3x3, 128
                ConvNormAct(in_chans, 64, 3, stride=2), ConvNormAct(64, 64, 3),
                ConvNormAct(64, stem_chs, 3))
        elif stem == "imagenet":
            stem_chs = 64
            self.stem = ConvNormAct(in_chans, stem_chs, 7, stride=2)  # conv1: 7x7, 64, stride 2
        else:
            stem_chs = widths[0]
            self.stem = ConvNormAct(in_chans, stem_chs, 3)  # 3x3 conv, 16 filters
        if stem == "cifar":
            self.pool = nn.Identity()
            stem_reduction = 1
        else:
            # 3x3 max pool, stride 2. Caffe pads nothing and rounds the output size up: the same
            # size at even inputs, but every window shifted by one pixel.
            self.pool = (nn.MaxPool2d(3, stride=2, ceil_mode=True) if ceil_pool
                         else nn.MaxPool2d(3, stride=2, padding=1))
            stem_reduction = 2
        self.feature_info = [{"name": "conv1", "channels": stem_chs, "reduction": stem_reduction,
                              "module": "stem"}]

        block_kwargs: dict = {"shortcut": shortcut, "se_ratio": se_ratio,
                              "shortcut_kernel": shortcut_kernel}
        if block is Bottleneck:
            block_kwargs.update(stride_in_1x1=stride_in_1x1, groups=groups, base_width=base_width,
                                halve_first_1x1=halve_first_1x1)
        elif groups != 1 or base_width != 64 or halve_first_1x1:
            raise ValueError("groups/base_width (ResNeXt) and halve_first_1x1 need bottleneck "
                             "blocks")
        total_blocks, block_idx = sum(depths), 0
        in_chs, reduction = stem_chs, stem_reduction * (2 if stem == "imagenet" else 1)
        stages = []
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            stride = 1 if i == 0 else 2  # conv3_1, conv4_1, conv5_1 downsample (Table 1)
            reduction *= stride
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(block(in_chs, width, stride if j == 0 else 1, drop_path=dpr,
                                    **block_kwargs))
                in_chs = width * block.expansion
                block_idx += 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(
                {"name": self.paper_names[i + 1], "channels": in_chs, "reduction": reduction,
                 "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, drop_rate, global_pool)
        self.depths, self.widths = tuple(depths), tuple(widths)
        self.pretrained_cfg = default_cfg()
        self.init_weights()
        if zero_init_residual:  # "Goyal et al." trick: each residual branch starts at zero
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.conv3.norm.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2.norm.weight)

    def stage_specs(self) -> list[StageSpec]:
        """Table 1 (ImageNet) / §4.2 (CIFAR) rows, built from this instance.

        SE networks read like SENet Table 1 (``fc, [C/r, C]`` inside the brackets) and get one
        extra row per stage, ``part_of`` that stage: its SE blocks alone, so ``info`` shows what
        they cost against the stage without them.
        """
        convs = [m.conv for m in self.stem] if self.deep_stem else [self.stem.conv]
        stem_desc = "; ".join(
            f"{c.kernel_size[0]}x{c.kernel_size[0]}, {c.out_channels}"
            + (f", stride {c.stride[0]}" if c.stride[0] > 1 or not self.deep_stem else "")
            for c in convs)
        rows = [StageSpec("conv1", ("stem",), stem_desc)]
        for i, stage in enumerate(self.stages):
            first = stage[0]
            fc = (f"; fc, [{first.se.reduced}, {first.se.channels}]"
                  if isinstance(first.se, SqueezeExcite) else "")
            if isinstance(first, Bottleneck):
                red, mid = first.conv1.conv.out_channels, first.conv2.conv.out_channels
                out, g = first.conv3.conv.out_channels, first.conv2.conv.groups
                desc = (f"[1x1, {red}; 3x3, {mid}{f', C={g}' if g > 1 else ''}; "
                        f"1x1, {out}{fc}]")
            else:
                out = first.conv2.conv.out_channels
                desc = f"[3x3, {out}; 3x3, {out}{fc}]"
            desc += f" x{len(stage)}"
            proj = getattr(first.shortcut, "conv", None)
            if proj is not None and proj.kernel_size[0] > 1:  # SENet-154's 3x3 projections
                desc += f"; shortcut 3x3, {proj.out_channels}, stride {proj.stride[0]}"
            modules: tuple[str, ...] = (f"stages.{i}",)
            if i == 0 and isinstance(self.pool, nn.MaxPool2d):
                caffe = " (Caffe: unpadded, size rounded up)" if self.ceil_pool else ""
                desc = f"3x3 max pool, stride 2{caffe}; " + desc
                modules = ("pool", "stages.0")
            name = self.paper_names[i + 1]
            rows.append(StageSpec(name, modules, desc, len(stage)))
            if fc:  # SENet Fig. 3: on the residual, after its last conv, before the addition
                c, red = first.se.channels, first.se.reduced
                rows.append(StageSpec(
                    f"{name} SE", tuple(f"stages.{i}.{j}.se" for j in range(len(stage))),
                    f"SE before each addition: avg pool, fc {c}->{red}, ReLU, fc {red}->{c}, "
                    f"sigmoid, scale", len(stage), part_of=name))
        fc = "" if self.num_classes == 0 else f", {self.num_classes}-d fc"
        rows.append(StageSpec("head", ("head",), f"average pool{fc}, softmax"))
        return rows


# ---------------------------------------------------------------------------------------------
# Registered variants: Table 1 (ImageNet) and §4.2 / Table 6 (CIFAR-10).
# ---------------------------------------------------------------------------------------------

PAPER = "Deep Residual Learning for Image Recognition"
ARXIV = "1512.03385"
TV_META = "torchvision weights metadata (num_params, GFLOPS)"
_TRUNC = ("the paper prints one decimal and truncates: Table 1's 3.6 is 3.66 G measured, "
          "3.8 is 3.86 G (SENet §4 quotes the same network as '~3.86 GFLOPs')")


def _v15(macs: str) -> Deviation:
    return Deviation(
        flag="stride_in_1x1=False",
        summary="'v1.5' layout of torchvision/timm: downsampling stride on the 3x3 conv instead "
                "of the first 1x1; same parameters, more MACs; their weights need it",
        overrides={"stride_in_1x1": False},
        published=(Published("macs", macs, "G", TV_META),),
    )


def _imagenet_info(depth: int, macs: str, params: int, tv_macs: str | None = None,
                   truncated: bool = False) -> ModelInfo:
    name = f"resnet{depth}"
    published = (
        Published("macs", macs, "G", "Table 1 ('FLOPs', i.e. multiply-adds)",
                  rounding="truncate" if truncated else "round",
                  note=_TRUNC if truncated else ""),
        Published("params", str(params), "", TV_META + "; the paper prints none for ImageNet"),
    )
    deviations: tuple[Deviation, ...] = (
        Deviation(flag="shortcut='A'",
                  summary="parameter-free zero-padding shortcuts (§3.3 option A, Table 2's "
                          "ResNet-18/34); default is option B as in every released model",
                  overrides={"shortcut": "A"}),
    ) if depth < 50 else (_v15(tv_macs or macs),)
    return ModelInfo(paper=PAPER, arxiv=ARXIV, family="resnet", published=published,
                     num_params=params, deviations=deviations,
                     references={"torchvision": name, "timm": name})


def _cifar_info(depth: int, params: str, exact: int) -> ModelInfo:
    return ModelInfo(
        paper=PAPER, arxiv=ARXIV, family="resnet",
        published=(Published("params", params, "M", "Table 6"),),
        num_params=exact, input_size=(3, 32, 32), num_classes=10,
        notes=f"CIFAR-10 network of §4.2: 6n+2 = {depth} layers, n = {(depth - 2) // 6}",
    )


def _cifar(depth: int, **kwargs: object) -> ResNet:
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    model = ResNet(BasicBlock, (n, n, n), widths=(16, 32, 64), stem="cifar", **kwargs)
    model.pretrained_cfg = default_cfg((3, 32, 32), mean=(0.4914, 0.4822, 0.4465),
                                       std=(0.2470, 0.2435, 0.2616), crop_pct=1.0)
    return model


@register_model(_imagenet_info(18, "1.8", 11_689_512))
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model(_imagenet_info(34, "3.6", 21_797_672, truncated=True))
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model(_imagenet_info(50, "3.8", 25_557_032, tv_macs="4.09", truncated=True))
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model(_imagenet_info(101, "7.6", 44_549_160, tv_macs="7.80"))
def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model(_imagenet_info(152, "11.3", 60_192_808, tv_macs="11.51"))
def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 8, 36, 3), **kwargs)


@register_model(_cifar_info(20, "0.27", 269_722))
def resnet20(**kwargs) -> ResNet:
    return _cifar(20, **kwargs)


@register_model(_cifar_info(32, "0.46", 464_154))
def resnet32(**kwargs) -> ResNet:
    return _cifar(32, **kwargs)


@register_model(_cifar_info(44, "0.66", 658_586))
def resnet44(**kwargs) -> ResNet:
    return _cifar(44, **kwargs)


@register_model(_cifar_info(56, "0.85", 853_018))
def resnet56(**kwargs) -> ResNet:
    return _cifar(56, **kwargs)


@register_model(_cifar_info(110, "1.7", 1_727_962))
def resnet110(**kwargs) -> ResNet:
    return _cifar(110, **kwargs)


# ---------------------------------------------------------------------------------------------
# ResNeXt (Xie et al., arXiv 1611.05431): Table 1 / Table 3, cardinality C x bottleneck width d.
# ---------------------------------------------------------------------------------------------

RESNEXT_PAPER = "Aggregated Residual Transformations for Deep Neural Networks"
RESNEXT_ARXIV = "1611.05431"
_TIMM_RESULTS = "timm results-imagenet.csv (param_count, M)"
_COUNT_NOTE = ("we count conv/linear multiply-accumulates only; the SENet authors' figures run "
               "0.01-0.02 G above that for ResNeXt (their counting convention is not stated; the "
               "gap grows with depth, as element-wise work would)")


def _resnext(depths: Sequence[int], cardinality: int, width: int, **kwargs) -> ResNet:
    kwargs.setdefault("stride_in_1x1", False)  # the authors' code strides the 3x3 conv
    return ResNet(Bottleneck, depths, groups=cardinality, base_width=width, **kwargs)


@register_model(ModelInfo(
    paper=RESNEXT_PAPER, arxiv=RESNEXT_ARXIV, family="resnext", num_params=25_028_904,
    published=(
        Published("params", "25.0", "M", "Table 1 ('# params. 25.0 x 10^6')"),
        Published("macs", "4.2", "G", "Table 1 ('FLOPs 4.2 x 10^9', multiply-adds)"),
        Published("params", "25028904", "", TV_META),
        Published("macs", "4.23", "G", TV_META),
        Published("macs", "4.24", "G", "SENet Table 2 (ResNeXt-50, re-implementation)",
                  tolerance=0.015, note=_COUNT_NOTE),
    ),
    references={"torchvision": "resnext50_32x4d", "timm": "resnext50_32x4d"}))
def resnext50_32x4d(**kwargs) -> ResNet:
    return _resnext((3, 4, 6, 3), 32, 4, **kwargs)


@register_model(ModelInfo(
    paper=RESNEXT_PAPER, arxiv=RESNEXT_ARXIV, family="resnext", num_params=44_177_704,
    published=(
        Published("macs", "7.8", "G", "Table 3, bottom ('ResNet-101 with preserved complexity "
                  "(~7.8 billion FLOPs)')", tolerance=0.2,
                  note="one approximate figure for all five ResNet-101-sized nets of the table; "
                       "ResNet-101 itself is 7.80 G in this layout, 32x4d is 2 % more"),
        Published("macs", "7.99", "G", "SENet Table 2 (ResNeXt-101, re-implementation)",
                  tolerance=0.025, note=_COUNT_NOTE),
        Published("params", "44.18", "M", _TIMM_RESULTS + "; the paper prints none"),
    ),
    references={"timm": "resnext101_32x4d"}))
def resnext101_32x4d(**kwargs) -> ResNet:
    return _resnext((3, 4, 23, 3), 32, 4, **kwargs)
