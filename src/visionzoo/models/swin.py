"""Swin Transformer — Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo. "Swin Transformer: Hierarchical
Vision Transformer using Shifted Windows." ICCV 2021. arXiv 2103.14030.

Paper map
---------
* Fig. 3(a), §3.1: patch partition (4x4 patches) + linear embedding to C, then LayerNorm
  (Table 7's "concat 4x4, 96-d, LN")                                        -> ``PatchEmbed``
* §3.1 "Patch Merging": concatenate each 2x2 group of neighbouring patches (4C), LayerNorm,
  linear 4C -> 2C, at the start of stages 2-4 (Table 7's "concat 2x2, 2C-d, LN")
                                                                             -> ``PatchMerging``
* Fig. 3(b), eq. (3): two successive blocks, pre-norm; W-MSA in the first, SW-MSA in the second,
  each followed by a 2-layer MLP with GELU (ratio 4, §3.3), residuals around both
                                                                             -> ``SwinBlock``
* §3.2 "Self-attention in non-overlapped windows": M x M windows, M = 7     -> ``window_partition``
* §3.2 "Shifted window partitioning", Fig. 2 and Fig. 4: shift by floor(M/2), computed as a
  cyclic shift (``torch.roll``) plus a mask so tokens only attend within their sub-window
                                                   -> ``shift_mask``, ``shifted_window_attention``
* §3.2 "Relative position bias", eq. (4): Attention(Q, K, V) = SoftMax(QK^T / sqrt(d) + B) V,
  B taken from a learned table B^ of size (2M-1) x (2M-1) per head, indexed by a buffer
                                                                             -> ``WindowAttention``
* §3.3 and Table 7: the variants (C, layer numbers, heads; d = 32 per head)
                                                                      -> ``ARCHS``, ``swin_*``
* Table 1: parameters and FLOPs (multiply-adds) of Swin-T/S/B/L at 224^2 and 384^2.
* Table 4 (ablation on Swin-T): "w/o shifting"                             -> ``shift=False``;
  "no pos."                                                          -> ``rel_pos_bias=False``
* Appendix A2 and the official configs: stochastic depth 0.2 / 0.3 / 0.5 for T / S / B (also
  B at 384), 0.2 for L (ImageNet-22K pre-training and its 384 fine-tuning).

Defaults and conventions
------------------------
* Inside a stage the maps are NHWC (tokens with channels last, as LayerNorm and attention want
  them); between the trunk's steps (patch embedding, stages) and in every public output
  (``forward_features``, ``forward_intermediates``, ``features_only``) they are NCHW. The permutes
  at a stage's ends are views, so no map is copied for it.
* The trunk (``trunk()``) is the patch embedding and the four stages; ``feature_info`` names the
  stage outputs (``stages.0`` ... ``stages.3``, reductions 4, 8, 16, 32). The final LayerNorm is
  outside it, as in timm: ``forward_features`` is the last stage's map *after* that LayerNorm (as
  the classifier sees it), while ``forward_intermediates`` and ``features_only`` give the raw
  stage outputs, the last one included; ``forward_intermediates(norm=True)`` applies the
  LayerNorm to the last stage's map (timm's semantics; ``features_only`` uses the default
  ``norm=False``, as timm's does). ``prune_intermediate_layers(prune_norm=True)`` drops it.
* Window attention goes through ``torch.nn.functional.scaled_dot_product_attention`` with the
  relative position bias and the shift mask folded into ``attn_mask`` (fused CPU/GPU kernels).
  ``fused_attn=False`` (or ``attn.fused = False`` on a module) selects the explicit eq. (4)
  softmax path; both compute the same function (tested). Training on CPU always takes the
  explicit path: no fused CPU kernel returns the gradient of ``attn_mask`` (the bias table is
  learned), and SDPA's math fallback is slower than the explicit softmax.
* The shift mask adds -100 to the logits of token pairs from different sub-windows, as the
  authors' code does (exp(-100) ~ 4e-44 is negligible next to any unmasked weight: a hard mask).
* Tracing: everything that depends on a map's size (padding amounts, the window and shift of a
  map, the shift mask, shrunk bias tables) lives in ``pad_to_multiple`` and
  ``shifted_window_attention``, functions wrapped for ``torch.fx``: a symbolic trace (and
  torchvision's ``create_feature_extractor``) records one call to each, which runs on the real
  tensors, so a traced graph serves every input size. ``torch.export``, ``torch.jit.trace`` and
  ``torch.compile`` trace through them with the sizes known: their graphs are specialised to the
  example's H x W (a dynamic batch exports).

Inputs of any size (the authors' classification code takes only its training size)
-----------------------------------------------------------------------------------------
* Patch partition: a side that is not a multiple of the patch size 4 is zero-padded at the
  bottom/right first, as the authors' detection/segmentation backbone
  (Swin-Transformer-Object-Detection, ``PatchEmbed``) does: the maps are ceil(H/4) x ceil(W/4),
  ..., ceil(H/32) x ceil(W/32).
* A map whose side is not a multiple of the window is zero-padded at the bottom/right to one,
  after the block's LayerNorm and before the cyclic shift, and cropped back after the reverse
  shift; padded tokens are not masked (the authors' detection backbone and torchvision).
* A map side not larger than M shrinks the window to that side and turns the shift off along it,
  as the authors' classification ``SwinTransformerBlock`` does (``if min(input_resolution) <=
  window_size``); we apply it per side, as timm does, so for square maps it is exactly theirs. A
  shrunk m x m window uses the centre (2m-1)^2 entries of the (2M-1)^2 bias table: the same
  learned bias per relative offset (the authors would build a smaller table for such a size).
* Patch merging of an odd side pads one zero row/column first (authors' detection code), so a
  1 x 1 map merges to 1 x 1.
* So every input gives logits, down to 1 x 1 (one zero-padded patch, then 1 x 1 maps); only a
  wrong channel count or rank is an error. ``min_input_size`` (registry and ``pretrained_cfg``)
  is 4, one whole patch.
* Where the references differ at other sizes (at 224 and 384 all agree; torchvision also agrees
  wherever H and W are multiples of 4 and no map side is below the window, tested at 256 x 288):

  - torchvision: the patch-embedding conv drops the last H mod 4 rows / W mod 4 columns
    instead of padding; windows never shrink: a map is padded to whole M x M windows (a 2 x 2
    map becomes one 7 x 7 window of 45 unmasked zero tokens) and the shift is turned off only
    where the window covers the padded side. Merging pads odd sides as we do.
  - timm: built for one ``img_size`` (an input of another size is an error unless the model is
    rebuilt, ``set_input_size``, or made with ``strict_img_size=False``), H and W must be
    multiples of the patch size, windows shrink by our rule but for the build-time size, and a
    map is padded to whole windows *after* the cyclic shift instead of before.
  - the authors' detection backbone pads as we do (patch embedding, windows, merging) but keeps
    M x M windows and the shift at every map size.
* Fine-tuning at another window (224 -> 384: M = 7 -> 12): loading a state dict whose bias tables
  have another size resamples them bicubically (``resample_relative_position_bias``, the
  authors' ``load_pretrained``); it happens in ``load_state_dict`` and in ``port()``/
  ``create_model(pretrained=...)`` (through ``adapt_state_dict``).

Ablation switches (Table 4; every registered builder takes them, the defaults are the paper)
-----------------------------------------------------------------------------------------------
* ``shift=True``: SW-MSA in every second block (§3.2). ``shift=False`` is the "w/o shifting"
  row: every block uses the regular window partition, so there is no cyclic shift and no
  attention mask (every ``SwinBlock.shift`` is 0). It has no parameters: the state dict is the
  same, and the same weights load into either layout. A map side no larger than M is never
  shifted along (see above), so the two layouts differ only where some stage's map has a side
  larger than M: at 224^2 in stages 1-3, but at 28^2 nowhere (stage 1 is 7 x 7).
* ``rel_pos_bias=True``: the relative position bias B of eq. (4). ``rel_pos_bias=False`` is the
  "no pos." row: SoftMax(QK^T / sqrt(d)) V, without the ``relative_position_bias_table``
  parameters ((2M-1)^2 x heads per block; 23,322 for Swin-T) and their index buffers. Weights
  that hold bias tables are refused by such a model, not silently loaded without B:
  ``load_state_dict`` raises even with ``strict=False``, and ``port()`` /
  ``create_model(pretrained=...)`` report the tables as unexpected keys.
* Table 4's other position rows ("abs. pos.", "abs.+rel. pos.", "rel. pos. w/o app.") are not
  provided.
* ``verify`` has no rows for these: Table 4 prints accuracy only (ImageNet-1K top-1 / top-5,
  COCO box / mask AP, ADE20K mIoU), no parameters or FLOPs. Shifting changes neither the
  parameters nor the MACs (the masked SW-MSA attends over the same windows); dropping B removes
  only the tables (and the gathering of B, no multiply-adds).
* They are switches, not deviations, and the ports do not set them: torchvision's and timm's
  Swin weights are the default layout.

Deviations
----------
None: the registered models are the paper's (and the official configs'); torchvision and timm
ship the same networks, so their weights load without layout flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.layers import (
    ClassifierHead,
    DropPath,
    StageSpec,
    ZooModel,
    default_cfg,
    feature_take_indices,
)
from visionzoo.registry import ModelInfo, Published, register_model

__all__ = [
    "PatchEmbed",
    "PatchMerging",
    "Stage",
    "SwinBlock",
    "SwinTransformer",
    "WindowAttention",
    "pad_to_multiple",
    "resample_relative_position_bias",
    "shift_mask",
    "shifted_window_attention",
    "window_and_shift",
    "window_partition",
    "window_reverse",
]

MASK_VALUE = -100.0  # added to the logits of token pairs from different sub-windows (authors')


# ---------------------------------------------------------------------------------------------
# Windows (§3.2)
# ---------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, wh * ww, C): non-overlapping wh x ww windows, row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // wh, wh, W // ww, ww, C)  # (B, nH, wh, nW, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nH, nW, wh, ww, C)
    return x.reshape(-1, wh * ww, C)  # (B * nH * nW, wh * ww, C)


def window_reverse(windows: torch.Tensor, wh: int, ww: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, wh * ww, C) -> (B, H, W, C), the inverse of ``window_partition``."""
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C)  # (B, nH, nW, wh, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nH, wh, nW, ww, C)
    return x.reshape(-1, H, W, C)  # (B, H, W, C)


