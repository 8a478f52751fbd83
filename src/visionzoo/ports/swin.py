"""Swin Transformer keys of torchvision and timm (and the authors' original checkpoints).

Our layout follows Table 7: patch merging opens stages 2-4 (``stages.{i}.downsample``), blocks
are ``stages.{i}.blocks.{j}``. The sources differ only in where merging sits and in names:

* torchvision: one flat ``features`` sequence: ``features.0`` = patch embedding (conv, permute,
  LN), odd entries 1/3/5/7 = the four stages' blocks, even entries 2/4/6 = the patch mergings
  between them; the MLP is ``mlp.0`` / ``mlp.3``; the classifier is ``head``.
* timm: ``layers.{i}.downsample`` at the start of stage i (i >= 1), as ours; ``head.fc``.
* the authors' checkpoints (the files timm's URLs point at): ``layers.{i}.downsample`` at the
  *end* of stage i (i <= 2), so it belongs to stage i + 1; the classifier is ``head``.

All three concatenate the 2x2 neighbourhood in the same order, (row, column) offsets (0,0),
(1,0), (0,1), (1,1) (torchvision: x0, x1, x2, x3 with x1 = rows 1::2; timm: a (h, 2, w, 2)
reshape read column-offset-major), which is ours, so the merging weights copy unchanged (the
port tests would show any permutation in the logits).

``relative_position_index`` and ``attn_mask`` buffers, stored by torchvision and the authors,
are recomputed by our model and dropped here. Bias tables of another window size (224 weights
into a window-12 model) are resampled bicubically by the model when loading.
"""

from __future__ import annotations

import re

from visionzoo.layers import default_cfg
from visionzoo.ports import StateDict, register_port, rename_keys

_BUFFERS = (r".*relative_position_index", r".*attn_mask")

_BLOCK = r"(norm1|norm2|attn\.qkv|attn\.proj|attn\.relative_position_bias_table|mlp\.fc1|mlp\.fc2)"


def _tv_features(m: re.Match) -> str:
    k, rest = int(m[1]), m[2]
    if k % 2:  # features.1/3/5/7: the stages' blocks
        j, key = rest.split(".", 1)
        key = key.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
        return f"stages.{(k - 1) // 2}.blocks.{j}.{key}"
    return f"stages.{k // 2}.downsample.{rest}"  # features.2/4/6: merging opening the next stage


_TV_RULES = [
    (r"features\.0\.0\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"features\.0\.2\.(weight|bias)", r"patch_embed.norm.\1"),
    (r"features\.([1357])\.(\d+\.(?:norm1|norm2|attn\.qkv|attn\.proj|mlp\.0|mlp\.3)\.(?:weight|bias))",
     _tv_features),
    (r"features\.([1357])\.(\d+\.attn\.relative_position_bias_table)", _tv_features),
    (r"features\.([246])\.((?:norm\.(?:weight|bias))|reduction\.weight)", _tv_features),
    (r"norm\.(weight|bias)", r"norm.\1"),
    (r"head\.(weight|bias)", r"head.fc.\1"),
]


def convert_torchvision(sd: StateDict) -> StateDict:
    return rename_keys(sd, _TV_RULES, drop=_BUFFERS)


def _timm_rules(original: bool) -> list:
    shift = 1 if original else 0  # the authors' merging closes stage i: ours opens stage i + 1
    return [
        (r"patch_embed\.(proj|norm)\.(weight|bias)", r"patch_embed.\1.\2"),
        (rf"layers\.(\d)\.blocks\.(\d+)\.{_BLOCK}\.(weight|bias)", r"stages.\1.blocks.\2.\3.\4"),
        (r"layers\.(\d)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
         r"stages.\1.blocks.\2.attn.relative_position_bias_table"),
        (r"layers\.(\d)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)",
         lambda m: f"stages.{int(m[1]) + shift}.downsample.{m[2]}"),
        (r"norm\.(weight|bias)", r"norm.\1"),
        (r"head\.fc\.(weight|bias)" if not original else r"head\.(weight|bias)", r"head.fc.\1"),
    ]


def convert_timm(sd: StateDict) -> StateDict:
    """timm's layout, or the authors' original one (recognised by a merging in stage 0)."""
    original = any(k.startswith("layers.0.downsample.") for k in sd)
    return rename_keys(sd, _timm_rules(original), drop=_BUFFERS)


# torchvision IMAGENET1K_V1: resize 232/246/238 bicubic, centre crop 224.
_TV = {
    "swin_t": ("https://download.pytorch.org/models/swin_t-704ceda3.pth", 232),
    "swin_s": ("https://download.pytorch.org/models/swin_s-5e29d889.pth", 246),
    "swin_b": ("https://download.pytorch.org/models/swin_b-68c6b09e.pth", 238),
}
for _name, (_url, _resize) in _TV.items():
    register_port("torchvision", _name, _name, convert_torchvision, {},
                  default_cfg(crop_pct=224 / _resize, interpolation="bicubic"), _url)

# timm's default tags: the authors' releases (ImageNet-1k for tiny, 22k -> 1k fine-tuned for the
# others), in the authors' original layout; crop 0.9 at 224, none at 384.
_GH = "https://github.com/SwinTransformer/storage/releases/download"
_TIMM = {
    "swin_tiny_patch4_window7_224": ("swin_t", f"{_GH}/v1.0.0/swin_tiny_patch4_window7_224.pth"),
    "swin_small_patch4_window7_224": (
        "swin_s", f"{_GH}/v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth"),
    "swin_base_patch4_window7_224": (
        "swin_b", f"{_GH}/v1.0.0/swin_base_patch4_window7_224_22kto1k.pth"),
    "swin_base_patch4_window12_384": (
        "swin_b_384", f"{_GH}/v1.0.0/swin_base_patch4_window12_384_22kto1k.pth"),
    "swin_large_patch4_window7_224": (
        "swin_l", f"{_GH}/v1.0.0/swin_large_patch4_window7_224_22kto1k.pth"),
    "swin_large_patch4_window12_384": (
        "swin_l_384", f"{_GH}/v1.0.0/swin_large_patch4_window12_384_22kto1k.pth"),
}
for _name, (_model, _url) in _TIMM.items():
    _cfg = (default_cfg((3, 384, 384), crop_pct=1.0, interpolation="bicubic") if "384" in _name
            else default_cfg(crop_pct=0.9, interpolation="bicubic"))
    register_port("timm", _name, _model, convert_timm, {}, _cfg, _url)
