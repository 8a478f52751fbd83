"""AlexNet, VGG and DenseNet keys of torchvision and timm.

* AlexNet: torchvision's ``alexnet`` is our ``alexnet_owt`` with its adaptive 6x6 pooling and its
  dropout order (``fc_input="adaptive"``, ``dropout_before_fc=True``).
* VGG: both libraries index one ``features`` Sequential (conv, [BN], ReLU, ..., max pool); the
  positions follow from Table 1's configuration. torchvision's classifier is three Linear layers
  behind an adaptive 7x7 pooling (``fc_input="adaptive"``); timm's is a conv MLP (fc6 a 7x7 conv,
  fc7 a 1x1 conv) applied densely, which is our default ``fc_input="dense"``; its conv weights
  are reshaped to the FC layout (channel-major, like ``Tensor.flatten``).
* DenseNet: one layout in both; torchvision's published files still carry the pre-0.2 keys
  ``denselayerN.norm.1.weight`` (for ``norm1``), which are mapped too.
"""

from __future__ import annotations

from visionzoo.layers import default_cfg
from visionzoo.models.vgg import TABLE1
from visionzoo.ports import StateDict, register_port, rename_keys

# ------------------------------------------------------------------------------- AlexNet (OWT)

_TV_ALEXNET_CONVS = {"0": 0, "3": 1, "6": 2, "8": 3, "10": 4}  # features.<i> -> layers.<j>
_ALEXNET_RULES = [
    (r"features\.(\d+)\.(weight|bias)", lambda m: f"layers.{_TV_ALEXNET_CONVS[m[1]]}.conv.{m[2]}"),
    (r"classifier\.1\.(weight|bias)", r"head.fc6.\1"),
    (r"classifier\.4\.(weight|bias)", r"head.fc7.\1"),
    (r"classifier\.6\.(weight|bias)", r"head.fc.\1"),
]


def convert_alexnet(sd: StateDict) -> StateDict:
    return rename_keys(sd, _ALEXNET_RULES)


register_port("torchvision", "alexnet", "alexnet_owt", convert_alexnet,
              {"fc_input": "adaptive", "dropout_before_fc": True}, default_cfg(),
              "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")

# ------------------------------------------------------------------------------------------ VGG


def _vgg_feature_keys(config: str, batch_norm: bool) -> dict[str, str]:
    """``features.<i>`` -> our module path for every conv (and BN) of a Table 1 configuration."""
    out, i = {}, 0
    for s, stack in enumerate(TABLE1[config]):
        for c in range(len(stack)):
            out[str(i)] = f"stages.{s}.{c}.conv"
            if batch_norm:
                out[str(i + 1)] = f"stages.{s}.{c}.norm"
            i += 3 if batch_norm else 2  # conv, [BN], ReLU
        i += 1  # max pool
    return out


def _vgg_converter(config: str, batch_norm: bool, source: str):
    rules = [(rf"features\.{i}\.(.+)", rf"{path}.\1")
             for i, path in _vgg_feature_keys(config, batch_norm).items()]
    if source == "torchvision":
        rules += [(r"classifier\.0\.(weight|bias)", r"head.fc6.\1"),
                  (r"classifier\.3\.(weight|bias)", r"head.fc7.\1"),
                  (r"classifier\.6\.(weight|bias)", r"head.fc.\1")]
    else:
        rules += [(r"pre_logits\.fc1\.(weight|bias)", r"head.fc6.\1"),
                  (r"pre_logits\.fc2\.(weight|bias)", r"head.fc7.\1"),
                  (r"head\.fc\.(weight|bias)", r"head.fc.\1")]

    def convert(sd: StateDict) -> StateDict:
        out = rename_keys(sd, rules)
        for key in ("head.fc6.weight", "head.fc7.weight"):
            if key in out and out[key].ndim == 4:  # timm's conv MLP
                out[key] = out[key].flatten(1)  # (out, C, k, k) -> (out, C*k*k), channel-major
        return out

    return convert


_VGG_TV_HASH = {"vgg11": "8a719046", "vgg13": "19584684", "vgg16": "397923af",
                "vgg19": "dcbb9e9d", "vgg11_bn": "6002323d", "vgg13_bn": "abd245e5",
                "vgg16_bn": "6c64b313", "vgg19_bn": "c79401a0"}
_VGG_CONFIG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}

for _name, _hash in _VGG_TV_HASH.items():
    _bn = _name.endswith("_bn")
    _cfg = _VGG_CONFIG[_name.removesuffix("_bn")]
    register_port("torchvision", _name, _name, _vgg_converter(_cfg, _bn, "torchvision"),
                  {"fc_input": "adaptive", "batch_norm": _bn}, default_cfg(),
                  f"https://download.pytorch.org/models/{_name}-{_hash}.pth")
    register_port("timm", _name, _name, _vgg_converter(_cfg, _bn, "timm"),
                  {"fc_input": "dense", "batch_norm": _bn}, default_cfg())

# ------------------------------------------------------------------------------------- DenseNet

_DENSENET_RULES = [
    (r"features\.conv0\.weight", r"stem.conv.weight"),
    (r"features\.norm0\.(.+)", r"stem.norm.\1"),
    # torchvision's published files: "norm.1" / "conv.2" for norm1 / conv2
    (r"features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)\.?([12])\.(.+)",
     lambda m: f"blocks.{int(m[1]) - 1}.{int(m[2]) - 1}.{m[3]}{m[4]}.{m[5]}"),
    (r"features\.transition(\d+)\.(norm|conv)\.(.+)",
     lambda m: f"transitions.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
    (r"features\.norm5\.(.+)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.fc.\1"),
]


def convert_densenet(sd: StateDict) -> StateDict:
    return rename_keys(sd, _DENSENET_RULES)


_DENSENET_TV_HASH = {"densenet121": "a639ec97", "densenet161": "8d451a50",
                     "densenet169": "b2777c0a", "densenet201": "c1103571"}
for _name, _hash in _DENSENET_TV_HASH.items():
    register_port("torchvision", _name, _name, convert_densenet, {}, default_cfg(),
                  f"https://download.pytorch.org/models/{_name}-{_hash}.pth")
    # timm's densenet121 default tag (ra_in1k) and the tv_in1k tags are evaluated bicubic
    register_port("timm", _name, _name, convert_densenet, {},
                  default_cfg(interpolation="bicubic"))