def window_and_shift(H: int, W: int, M: int, shift: int) -> tuple[int, int, int, int]:
    """(wh, ww, sh, sw): the window and cyclic shift of an H x W map for window size M.

    A side not larger than M is one window: the window shrinks to that side and the shift along it
    is off (the authors' ``if min(input_resolution) <= window_size``, applied per side).
    """
    wh, ww = min(H, M), min(W, M)
    sh = shift if H > M else 0
    sw = shift if W > M else 0
    return wh, ww, sh, sw


@torch.fx.wrap
def pad_to_multiple(x: torch.Tensor, multiple: int, channels_last: bool = False) -> torch.Tensor:
    """Zero-pad H and W at the bottom/right up to multiples of ``multiple`` (the authors'
    detection backbone: before patch partition and before merging an odd side).

    ``x`` is (B, C, H, W), or (B, H, W, C) with ``channels_last``. Wrapped for ``torch.fx``: the
    amounts depend on the size, so a symbolic trace records one call that runs on real tensors.
    """
    H, W = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    pad_b, pad_r = (-H) % multiple, (-W) % multiple
    if not (pad_b or pad_r):
        return x
    # F.pad lists (before, after) pairs from the last dim: C (nothing) first when channels last
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b) if channels_last else (0, pad_r, 0, pad_b))


