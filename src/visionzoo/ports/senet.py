"""ResNeXt and SENet keys of torchvision and timm.

* torchvision/timm ``resnext*`` and timm's ResNet-based ``seresnet*``/``seresnext*``/``senet154``
  share the ResNet layout (conv1/bn1/layerN/downsample/fc), plus ``se.fc1``/``se.fc2`` and, for
  the deep stem, ``conv1.{0,1,3,4,6}``. They stride the 3x3 conv and pad the stem max pool:
  ``stride_in_1x1=False, ceil_pool=False``.
* timm's ``legacy_se*``/``legacy_senet154`` are the authors' Caffe models (via Cadene's
  pretrained-models): ``layer0`` stem, ``se_module``, ``last_linear``; SE-ResNets stride the first
  1x1, all pool the Caffe way: ``ceil_pool=True``.
"""

from __future__ import annotations

from visionzoo.layers import default_cfg
from visionzoo.ports import StateDict, register_port, rename_keys
from visionzoo.ports.resnet import _RULES as RESNET_RULES
from visionzoo.ports.resnet import convert_resnet


def _stage(m) -> str:  # "layer3.5" -> "stages.2.5"
    return f"stages.{int(m[1]) - 1}.{m[2]}"


_SE = [(r"layer(\d)\.(\d+)\.se\.(fc[12])\.(weight|bias)",
        lambda m: f"{_stage(m)}.se.{m[3]}.{m[4]}")]

# timm ResNet "deep" stem: conv1 = [conv, bn, act, conv, bn, act, conv], then bn1.
_DEEP_STEM = [
    (r"conv1\.0\.weight", r"stem.0.conv.weight"),
    (r"conv1\.1\.(.+)", r"stem.0.norm.\1"),
    (r"conv1\.3\.weight", r"stem.1.conv.weight"),
    (r"conv1\.4\.(.+)", r"stem.1.norm.\1"),
    (r"conv1\.6\.weight", r"stem.2.conv.weight"),
    (r"bn1\.(.+)", r"stem.2.norm.\1"),
]

_LEGACY_BLOCKS = [
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"{_stage(m)}.conv{m[3]}.conv.weight"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(.+)", lambda m: f"{_stage(m)}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.se_module\.(fc[12])\.(weight|bias)",
     lambda m: f"{_stage(m)}.se.{m[3]}.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"{_stage(m)}.shortcut.conv.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(.+)", lambda m: f"{_stage(m)}.shortcut.norm.{m[3]}"),
    (r"last_linear\.(weight|bias)", r"head.fc.\1"),
]
_LEGACY_STEM = [(r"layer0\.conv1\.weight", r"stem.conv.weight"),
                (r"layer0\.bn1\.(.+)", r"stem.norm.\1")]
_LEGACY_DEEP_STEM = [(r"layer0\.conv(\d)\.weight", lambda m: f"stem.{int(m[1]) - 1}.conv.weight"),
                     (r"layer0\.bn(\d)\.(.+)", lambda m: f"stem.{int(m[1]) - 1}.norm.{m[2]}")]


def convert_se_resnet(sd: StateDict) -> StateDict:
    """timm ``seresnet*``/``seresnext*`` (ResNet keys + ``se.fc1/fc2``)."""
    return rename_keys(sd, _SE + RESNET_RULES)


def convert_senet154(sd: StateDict) -> StateDict:
    """timm ``senet154`` (deep stem; the stem's bn1 is its third norm)."""
    rules = _DEEP_STEM + [r for r in RESNET_RULES if not r[0].startswith(("conv1", "bn1"))]
    return rename_keys(sd, _SE + rules)


def convert_legacy(sd: StateDict) -> StateDict:
    """timm ``legacy_se*`` (Cadene's port of the authors' Caffe weights)."""
    return rename_keys(sd, _LEGACY_STEM + _LEGACY_BLOCKS)


def convert_legacy_senet154(sd: StateDict) -> StateDict:
    return rename_keys(sd, _LEGACY_DEEP_STEM + _LEGACY_BLOCKS)


TORCH_LAYOUT = {"stride_in_1x1": False, "ceil_pool": False}
# timm's default tags: a1*/racm (crop 0.95) or gluon/untrained (crop 0.875), all bicubic
_TIMM_A1 = default_cfg(crop_pct=0.95, interpolation="bicubic")
_TIMM_GLUON = default_cfg(interpolation="bicubic")

# ResNeXt: torchvision IMAGENET1K_V1 (file name carries the SHA-256 prefix) and timm.
register_port("torchvision", "resnext50_32x4d", "resnext50_32x4d", convert_resnet,
              {"stride_in_1x1": False}, default_cfg(),
              "https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth")
register_port("timm", "resnext50_32x4d", "resnext50_32x4d", convert_resnet,
              {"stride_in_1x1": False}, _TIMM_A1)
register_port("timm", "resnext101_32x4d", "resnext101_32x4d", convert_resnet,
              {"stride_in_1x1": False}, _TIMM_GLUON)

# SENet, the authors' released layout (timm legacy_*); evaluated bilinear, crop 0.875.
for _name, _ours, _s1 in (("legacy_seresnet50", "se_resnet50", True),
                          ("legacy_seresnet101", "se_resnet101", True),
                          ("legacy_seresnet152", "se_resnet152", True),
                          ("legacy_seresnext50_32x4d", "se_resnext50_32x4d", False),
                          ("legacy_seresnext101_32x4d", "se_resnext101_32x4d", False)):
    register_port("timm", _name, _ours, convert_legacy, {"stride_in_1x1": _s1, "ceil_pool": True},
                  default_cfg())
register_port("timm", "legacy_senet154", "senet154", convert_legacy_senet154,
              {"stride_in_1x1": False, "ceil_pool": True}, default_cfg())

# SENet in timm's ResNet (torchvision layout).
for _name, _ours, _cfg in (("seresnet50", "se_resnet50", _TIMM_A1),
                           ("seresnet101", "se_resnet101", _TIMM_GLUON),
                           ("seresnet152", "se_resnet152", _TIMM_GLUON),
                           ("seresnext50_32x4d", "se_resnext50_32x4d", _TIMM_A1),
                           ("seresnext101_32x4d", "se_resnext101_32x4d", _TIMM_GLUON)):
    register_port("timm", _name, _ours, convert_se_resnet, TORCH_LAYOUT, _cfg)
register_port("timm", "senet154", "senet154", convert_senet154, TORCH_LAYOUT, _TIMM_GLUON)
