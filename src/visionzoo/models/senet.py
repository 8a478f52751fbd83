"""SENet — Hu, Shen, Albanie, Sun, Wu. "Squeeze-and-Excitation Networks." CVPR 2018 / TPAMI 2020.
arXiv 1709.01507.

The SE networks are not new code: each is the ResNet/ResNeXt of ``visionzoo.models.resnet`` with
the SE block of ``visionzoo.layers.SqueezeExcite`` in every residual branch (``se_ratio``), so
``create_model("resnet101", se_ratio=1/16)`` builds SE-ResNet-101's modules, state-dict keys,
parameters and MACs.

Paper map
---------
* Fig. 2, eq. (2)-(4): squeeze, excitation (reduction ratio r), scale    -> ``SqueezeExcite``
* Fig. 3 right: the SE-ResNet module, SE on the residual before the addition
                                                                        -> ``ResNet(se_ratio=1/r)``
* Table 1: SE-ResNet-50 and SE-ResNeXt-50 (32x4d), ``fc, [C/16, C]`` in every block
                                                        -> ``se_resnet50``, ``se_resnext50_32x4d``
* Table 2: GFLOPs (multiply-adds) of SE-ResNet-50/101/152, SE-ResNeXt-50/101
                                    -> ``se_resnet50 ... se_resnext101_32x4d`` (``published``)
* §4 "Model and Computational Complexity": ~2.5 M extra parameters (~10 %) for SE-ResNet-50 at
  a 0.26 % MAC increase, most of them in the last stage                 -> ``visionzoo info``
* Table 10: SE-ResNet-50 at reduction ratios r = 2, 4, 8, 16, 32: parameters
                                                                  -> ``se_resnet50`` variants
* Appendix, SENet-154: the 64x4d ResNeXt-152 with (1) the first 1x1 of each bottleneck halved,
  (2) conv1 as three 3x3 convs, (3) 3x3 stride-2 projection shortcuts, (4) dropout 0.2 before
  the classifier                                                           -> ``senet154``

Defaults and deviations
-----------------------
* Layout: the authors' released Caffe models (hujie-frank/SENet prototxts). SE-ResNets put the
  downsampling stride on the first 1x1 conv (as ResNet's Caffe models, ``stride_in_1x1=True``);
  SE-ResNeXts and SENet-154 put it on the grouped 3x3 (as ResNeXt's code). Their stem max pool
  is computed the Caffe way, unpadded with the output size rounded up (``ceil_pool=True``): same
  parameters and MACs as the padded pool of torchvision, windows shifted by one pixel. timm's
  ``legacy_*`` weights are these models.
* timm's ResNet-based ``seresnet*``/``seresnext*``/``senet154`` use the torchvision layout:
  stride on the 3x3 conv, padded max pool (``stride_in_1x1=False, ceil_pool=False``); ``port()``
  sets the flags, and weights of one layout are refused by a model of the other.
* SE block: C/r rounded down, FC layers with biases (the prototxts' 1x1 convs have bias terms).
* MACs: we count the multiply-accumulates of convs and linear layers. Table 2's GFLOPs for the SE
  networks are 0.01-0.03 G above that, consistent with also counting the SE block's element-wise
  work, the squeeze's H*W*C additions and the scale's H*W*C multiplications: with those added
  every row is within 0.01 G (tests/test_senet.py checks it). The paper does not state its
  counting convention.
* Table 10 prints parameter counts rounded up (45.70 -> "45.7", 35.64 -> "35.7", 25.56 -> "25.6"
  for the plain ResNet-50); those rows are compared that way.
* SENet-154: the paper prints no parameter or MAC count; timm's published parameter count
  stands in (exact match).
"""

from __future__ import annotations

from collections.abc import Callable

from visionzoo.models.resnet import (
    Bottleneck,
    ResNet,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x4d,
)
from visionzoo.registry import Deviation, ModelInfo, Published, Variant, register_model

__all__: list[str] = []

PAPER = "Squeeze-and-Excitation Networks"
ARXIV = "1709.01507"

SE_RATIO = 1 / 16  # r = 16: the ratio of every released model (Table 10's choice)
AUTHORS_LAYOUT = {"se_ratio": SE_RATIO, "ceil_pool": True}  # the released Caffe models

_TABLE2 = "Table 2 (SENet column, GFLOPs = multiply-adds)"
_MAC_TOL = 0.035  # G; see the note
_MAC_NOTE = ("conv/linear MACs only; the printed values are consistent with also counting the "
             "SE block's element-wise squeeze and scale (2 x H*W*C per block: 11 M for "
             "SE-ResNet-50, 26 M for SE-ResNet-152): with them added the measurement is within "
             "0.01 G of every Table 2 value")
_TIMM_RESULTS = "timm results-imagenet.csv (param_count, M)"
_TABLE10_NOTE = "Table 10 prints parameter counts rounded up"


def _torch_layout(stride_in_1x1: bool) -> Deviation:
    """timm's ResNet-based SE networks: torchvision's stride placement and padded max pool."""
    if stride_in_1x1:
        return Deviation(
            flag="stride_in_1x1=False, ceil_pool=False",
            summary="torchvision layout of timm's seresnet*: stride on the 3x3 conv (more MACs) "
                    "and a padded stem max pool; same parameters; their weights need it",
            overrides={"stride_in_1x1": False, "ceil_pool": False})
    return Deviation(
        flag="ceil_pool=False",
        summary="padded stem max pool of timm's seresnext*/senet154 (torchvision style); the "
                "stride is already on the 3x3; same parameters and MACs",
        overrides={"ceil_pool": False})