def shift_mask(H: int, W: int, wh: int, ww: int, sh: int, sw: int,
               device: torch.device | None = None, dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
    """The SW-MSA mask (Fig. 4) of a padded H x W map after a cyclic shift by (sh, sw).

    After the shift, the last window row (column) holds two regions of the unshifted map: the
    M - s rows from its far end and the s rows that wrapped around from its start; all other
    windows hold one. Each token gets a region label; pairs with different labels (not
    neighbours before the shift) get ``MASK_VALUE``. Returns (nW, N, N)
    with N = wh * ww. Labels come from index comparisons (no in-place writes), so the mask
    traces and exports as plain tensor ops.
    """
    rows = torch.arange(H, device=device)
    cols = torch.arange(W, device=device)
    # region along each axis: 0 = [0, H - wh), 1 = [H - wh, H - sh), 2 = [H - sh, H)
    rh = (rows >= H - wh).long() + (rows >= H - sh).long() if sh else torch.zeros_like(rows)
    rw = (cols >= W - ww).long() + (cols >= W - sw).long() if sw else torch.zeros_like(cols)
    label = (rh[:, None] * 3 + rw[None, :]).to(dtype)  # (H, W)
    label = window_partition(label[None, :, :, None], wh, ww).squeeze(-1)  # (nW, N)
    diff = label[:, None, :] - label[:, :, None]  # (nW, N, N): query row, key column
    return torch.where(diff != 0, torch.full_like(diff, MASK_VALUE), torch.zeros_like(diff))


def relative_position_index(M: int) -> torch.Tensor:
    """(M*M, M*M) index into the flattened (2M-1) x (2M-1) bias table (§3.2, eq. (4)).

    Entry (i, j) is the table row of the offset from token j to token i: (dy + M - 1) * (2M - 1)
    + (dx + M - 1) with dy, dx in [-M + 1, M - 1].
    """
    ys, xs = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (M*M,) coordinates of the window's tokens
    dy = ys[:, None] - ys[None, :] + M - 1  # (M*M, M*M), in [0, 2M-2]
    dx = xs[:, None] - xs[None, :] + M - 1
    return dy * (2 * M - 1) + dx


def resample_relative_position_bias(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Resample a ((2m-1)^2, heads) bias table to window ``window_size`` (bicubic).

    This is how the authors fine-tune 224 models (M = 7) at 384 (M = 12): the table is seen as a
    (2m-1) x (2m-1) image per head and resized with bicubic interpolation (``align_corners``
    False, their ``load_pretrained``).
    """
    n_old, heads = table.shape
    s_old = math.isqrt(n_old)
    s_new = 2 * window_size - 1
    if s_old * s_old != n_old:
        raise ValueError(f"a relative position bias table has (2M-1)^2 rows; got {n_old}")
    if s_old == s_new:
        return table
    grid = table.t().reshape(1, heads, s_old, s_old)  # (L, heads) -> (1, heads, 2m-1, 2m-1)
    grid = F.interpolate(grid.float(), size=(s_new, s_new), mode="bicubic", align_corners=False)
    return grid.reshape(heads, s_new * s_new).t().to(table.dtype)  # -> ((2M-1)^2, heads)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class WindowAttention(nn.Module):
    """W-MSA / SW-MSA on windows with relative position bias (§3.2, eq. (4)).

    ``relative_position_bias_table`` is B^ ((2M-1)^2 x heads), ``relative_position_index`` the
    buffer that gathers the M^2 x M^2 bias B from it. ``rel_pos_bias=False`` (Table 4's "no pos."
    ablation) drops B: SoftMax(QK^T / sqrt(d)) V, with neither the table nor the index (both
    are registered as ``None``). ``fused`` selects ``scaled_dot_product_attention`` (bias and
    shift mask folded into ``attn_mask``) over the explicit softmax.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, fused: bool = True,
                 rel_pos_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5  # 1 / sqrt(d) of eq. (4)
        self.fused, self.rel_pos_bias = fused, rel_pos_bias
        if rel_pos_bias:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1) ** 2, num_heads))
            self.register_buffer("relative_position_index",
                                 relative_position_index(window_size), persistent=False)
        else:  # Table 4 "no pos.": no B, so no table and no index
            self.register_parameter("relative_position_bias_table", None)
            self.register_buffer("relative_position_index", None, persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def init_buffers(self) -> None:
        """Recompute the index buffer (after ``to_empty`` of a model built on the meta device)."""
        index = self.relative_position_index
        if index is not None:  # None without relative position bias
            self.relative_position_index = relative_position_index(self.window_size).to(
                index.device)

    def relative_position_bias(self, wh: int, ww: int) -> torch.Tensor:
        """B of eq. (4) for a wh x ww window: (heads, N, N), N = wh * ww."""
        M = self.window_size
        index = self.relative_position_index  # (M*M, M*M)
        if (wh, ww) != (M, M):
            # a shrunk window is the top-left wh x ww corner of an M x M one: its offsets are a
            # subset, so the same table rows apply
            keep = (torch.arange(wh, device=index.device)[:, None] * M
                    + torch.arange(ww, device=index.device)[None, :]).flatten()  # (N,)
            index = index[keep][:, keep]  # (N, N)
        n = wh * ww
        bias = self.relative_position_bias_table[index.reshape(-1)]  # (N*N, heads)
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)

    def forward(self, x: torch.Tensor, window: tuple[int, int],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C) windows; mask: (nW, N, N) shift mask or None."""
        Bw, N, C = x.shape
        qkv = self.qkv(x).view(Bw, N, 3, self.num_heads, self.head_dim)  # (Bw, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (Bw, h, N, d)
        # the additive term of eq. (4)'s softmax: B (1, h, N, N), plus the shift mask (nW, 1, N, N)
        # broadcast over the heads; None when there is neither (rel_pos_bias=False, no shift)
        bias = None
        if self.rel_pos_bias:
            bias = self.relative_position_bias(*window).unsqueeze(0).to(q.dtype)  # (1, h, N, N)
        nw = 1
        if mask is not None:
            nw = mask.shape[0]
            mask = mask.unsqueeze(1).to(q.dtype)  # (nW, 1, N, N): windows of one image
            bias = mask if bias is None else bias + mask  # (nW, h or 1, N, N)
        drop = self.attn_drop if self.training else 0.0
        # On CPU, SDPA has no fused kernel that returns a gradient for attn_mask: with the bias
        # table trained it falls back to its math path, which is slower than the explicit one
        # below (and needs the mask materialised per window), so training takes the explicit path.
        # Without a trained bias its bf16 backward is slower too (Swin-T at 56 px, 2 threads:
        # 76 img/s fused vs 159 explicit; float32 84 vs 79), so only float32 keeps SDPA there.
        table = self.relative_position_bias_table
        learns_bias = table is not None and table.requires_grad
        if self.fused and not (x.device.type == "cpu" and torch.is_grad_enabled()
                               and (learns_bias or q.dtype != torch.float32)):
            if bias is not None and nw > 1:  # (B, nW, h, N, N) -> (B * nW, h, N, N)
                bias = bias.unsqueeze(0).expand(Bw // nw, -1, -1, -1, -1)
                bias = bias.reshape(Bw, bias.shape[2], N, N)  # one mask per window
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (Bw, h, N, N)
            if bias is not None:
                # add the (nW, h or 1, N, N) bias by broadcasting over the images (no copy per
                # image)
                attn = attn.view(Bw // nw, nw, self.num_heads, N, N) + bias
                attn = attn.view(Bw, -1, N, N)
            attn = F.dropout(attn.softmax(dim=-1), drop, self.training)
            out = attn @ v  # (Bw, h, N, d)
        out = out.transpose(1, 2).reshape(Bw, N, C)  # (Bw, h, N, d) -> (Bw, N, h * d)
        return self.proj_drop(self.proj(out))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # fine-tuning at another window size: resample the table instead of failing on its shape
        # (without a table of ours, a table in the weights stays an unexpected key: refused)
        key = prefix + "relative_position_bias_table"
        table, own = state_dict.get(key), self.relative_position_bias_table
        if table is not None and own is not None and table.shape != own.shape:
            if table.shape[1] == self.num_heads:
                state_dict[key] = resample_relative_position_bias(table, self.window_size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        text = f"window={self.window_size}, heads={self.num_heads}, fused={self.fused}"
        return text if self.rel_pos_bias else text + ", rel_pos_bias=False"


@torch.fx.wrap
def shifted_window_attention(x: torch.Tensor, attn: WindowAttention, window_size: int,
                             shift: int) -> torch.Tensor:
    """W-MSA (``shift`` 0) or SW-MSA on a (B, H, W, C) map of any size (§3.2, Fig. 2 and 4):
    pad to whole windows, cyclic shift, partition, attend, reverse, shift back, crop.

    Wrapped for ``torch.fx``: the window, shift, padding and mask depend on the map's size, so a
    symbolic trace records one call that runs on real tensors (``torch.export``/``compile`` trace
    through it with the sizes known).
    """
    B, H, W, C = x.shape
    wh, ww, sh, sw = window_and_shift(H, W, window_size, shift)
    pad_b, pad_r = (-H) % wh, (-W) % ww
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C), zeros bottom/right
    Hp, Wp = H + pad_b, W + pad_r
    mask = None
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))  # (B, Hp, Wp, C), shifted up-left
        mask = shift_mask(Hp, Wp, wh, ww, sh, sw, x.device, x.dtype)  # (nW, N, N)
    windows = window_partition(x, wh, ww)  # (B * nW, N, C), N = wh * ww
    windows = attn(windows, (wh, ww), mask)  # (B * nW, N, C)
    x = window_reverse(windows, wh, ww, Hp, Wp)  # (B, Hp, Wp, C)
    if sh or sw:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))  # (B, Hp, Wp, C), shifted back
    if pad_b or pad_r:
        x = x[:, :H, :W, :]  # (B, H, W, C)
    return x


class Mlp(nn.Module):
    """The block's 2-layer MLP with GELU in between (§3.3: expansion ratio 4)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """Fig. 3(b), eq. (3): z^ = (S)W-MSA(LN(z)) + z; z = MLP(LN(z^)) + z^.

    ``shift`` = 0 gives W-MSA, M // 2 gives SW-MSA (a shift size here; the model's ``shift`` flag
    chooses between the two layouts). ``rel_pos_bias`` adds B of eq. (4). Works on NHWC maps of
    any size (see the module docstring for padding and shrinking).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, fused_attn: bool = True,
                 rel_pos_bias: bool = True):
        super().__init__()
        if not 0 <= shift < window_size:
            raise ValueError(f"shift must be in [0, window_size); got {shift} for M={window_size}")
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop,
                                    fused_attn, rel_pos_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def windows_for(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(wh, ww, sh, sw): window and shift used on an H x W map (shrunk, unshifted sides)."""
        return window_and_shift(H, W, self.window_size, self.shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        attended = shifted_window_attention(self.norm1(x), self.attn, self.window_size, self.shift)
        x = x + self.drop_path(attended)  # z^ = (S)W-MSA(LN(z)) + z
        return x + self.drop_path(self.mlp(self.norm2(x)))  # z = MLP(LN(z^)) + z^


class PatchEmbed(nn.Module):
    """Patch partition + linear embedding (§3.1) as one p x p / p conv, then LayerNorm.

    (B, C_in, H, W) -> (B, C, ceil(H/p), ceil(W/p)): a side that is not a multiple of p is first
    zero-padded at the bottom/right (the authors' detection backbone), so any size has patches.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(pad_to_multiple(x, self.patch_size))  # (B, C, H/p, W/p)
        x = self.norm(x.permute(0, 2, 3, 1))  # (B, H/p, W/p, C): LayerNorm over C
        return x.permute(0, 3, 1, 2)  # (B, C, H/p, W/p), a view: no copy


class PatchMerging(nn.Module):
    """§3.1: concatenate the features of each 2x2 group of neighbouring patches (4C), LayerNorm,
    linear 4C -> 2C (no bias). Concatenation order (row offset, column offset): (0,0), (1,0),
    (0,1), (1,1), the authors' order, which torchvision and timm keep. An odd side is padded
    with a zero row/column first (authors' detection backbone)."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, 2, channels_last=True)  # (B, H, W, C), H and W even
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, 2C)


class SwinStage(nn.Module):
    """One stage of Table 7: patch merging (stages 2-4) and ``depth`` blocks alternating W-MSA
    and SW-MSA; with ``shift=False`` (Table 4 "w/o shifting") every block is W-MSA."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int,
                 downsample: bool, drop_path: Sequence[float], fused_attn: bool = True,
                 shift: bool = True, **block_kwargs: float | bool):
        super().__init__()
        self.downsample: nn.Module = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        shifted = window_size // 2  # §3.2: displaced by floor(M/2) in every second block
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, num_heads, window_size, shift=shifted if shift and j % 2 else 0,
                      drop_path=drop_path[j], fused_attn=fused_attn, **block_kwargs)
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H', W'): NCHW between stages (the public layout), NHWC
        inside (tokens with channels last, as LayerNorm and attention want them)."""
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C_in), a view of the previous stage's tokens
        x = self.blocks(self.downsample(x))  # (B, H', W', C)
        return x.permute(0, 3, 1, 2)  # (B, C, H', W'), a view: no copy


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of Table 7: its channel number C ("dim"), Swin blocks, attention heads."""

    dim: int
    layers: int
    heads: int


