"""ResNet keys of torchvision and timm (they share one layout: conv1/bn1/layerN/downsample/fc).

Both libraries build the "v1.5" bottleneck (stride on the 3x3 conv), so their ResNet-50/101/152
ports set ``stride_in_1x1=False``; their basic-block nets use projection shortcuts (option B).
"""

from __future__ import annotations

from visionzoo.layers import default_cfg
from visionzoo.ports import StateDict, register_port, rename_keys

_RULES = [
    (r"conv1\.weight", r"stem.conv.weight"),
    (r"bn1\.(.+)", r"stem.norm.\1"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.conv{m[3]}.conv.weight"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(.+)",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.shortcut.conv.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(.+)",
     lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.shortcut.norm.{m[3]}"),
    (r"fc\.(weight|bias)", r"head.fc.\1"),
]


def convert_resnet(sd: StateDict) -> StateDict:
    return rename_keys(sd, _RULES)


# torchvision IMAGENET1K_V1 weights: file names carry the SHA-256 prefix; resize 256, crop 224.
_TV_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
}
# timm's default resnet tags (a1_in1k) are evaluated at 224 with crop 0.95, bicubic.
_TIMM_CFG = default_cfg(crop_pct=0.95, interpolation="bicubic")

for _name, _url in _TV_URLS.items():
    _flags = {"stride_in_1x1": False} if _name not in ("resnet18", "resnet34") else {}
    register_port("torchvision", _name, _name, convert_resnet, _flags, default_cfg(), _url)
    register_port("timm", _name, _name, convert_resnet, _flags, _TIMM_CFG)