def _info(exact: int, published: tuple[Published, ...], timm_legacy: str,
          stride_in_1x1: bool, variants: tuple[Variant, ...] = (), notes: str = "") -> ModelInfo:
    return ModelInfo(paper=PAPER, arxiv=ARXIV, family="senet", published=published,
                     num_params=exact, deviations=(_torch_layout(stride_in_1x1),),
                     variants=variants, references={"timm": timm_legacy}, notes=notes)


def _macs(text: str, row: str) -> Published:
    return Published("macs", text, "G", f"{_TABLE2}, {row}", tolerance=_MAC_TOL, note=_MAC_NOTE)


def _params(text: str) -> Published:
    return Published("params", text, "M", _TIMM_RESULTS + "; the paper prints none")


def _with_se(base: Callable[..., ResNet], **kwargs) -> ResNet:
    """``base`` (a ResNet/ResNeXt builder) with SE blocks, in the authors' released layout."""
    for key, value in AUTHORS_LAYOUT.items():
        kwargs.setdefault(key, value)
    return base(**kwargs)


# Table 10: SE-ResNet-50 parameters at each reduction ratio r (and the plain ResNet-50 row).
_TABLE10 = (
    Variant("Table 10: r = 2", {"se_ratio": 1 / 2},
            published=(Published("params", "45.7", "M", "Table 10", rounding="ceil",
                                 note=_TABLE10_NOTE),)),
    Variant("Table 10: r = 4", {"se_ratio": 1 / 4},
            published=(Published("params", "35.7", "M", "Table 10", rounding="ceil",
                                 note=_TABLE10_NOTE),)),
    Variant("Table 10: r = 8", {"se_ratio": 1 / 8},
            published=(Published("params", "30.7", "M", "Table 10", rounding="ceil",
                                 note=_TABLE10_NOTE),)),
    Variant("Table 10: r = 16", {"se_ratio": 1 / 16},
            published=(Published("params", "28.1", "M", "Table 10", rounding="ceil",
                                 note=_TABLE10_NOTE),)),
    Variant("Table 10: r = 32", {"se_ratio": 1 / 32},
            published=(Published("params", "26.9", "M", "Table 10", rounding="ceil",
                                 note=_TABLE10_NOTE),)),
    Variant("Table 10: original (no SE)", {"se_ratio": None},
            published=(Published("params", "25.6", "M", "Table 10", rounding="ceil",
                                 note=_TABLE10_NOTE),)),
)


@register_model(_info(
    28_088_024,
    (Published("params", "28.1", "M", "Table 10 (r = 16); §4 '~2.5 million additional "
               "parameters' on ResNet-50's ~25 M", rounding="ceil", note=_TABLE10_NOTE),
     _macs("3.87", "SE-ResNet-50")),
    "legacy_seresnet50", stride_in_1x1=True, variants=_TABLE10))
def se_resnet50(**kwargs) -> ResNet:
    return _with_se(resnet50, **kwargs)


@register_model(_info(49_326_872, (_macs("7.60", "SE-ResNet-101"), _params("49.33")),
                      "legacy_seresnet101", stride_in_1x1=True))
def se_resnet101(**kwargs) -> ResNet:
    return _with_se(resnet101, **kwargs)


@register_model(_info(66_821_848, (_macs("11.32", "SE-ResNet-152"), _params("66.82")),
                      "legacy_seresnet152", stride_in_1x1=True))
def se_resnet152(**kwargs) -> ResNet:
    return _with_se(resnet152, **kwargs)


@register_model(_info(27_559_896, (_macs("4.25", "SE-ResNeXt-50 (32x4d)"), _params("27.56")),
                      "legacy_seresnext50_32x4d", stride_in_1x1=False))
def se_resnext50_32x4d(**kwargs) -> ResNet:
    return _with_se(resnext50_32x4d, **kwargs)


@register_model(_info(48_955_416, (_macs("8.00", "SE-ResNeXt-101 (32x4d)"), _params("48.96")),
                      "legacy_seresnext101_32x4d", stride_in_1x1=False))
def se_resnext101_32x4d(**kwargs) -> ResNet:
    return _with_se(resnext101_32x4d, **kwargs)


@register_model(_info(
    115_088_984, (_params("115.09"),), "legacy_senet154", stride_in_1x1=False,
    notes="Appendix: 64x4d ResNeXt-152 with halved first 1x1s, a three-conv stem, 3x3 "
          "downsampling shortcuts and dropout 0.2; the paper prints no complexity for it"))
def senet154(**kwargs) -> ResNet:
    kwargs.setdefault("stride_in_1x1", False)
    kwargs.setdefault("drop_rate", 0.2)  # (4) dropout before the classifier
    return _with_se(ResNet, block=Bottleneck, depths=(3, 8, 36, 3), groups=64, base_width=4,
                    halve_first_1x1=True, deep_stem=True, shortcut_kernel=3, **kwargs)