class SwinTransformer(ZooModel):
    """Patch partition + embedding, four stages of Swin blocks, LayerNorm, global pool, fc.

    ``shift`` (default True, the paper): shifted windows in every second block; False is Table
    4's "w/o shifting" (regular windows everywhere: no cyclic shift, no mask). ``rel_pos_bias``
    (default True, the paper): the relative position bias B of eq. (4); False is Table 4's "no
    pos." (no bias tables). Both are kept as attributes of these names.
    """

    def __init__(self, stages: Sequence[Stage], window_size: int = 7, patch_size: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2,
                 fused_attn: bool = True, global_pool: str = "avg", shift: bool = True,
                 rel_pos_bias: bool = True):
        super().__init__()
        if window_size < 1 or patch_size < 1:
            raise ValueError("window_size and patch_size must be positive")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.window_size, self.patch_size, self.fused_attn = window_size, patch_size, fused_attn
        self.shift, self.rel_pos_bias = shift, rel_pos_bias  # Table 4's ablation switches
        self.arch = tuple(stages)
        self.patch_embed = PatchEmbed(in_chans, stages[0].dim, patch_size)

        total = sum(s.layers for s in stages)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear in depth
        blocks, in_dim, reduction = 0, stages[0].dim, patch_size
        self.feature_info = []
        layers = []
        for i, s in enumerate(stages):
            if i > 0:
                reduction *= 2
            layers.append(SwinStage(in_dim, s.dim, s.layers, s.heads, window_size,
                                    downsample=i > 0, drop_path=dpr[blocks:blocks + s.layers],
                                    fused_attn=fused_attn, shift=shift, mlp_ratio=mlp_ratio,
                                    qkv_bias=qkv_bias, drop=proj_drop_rate,
                                    attn_drop=attn_drop_rate, rel_pos_bias=rel_pos_bias))
            self.feature_info.append({"name": f"stage{i + 1}", "channels": s.dim,
                                      "reduction": reduction, "module": f"stages.{i}"})
            blocks += s.layers
            in_dim = s.dim
        self.stages = nn.Sequential(*layers)
        self.num_features = in_dim
        self.norm = nn.LayerNorm(in_dim)  # on the last stage's output only
        self.head = ClassifierHead(in_dim, num_classes, drop_rate, global_pool)
        self.pretrained_cfg = default_cfg(crop_pct=0.875, interpolation="bicubic")
        self.init_weights()

    def min_input_size(self) -> int:
        """The patch size: one whole patch. Smaller inputs work too (zero-padded to one patch);
        from there every stage has a map of at least 1 x 1 (odd sides pad before merging)."""
        return self.patch_size

    # -- forward ------------------------------------------------------------------------------

    def trunk(self) -> list[tuple[nn.Module, bool]]:
        """Patch embedding, then the four stages (their outputs are the feature maps). Every
        step takes and returns NCHW; the final LayerNorm stays outside (timm's layout)."""
        return [(self.patch_embed, False), *((stage, True) for stage in self.stages)]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The LayerNorm after the last stage, over the channels of an NCHW map."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LN over C, back to NCHW

    def _has_last_stage(self) -> bool:
        """False once ``prune_intermediate_layers`` cut the trunk before the last stage: the
        final LayerNorm (of the last stage's width) then has nothing to normalise."""
        return len(self.feature_info) == len(self.stages)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 8C, H/32, W/32): the last stage's map after the final LayerNorm."""
        x = super().forward_features(x)
        return self.final_norm(x) if self._has_last_stage() else x

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's semantics for Swin: the maps are the raw stage outputs; ``norm=True`` applies
        the final LayerNorm to the last stage's map (when it is taken); the final output is
        ``forward_features`` (normed), or the raw map where ``stop_early`` stopped before the
        last stage."""
        final, maps = super().forward_intermediates(x, indices, stop_early=stop_early,
                                                    output_fmt=output_fmt)
        _, last = feature_take_indices(len(self.feature_info), indices)
        last_stage = len(self.stages) - 1
        ran_last_stage = self._has_last_stage() and not (stop_early and last < last_stage)
        norm_last_map = norm and ran_last_stage and last == last_stage  # the last map taken
        if norm_last_map or (ran_last_stage and not intermediates_only):
            final = self.final_norm(final)
        if norm_last_map:
            maps[-1] = final if output_fmt == "NCHW" else final.permute(0, 2, 3, 1)
        return maps if intermediates_only else (final, maps)

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the stages after the last map in ``indices``; ``prune_norm`` also replaces the
        final LayerNorm with an identity, ``prune_head`` the head (timm's semantics)."""
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if prune_norm:
            self.norm = nn.Identity()
        return take

    # -- paper table, weight decay, init, loading ---------------------------------------------

    def stage_specs(self) -> list[StageSpec]:
        """Table 7: stage, downsampling rate, the merging/embedding and the blocks."""
        rows = []
        for i, stage in enumerate(self.stages):
            r = self.feature_info[i]["reduction"]
            first = stage.blocks[0]
            dim, heads, M = first.attn.dim, first.attn.num_heads, first.window_size
            p = self.patch_embed.patch_size
            concat = f"concat {p}x{p}" if i == 0 else "concat 2x2"
            desc = (f"{concat}, {dim}-d, LN; "
                    f"[win. sz. {M}x{M}, dim {dim}, head {heads}] x{len(stage.blocks)}")
            modules = ("patch_embed", "stages.0") if i == 0 else (f"stages.{i}",)
            rows.append(StageSpec(f"stage{i + 1} ({r}x)", modules, desc, len(stage.blocks)))
        fc = "" if self.num_classes == 0 else f", {self.num_classes}-d fc"
        rows.append(StageSpec("head", ("norm", "head"), f"LN, average pool{fc}"))
        return rows

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    def init_weights(self) -> None:
        """The authors' init: truncated normal (std .02) linear weights and bias tables, zero
        biases, unit LayerNorms; the patch-embedding conv keeps PyTorch's default."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention) and m.relative_position_bias_table is not None:
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the buffers a state dict does not hold (the relative position indices), as
        needed after building on the meta device and ``to_empty``."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.init_buffers()

    def adapt_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Resample bias tables of another window size to ours (fine-tuning 224 -> 384).

        Without bias tables (``rel_pos_bias=False``) the weights' tables are left in place, so
        the strict loader (``visionzoo.ports.load_strict``: ``port()``, ``create_model(
        pretrained=...)``) refuses them as unexpected keys instead of dropping B silently.
        """
        out = dict(state_dict)
        for name, module in self.named_modules():
            if isinstance(module, WindowAttention) and module.rel_pos_bias:
                key = f"{name}.relative_position_bias_table"
                table = out.get(key)
                if (table is not None and table.ndim == 2 and table.shape[1] == module.num_heads
                        and table.shape != module.relative_position_bias_table.shape):
                    out[key] = resample_relative_position_bias(table, module.window_size)
        return out

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list, unexpected_keys: list,
                              error_msgs: list) -> None:
        # weights with bias tables would lose B in a model without it: an error even with
        # strict=False (as a shape mismatch is), naming the flag rather than only the keys
        if not self.rel_pos_bias:
            tables = [k for k in state_dict
                      if k.startswith(prefix) and k.endswith("relative_position_bias_table")]
            if tables:
                error_msgs.append(
                    f"the weights hold {len(tables)} relative position bias tables (e.g. "
                    f"{tables[0]}) but this model was built with rel_pos_bias=False (Table 4's "
                    f"'no pos.', no bias B): build it with rel_pos_bias=True for these weights, "
                    f"or remove the *.relative_position_bias_table keys to start the ablation "
                    f"from them deliberately")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


