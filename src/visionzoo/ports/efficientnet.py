"""EfficientNet keys of torchvision, timm and efficientnet_pytorch, and the layouts their weights
need.

* torchvision ``efficientnet_b0..b7``: ``features.0`` stem, ``features.1..7`` the MBConv stages
  (``block.<i>`` sub-layers: [expand,] depthwise, SE ``fc1/fc2``, project), ``features.8`` the
  1x1 head conv, ``classifier.1`` the FC. Symmetric padding; BN eps 1e-5 for B0-B4 and 1e-3 for
  B5-B7 (those three were converted from the TF weights).
* timm ``efficientnet_b*`` / ``efficientnet_lite*`` (symmetric padding, eps 1e-5) and
  ``tf_efficientnet_b*`` / ``tf_efficientnet_lite*`` (TF "same" padding, eps 1e-3): one key
  layout, ``conv_stem/bn1``, ``blocks.<stage>.<i>``, ``conv_head/bn2``, ``classifier``. Stage 0
  is timm's DepthwiseSeparable (``conv_dw, bn1, se, conv_pw, bn2``: its ``conv_pw`` is our
  *projection*), the others InvertedResidual (``conv_pw`` = expansion, ``conv_pwl`` = projection).
* efficientnet_pytorch (lukemelas/EfficientNet-PyTorch and the Lite weights published in its
  format): ``_conv_stem/_bn0``, one flat list ``_blocks.<N>`` (``_expand_conv/_bn0``,
  ``_depthwise_conv/_bn1``, ``_se_reduce/_se_expand``, ``_project_conv/_bn2``),
  ``_conv_head/_bn1``, ``_fc``. The flat index is mapped to (stage, block) with the variant's
  repeats. TF "same" padding (its static/dynamic ``Conv2d*SamePadding``), eps 1e-3.

The file of a timm ``efficientnet_b0`` and of a ``tf_efficientnet_b0`` hold the same keys: only
the name passed to ``port()`` tells which layout the weights need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from visionzoo.layers import default_cfg
from visionzoo.models.efficientnet import LITE_SCALING, SCALING, stage_repeats
from visionzoo.ports import PortError, StateDict, register_port, rename_keys

_TORCHVISION_RULES = [
    (r"features\.0\.0\.weight", r"stem.conv.weight"),
    (r"features\.0\.1\.(.+)", r"stem.norm.\1"),
    (r"features\.8\.0\.weight", r"conv_head.conv.weight"),
    (r"features\.8\.1\.(.+)", r"conv_head.norm.\1"),
    (r"classifier\.1\.(weight|bias)", r"head.fc.\1"),
    # features.1 holds MBConv1 blocks (no expansion): block.0 depthwise, .1 SE, .2 project
    (r"features\.1\.(\d+)\.block\.0\.0\.weight", r"stages.0.\1.depthwise.conv.weight"),
    (r"features\.1\.(\d+)\.block\.0\.1\.(.+)", r"stages.0.\1.depthwise.norm.\2"),
    (r"features\.1\.(\d+)\.block\.1\.(fc[12])\.(.+)", r"stages.0.\1.se.\2.\3"),
    (r"features\.1\.(\d+)\.block\.2\.0\.weight", r"stages.0.\1.project.conv.weight"),
    (r"features\.1\.(\d+)\.block\.2\.1\.(.+)", r"stages.0.\1.project.norm.\2"),
    # features.2..7: block.0 expand, .1 depthwise, .2 SE, .3 project
    (r"features\.([2-7])\.(\d+)\.block\.0\.0\.weight",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.expand.conv.weight"),
    (r"features\.([2-7])\.(\d+)\.block\.0\.1\.(.+)",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.expand.norm.{m[3]}"),
    (r"features\.([2-7])\.(\d+)\.block\.1\.0\.weight",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.depthwise.conv.weight"),
    (r"features\.([2-7])\.(\d+)\.block\.1\.1\.(.+)",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.depthwise.norm.{m[3]}"),
    (r"features\.([2-7])\.(\d+)\.block\.2\.(fc[12])\.(.+)",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.se.{m[3]}.{m[4]}"),
    (r"features\.([2-7])\.(\d+)\.block\.3\.0\.weight",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.project.conv.weight"),
    (r"features\.([2-7])\.(\d+)\.block\.3\.1\.(.+)",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.project.norm.{m[3]}"),
]

_TIMM_RULES = [
    (r"conv_stem\.weight", r"stem.conv.weight"),
    (r"bn1\.(.+)", r"stem.norm.\1"),
    (r"conv_head\.weight", r"conv_head.conv.weight"),
    (r"bn2\.(.+)", r"conv_head.norm.\1"),
    (r"classifier\.(weight|bias)", r"head.fc.\1"),
    (r"blocks\.(\d+)\.(\d+)\.se\.conv_reduce\.(.+)", r"stages.\1.\2.se.fc1.\3"),
    (r"blocks\.(\d+)\.(\d+)\.se\.conv_expand\.(.+)", r"stages.\1.\2.se.fc2.\3"),
    # stage 0, DepthwiseSeparable: conv_dw/bn1 depthwise, conv_pw/bn2 projection
    (r"blocks\.0\.(\d+)\.conv_dw\.weight", r"stages.0.\1.depthwise.conv.weight"),
    (r"blocks\.0\.(\d+)\.bn1\.(.+)", r"stages.0.\1.depthwise.norm.\2"),
    (r"blocks\.0\.(\d+)\.conv_pw\.weight", r"stages.0.\1.project.conv.weight"),
    (r"blocks\.0\.(\d+)\.bn2\.(.+)", r"stages.0.\1.project.norm.\2"),
    # stages 1-6, InvertedResidual: conv_pw/bn1 expansion, conv_dw/bn2, conv_pwl/bn3 projection
    (r"blocks\.([1-6])\.(\d+)\.conv_pw\.weight", r"stages.\1.\2.expand.conv.weight"),
    (r"blocks\.([1-6])\.(\d+)\.bn1\.(.+)", r"stages.\1.\2.expand.norm.\3"),
    (r"blocks\.([1-6])\.(\d+)\.conv_dw\.weight", r"stages.\1.\2.depthwise.conv.weight"),
    (r"blocks\.([1-6])\.(\d+)\.bn2\.(.+)", r"stages.\1.\2.depthwise.norm.\3"),
    (r"blocks\.([1-6])\.(\d+)\.conv_pwl\.weight", r"stages.\1.\2.project.conv.weight"),
    (r"blocks\.([1-6])\.(\d+)\.bn3\.(.+)", r"stages.\1.\2.project.norm.\3"),
]

# efficientnet_pytorch block sub-layers -> ours
_EP_BLOCK = {
    "_expand_conv": "expand.conv", "_bn0": "expand.norm",
    "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.norm",
    "_se_reduce": "se.fc1", "_se_expand": "se.fc2",
    "_project_conv": "project.conv", "_bn2": "project.norm",
}


def convert_torchvision(sd: StateDict) -> StateDict:
    return rename_keys(sd, _TORCHVISION_RULES)


def convert_timm(sd: StateDict) -> StateDict:
    return rename_keys(sd, _TIMM_RULES)


def efficientnet_pytorch_converter(repeats: Sequence[int], name: str
                                   ) -> Callable[[StateDict], StateDict]:
    """Keys of efficientnet_pytorch's ``name``, whose flat ``_blocks.N`` are ``repeats[s]``
    blocks per stage s, to ours (``stages.s.j``)."""
    where = [(s, j) for s, n in enumerate(repeats) for j in range(n)]  # flat N -> (stage, j)

    def block(m: re.Match) -> str:
        n = int(m[1])
        if n >= len(where):
            raise PortError(f"efficientnet_pytorch {name} has {len(where)} blocks; the weights "
                            f"have _blocks.{n} (another variant?)")
        s, j = where[n]
        return f"stages.{s}.{j}.{_EP_BLOCK[m[2]]}.{m[3]}"

    rules = [
        (r"_conv_stem\.weight", r"stem.conv.weight"),
        (r"_bn0\.(.+)", r"stem.norm.\1"),
        (r"_blocks\.(\d+)\.(" + "|".join(_EP_BLOCK) + r")\.(.+)", block),
        (r"_conv_head\.weight", r"conv_head.conv.weight"),
        (r"_bn1\.(.+)", r"conv_head.norm.\1"),
        (r"_fc\.(weight|bias)", r"head.fc.\1"),
    ]

    def convert(sd: StateDict) -> StateDict:
        return rename_keys(sd, rules)

    return convert


# layouts
_PT = {"padding": "symmetric", "bn_eps": 1e-5}  # PyTorch-trained (torchvision, timm non-tf)
_TF = {"padding": "same", "bn_eps": 1e-3}  # TF-trained (authors' weights)

# torchvision DEFAULT weights: (url, crop, resize, interpolation)
_TV = {
    0: ("efficientnet_b0_rwightman-7f5810bc.pth", 224, 256, "bicubic"),
    1: ("efficientnet_b1-c27df63c.pth", 240, 255, "bilinear"),
    2: ("efficientnet_b2_rwightman-c35c1473.pth", 288, 288, "bicubic"),
    3: ("efficientnet_b3_rwightman-b3899882.pth", 300, 320, "bicubic"),
    4: ("efficientnet_b4_rwightman-23ab8bcd.pth", 380, 384, "bicubic"),
    5: ("efficientnet_b5_lukemelas-1a07897c.pth", 456, 456, "bicubic"),
    6: ("efficientnet_b6_lukemelas-24a108a5.pth", 528, 528, "bicubic"),
    7: ("efficientnet_b7_lukemelas-c5b4e57e.pth", 600, 600, "bicubic"),
}
for _b, (_file, _crop, _resize, _interp) in _TV.items():
    register_port("torchvision", f"efficientnet_b{_b}", f"efficientnet_b{_b}", convert_torchvision,
                  {**_PT, "bn_eps": 1e-5 if _b <= 4 else 1e-3},
                  default_cfg((3, _crop, _crop), crop_pct=_crop / _resize, interpolation=_interp),
                  f"https://download.pytorch.org/models/{_file}")

# timm's default pretrained tags (b6, b7 and lite1-4 have no trained PyTorch weights in timm)
_INCEPTION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_TIMM_PT_CFG = {
    "efficientnet_b0": default_cfg(interpolation="bicubic"),
    "efficientnet_b1": default_cfg((3, 240, 240), crop_pct=0.9, interpolation="bicubic",
                                   **_INCEPTION),
    "efficientnet_b2": default_cfg((3, 256, 256), interpolation="bicubic"),
    "efficientnet_b3": default_cfg((3, 288, 288), interpolation="bicubic"),
    "efficientnet_b4": default_cfg((3, 320, 320), interpolation="bicubic"),
    "efficientnet_b5": default_cfg((3, 448, 448), crop_pct=1.0, interpolation="bicubic"),
    "efficientnet_lite0": default_cfg(interpolation="bicubic"),
}
# tf_efficientnet_lite*: timm evaluates Lite3/4 at 300/380 (the authors' builder says 280/300)
_TIMM_TF_LITE_CFG = {
    0: default_cfg(crop_pct=0.875, interpolation="bicubic", **_INCEPTION),
    1: default_cfg((3, 240, 240), crop_pct=0.882, interpolation="bicubic", **_INCEPTION),
    2: default_cfg((3, 260, 260), crop_pct=0.890, interpolation="bicubic", **_INCEPTION),
    3: default_cfg((3, 300, 300), crop_pct=0.904, interpolation="bilinear", **_INCEPTION),
    4: default_cfg((3, 380, 380), crop_pct=0.920, interpolation="bilinear", **_INCEPTION),
}
for _b in range(8):
    _name = f"efficientnet_b{_b}"
    register_port("timm", _name, _name, convert_timm, _PT, _TIMM_PT_CFG.get(_name))
    # the TF ports' eval settings are the authors' (r, r / (r + 32), bicubic): our defaults
    register_port("timm", f"tf_{_name}", _name, convert_timm, _TF)
    register_port("efficientnet_pytorch", f"efficientnet-b{_b}", _name,
                  efficientnet_pytorch_converter(stage_repeats(SCALING[f"b{_b}"].depth),
                                                 f"efficientnet-b{_b}"), _TF)
for _n in range(5):
    _name = f"efficientnet_lite{_n}"
    register_port("timm", _name, _name, convert_timm, _PT, _TIMM_PT_CFG.get(_name))
    register_port("timm", f"tf_{_name}", _name, convert_timm, _TF, _TIMM_TF_LITE_CFG[_n])
    register_port("efficientnet_pytorch", f"efficientnet-lite{_n}", _name,
                  efficientnet_pytorch_converter(
                      stage_repeats(LITE_SCALING[f"lite{_n}"].depth, fix_first_last=True),
                      f"efficientnet-lite{_n}"), _TF)
