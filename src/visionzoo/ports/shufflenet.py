"""ShuffleNet V1 keys of OpenMMLab's mmpretrain (formerly mmclassification).

``shufflenet_v1_1x_g3``: mmpretrain's ``ShuffleNetV1(groups=3, widen_factor=1.0)`` with a global
average pool and ``LinearClsHead(960 -> 1000)``, the network of its published ImageNet weights
(``shufflenet_v1_batch1024_imagenet_20200804-5d6cec73.pth``, top-1 68.13). Its layout is ours:

* Conv1 (3x3/2, 24, BN, ReLU), MaxPool 3x3/2; stages of 1 + 3 / 7 / 3 units with 240 / 480 / 960
  channels and bottleneck out // 4 (60 / 120 / 240); Stage 2's first 1x1 conv is ungrouped.
* Each unit: 1x1 (group) conv + BN + ReLU, 3x3 depthwise conv + BN, channel shuffle, 1x1 group
  conv + BN; stride 1 adds the input then ReLU; stride 2 concatenates [AvgPool(3, 2, 1) of the
  input, ReLU(branch)], which is our ReLU(concat): the pooled input is already >= 0.
* Its shuffle is ours (channels viewed as (g, n), transposed to (n, g)); its convs have no bias.

The one difference: mmpretrain shuffles *after* the depthwise conv + BN, we shuffle before it
(Fig. 2 of the paper). The converter permutes the depthwise filters and that BN's parameters so
that both orders compute the same function (see ``_shuffled_depthwise``).
"""

from __future__ import annotations

import re

import torch

from visionzoo.layers import default_cfg
from visionzoo.models.shufflenet_v1 import channel_shuffle
from visionzoo.ports import StateDict, register_port, rename_keys

MM_URL = ("https://download.openmmlab.com/mmclassification/v0/shufflenet_v1/"
          "shufflenet_v1_batch1024_imagenet_20200804-5d6cec73.pth")

_UNIT = r"backbone\.layers\.(\d)\.(\d+)\."
_RULES = [
    (r"backbone\.conv1\.conv\.weight", r"stem.conv.weight"),
    (r"backbone\.conv1\.bn\.(.+)", r"stem.norm.\1"),
    (_UNIT + r"g_conv_1x1_compress\.conv\.weight", r"stages.\1.\2.gconv1.conv.weight"),
    (_UNIT + r"g_conv_1x1_compress\.bn\.(.+)", r"stages.\1.\2.gconv1.norm.\3"),
    (_UNIT + r"depthwise_conv3x3_bn\.conv\.weight", r"stages.\1.\2.dwconv.conv.weight"),
    (_UNIT + r"depthwise_conv3x3_bn\.bn\.(.+)", r"stages.\1.\2.dwconv.norm.\3"),
    (_UNIT + r"g_conv_1x1_expand\.conv\.weight", r"stages.\1.\2.gconv2.conv.weight"),
    (_UNIT + r"g_conv_1x1_expand\.bn\.(.+)", r"stages.\1.\2.gconv2.norm.\3"),
    (r"head\.fc\.(weight|bias)", r"head.fc.\1"),
]
# the per-channel tensors of each depthwise conv + BN (not the scalar num_batches_tracked)
_DEPTHWISE = re.compile(r"stages\.\d+\.\d+\.dwconv\."
                        r"(conv\.weight|norm\.(weight|bias|running_mean|running_var))")


def _shuffled_depthwise(sd: StateDict, groups: int) -> StateDict:
    """Their depthwise conv + BN, reordered for our shuffle-first unit.

    Shuffle S: S(v)[k] = v[p(k)] with p(j * g + i) = i * n + j (c = g * n channels viewed as
    (g, n), transposed). The depthwise conv and its BN act on each channel alone: D_t(z)[c] =
    f(z[c]; t[c]) for per-channel parameters t. Theirs computes S(D_t(z))[k] = f(z[p(k)]; t[p(k)]),
    ours D_u(S(z))[k] = f(z[p(k)]; u[k]); they agree iff u[k] = t[p(k)], i.e. u = S(t): our filter
    and BN entry k is their channel p(k). ``channel_shuffle`` of the channel indices gives p itself.
    """
    out = dict(sd)
    for key, value in sd.items():
        if _DEPTHWISE.fullmatch(key):
            c = value.shape[0]
            p = channel_shuffle(torch.arange(c).view(1, c, 1, 1), groups).flatten()
            out[key] = value[p].clone()
    return out


def convert_shufflenet_v1_mm(sd: StateDict, groups: int = 3) -> StateDict:
    """mmpretrain's ``backbone.*`` / ``head.fc.*`` keys onto ours, depthwise layers reordered."""
    if isinstance(sd.get("state_dict"), dict):  # the whole checkpoint {'meta', 'state_dict'}
        sd = sd["state_dict"]
    return _shuffled_depthwise(rename_keys(sd, _RULES), groups)


# configs/_base_/datasets/imagenet_bs64_pil_resize.py: short side 256 (pillow, bilinear), centre
# crop 224; mean/std (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) on 0-255 = ImageNet's
register_port("openmmlab", "shufflenet_v1_1x_g3", "shufflenet_v1_g3", convert_shufflenet_v1_mm,
              {}, default_cfg(crop_pct=0.875, interpolation="bilinear"), MM_URL)