# ---------------------------------------------------------------------------------------------
# Registered variants: §3.3 / Table 7 architectures, Table 1 numbers.
# ---------------------------------------------------------------------------------------------

# §3.3: C = 96 / 96 / 128 / 192, layer numbers {2,2,6,2} (T) and {2,2,18,2}, d = 32 per head.
ARCHS: dict[str, tuple[Stage, ...]] = {
    "swin_t": (Stage(dim=96, layers=2, heads=3), Stage(dim=192, layers=2, heads=6),
               Stage(dim=384, layers=6, heads=12), Stage(dim=768, layers=2, heads=24)),
    "swin_s": (Stage(dim=96, layers=2, heads=3), Stage(dim=192, layers=2, heads=6),
               Stage(dim=384, layers=18, heads=12), Stage(dim=768, layers=2, heads=24)),
    "swin_b": (Stage(dim=128, layers=2, heads=4), Stage(dim=256, layers=2, heads=8),
               Stage(dim=512, layers=18, heads=16), Stage(dim=1024, layers=2, heads=32)),
    "swin_l": (Stage(dim=192, layers=2, heads=6), Stage(dim=384, layers=2, heads=12),
               Stage(dim=768, layers=18, heads=24), Stage(dim=1536, layers=2, heads=48)),
}

PAPER = "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
ARXIV = "2103.14030"
TABLE1 = "Table 1 ('FLOPs' are multiply-adds, attention matmuls included)"
TV_META = "torchvision weights metadata (num_params, GFLOPS)"
_NOTES = ("MACs count every conv, linear and attention matmul (q k^T and attn v, through "
          "scaled_dot_product_attention); the paper's 'FLOPs' are these multiply-adds (its own "
          "counter adds LayerNorm elementwise terms, below the printed precision). "
          "Stochastic depth default from the official config: {dp}.")


_B384 = ("printed 47.0 G; measured 47.083 G here and 47.105 G by the flops() methods of the "
         "authors' released code, so no counting convention reproduces it (truncating 47.08 would, "
         "but Table 1 rounds elsewhere: 4.49 is printed 4.5); allowed 0.1 G (0.2 %)")


def _info(name: str, params: str, macs: str, exact: int, drop_path: float, size: int = 224,
          tv: tuple[str, str] | None = None, timm: str | None = None,
          macs_note: str = "") -> ModelInfo:
    published = [Published("params", params, "M", TABLE1),
                 Published("macs", macs, "G", TABLE1, tolerance=0.1 if macs_note else None,
                           note=macs_note)]
    if tv is not None:  # torchvision prints exact counts and GFLOPS to 3 decimals
        published += [Published("params", tv[0], "", TV_META),
                      Published("macs", tv[1], "G", TV_META)]
    refs = {}
    if tv is not None:
        refs["torchvision"] = name
    if timm is not None:
        refs["timm"] = timm
    return ModelInfo(paper=PAPER, arxiv=ARXIV, family="swin", published=tuple(published),
                     num_params=exact, input_size=(3, size, size), min_input_size=4,
                     references=refs, notes=_NOTES.format(dp=drop_path))


def _swin(arch: str, window: int, drop_path: float, size: int = 224,
          **kwargs: object) -> SwinTransformer:
    kwargs.setdefault("window_size", window)  # overridable: fine-tuning at another window
    kwargs.setdefault("drop_path_rate", drop_path)
    model = SwinTransformer(ARCHS[arch], **kwargs)
    if size != 224:  # official 384 fine-tuning configs evaluate without crop (TEST.CROP False)
        model.pretrained_cfg = default_cfg((3, size, size), crop_pct=1.0, interpolation="bicubic")
    return model


@register_model(_info("swin_t", "28", "4.5", 28_288_354, 0.2, tv=("28288354", "4.491"),
                      timm="swin_tiny_patch4_window7_224"))
def swin_t(**kwargs) -> SwinTransformer:
    return _swin("swin_t", window=7, drop_path=0.2, **kwargs)


@register_model(_info("swin_s", "50", "8.7", 49_606_258, 0.3, tv=("49606258", "8.741"),
                      timm="swin_small_patch4_window7_224"))
def swin_s(**kwargs) -> SwinTransformer:
    return _swin("swin_s", window=7, drop_path=0.3, **kwargs)


@register_model(_info("swin_b", "88", "15.4", 87_768_224, 0.5, tv=("87768224", "15.431"),
                      timm="swin_base_patch4_window7_224"))
def swin_b(**kwargs) -> SwinTransformer:
    return _swin("swin_b", window=7, drop_path=0.5, **kwargs)


@register_model(_info("swin_b_384", "88", "47.0", 87_903_584, 0.5, size=384, macs_note=_B384,
                      timm="swin_base_patch4_window12_384"))
def swin_b_384(**kwargs) -> SwinTransformer:
    return _swin("swin_b", window=12, drop_path=0.5, size=384, **kwargs)


@register_model(_info("swin_l", "197", "34.5", 196_532_476, 0.2,
                      timm="swin_large_patch4_window7_224"))
def swin_l(**kwargs) -> SwinTransformer:
    return _swin("swin_l", window=7, drop_path=0.2, **kwargs)


@register_model(_info("swin_l_384", "197", "103.9", 196_735_516, 0.2, size=384,
                      timm="swin_large_patch4_window12_384"))
def swin_l_384(**kwargs) -> SwinTransformer:
    return _swin("swin_l", window=12, drop_path=0.2, size=384, **kwargs)
