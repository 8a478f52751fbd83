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
                                                                             -> ``shift_mask``
* §3.2 "Relative position bias", eq. (4): Attention(Q, K, V) = SoftMax(QK^T / sqrt(d) + B) V,
  B taken from a learned table B^ of size (2M-1) x (2M-1) per head, indexed by a buffer
                                                                             -> ``WindowAttention``
* §3.3 and Table 7: the variants (C, layer numbers, heads; d = 32 per head)
                                                                      -> ``ARCHS``, ``swin_*``
* Table 1: parameters and FLOPs (multiply-adds) of Swin-T/S/B/L at 224^2 and 384^2.
* Appendix A2 and the official configs: stochastic depth 0.2 / 0.3 / 0.5 for T / S / B (also
  B at 384), 0.2 for L (ImageNet-22K pre-training and its 384 fine-tuning).

Defaults and conventions
------------------------
* Internally the maps are NHWC (tokens last, as the attention wants them); every public output
  (``forward_features``, ``forward_intermediates``, ``features_only``) is NCHW.
* The last stage map (``forward_features`` and the last ``features_only`` map) is after the final
  LayerNorm, as the classifier sees it; stages 1-3 are the raw stage outputs.
* Window attention goes through ``torch.nn.functional.scaled_dot_product_attention`` with the
  relative position bias and the shift mask folded into ``attn_mask`` (fused CPU/GPU kernels).
  ``fused_attn=False`` (or ``attn.fused = False`` on a module) selects the explicit eq. (4)
  softmax path; both compute the same function (tested). Training on CPU always takes the
  explicit path: no fused CPU kernel returns the gradient of ``attn_mask`` (the bias table is
  learned), and SDPA's math fallback is slower than the explicit softmax.
* The shift mask adds -100 to the logits of token pairs from different sub-windows, as the
  authors' code does (exp(-100) ~ 4e-44 is negligible next to any unmasked weight: a hard mask).

Inputs of any size (the authors' classification code takes only its training size)
-----------------------------------------------------------------------------------------
* H and W must be multiples of the patch size 4 (patch partition); an error says so otherwise.
* A map whose side is not a multiple of the window is zero-padded at the bottom/right to one,
  after the block's LayerNorm and before the cyclic shift, and cropped back after the reverse
  shift; padded tokens are not masked. This is the authors' detection/segmentation backbone
  (Swin-Transformer-Object-Detection) and torchvision; timm pads after the shift instead, so timm
  and we differ at such sizes (at 224/384 nothing is padded and all agree).
* A map side not larger than M shrinks the window to that side and turns the shift off, as the
  authors' ``SwinTransformerBlock`` does (``if min(input_resolution) <= window_size``); we apply
  it per side, so for square maps it is exactly theirs. A shrunk m x m window uses the centre
  (2m-1)^2 entries of the (2M-1)^2 bias table: the same learned bias per relative offset (the
  authors would build a smaller table for such a size).
* Patch merging of an odd side pads one zero row/column first (authors' detection code). A
  merging needs a map at least 2 tokens high and wide: the smallest input is 20 x 20 (5x5 patches
  -> 3x3 -> 2x2 -> 1x1); smaller inputs get an error naming that constraint.
* Fine-tuning at another window (224 -> 384: M = 7 -> 12): loading a state dict whose bias tables
  have another size resamples them bicubically (``resample_relative_position_bias``, the
  authors' ``load_pretrained``); it happens in ``load_state_dict`` and in ``port()``/
  ``create_model(pretrained=...)`` (through ``adapt_state_dict``).

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

from visionzoo.layers import ClassifierHead, DropPath, StageSpec, ZooModel, default_cfg
from visionzoo.registry import ModelInfo, Published, register_model

__all__ = [
    "PatchEmbed",
    "PatchMerging",
    "Stage",
    "SwinBlock",
    "SwinTransformer",
    "WindowAttention",
    "resample_relative_position_bias",
    "shift_mask",
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
    buffer that gathers the M^2 x M^2 bias B from it. ``fused`` selects
    ``scaled_dot_product_attention`` (bias and shift mask folded into ``attn_mask``) over the
    explicit softmax.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, fused: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5  # 1 / sqrt(d) of eq. (4)
        self.fused = fused
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def init_buffers(self) -> None:
        """Recompute the index buffer (after ``to_empty`` of a model built on the meta device)."""
        index = self.relative_position_index
        self.relative_position_index = relative_position_index(self.window_size).to(index.device)

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
        bias = self.relative_position_bias(*window).unsqueeze(0).to(q.dtype)  # (1, h, N, N)
        nw = 1
        if mask is not None:
            nw = mask.shape[0]
            bias = bias + mask.unsqueeze(1).to(q.dtype)  # (nW, h, N, N): windows of one image
        drop = self.attn_drop if self.training else 0.0
        # On CPU, SDPA has no fused kernel that returns a gradient for attn_mask: with the bias
        # table trained it falls back to its math path, which is slower than the explicit one
        # below (and needs the mask materialised per window), so training takes the explicit path
        if self.fused and not (x.device.type == "cpu" and torch.is_grad_enabled()
                               and self.relative_position_bias_table.requires_grad):
            if nw > 1:  # (B, nW, h, N, N) -> (B * nW, h, N, N): one mask per window
                bias = bias.unsqueeze(0).expand(Bw // nw, -1, -1, -1, -1)
                bias = bias.reshape(Bw, self.num_heads, N, N)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (Bw, h, N, N)
            # add the (nW, h, N, N) bias by broadcasting over the images, without a copy per image
            attn = (attn.view(Bw // nw, nw, self.num_heads, N, N) + bias).view(Bw, -1, N, N)
            attn = F.dropout(attn.softmax(dim=-1), drop, self.training)
            out = attn @ v  # (Bw, h, N, d)
        out = out.transpose(1, 2).reshape(Bw, N, C)  # (Bw, h, N, d) -> (Bw, N, h * d)
        return self.proj_drop(self.proj(out))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # fine-tuning at another window size: resample the table instead of failing on its shape
        key = prefix + "relative_position_bias_table"
        table = state_dict.get(key)
        if table is not None and table.shape != self.relative_position_bias_table.shape:
            if table.shape[1] == self.num_heads:
                state_dict[key] = resample_relative_position_bias(table, self.window_size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"window={self.window_size}, heads={self.num_heads}, fused={self.fused}"


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

    ``shift`` = 0 gives W-MSA, M // 2 gives SW-MSA. Works on NHWC maps of any size (see the
    module docstring for padding and shrinking).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, fused_attn: bool = True):
        super().__init__()
        if not 0 <= shift < window_size:
            raise ValueError(f"shift must be in [0, window_size); got {shift} for M={window_size}")
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop,
                                    fused_attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def windows_for(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(wh, ww, sh, sw): window and shift used on an H x W map (shrunk, unshifted sides)."""
        M = self.window_size
        wh, ww = min(H, M), min(W, M)
        sh = self.shift if H > M else 0
        sw = self.shift if W > M else 0
        return wh, ww, sh, sw

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(S)W-MSA on an NHWC map: pad, cyclic shift, partition, attend, reverse, crop."""
        B, H, W, C = x.shape
        wh, ww, sh, sw = self.windows_for(H, W)
        pad_b, pad_r = (-H) % wh, (-W) % ww
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C), zeros bottom/right
        Hp, Wp = H + pad_b, W + pad_r
        mask = None
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))  # (B, Hp, Wp, C), shifted up-left
            mask = shift_mask(Hp, Wp, wh, ww, sh, sw, x.device, x.dtype)  # (nW, N, N)
        windows = window_partition(x, wh, ww)  # (B * nW, N, C)
        windows = self.attn(windows, (wh, ww), mask)  # (B * nW, N, C)
        x = window_reverse(windows, wh, ww, Hp, Wp)  # (B, Hp, Wp, C)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))  # (B, Hp, Wp, C), shifted back
        if pad_b or pad_r:
            x = x[:, :H, :W, :]  # (B, H, W, C)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.window_attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Patch partition + linear embedding (§3.1) as one p x p / p conv, then LayerNorm."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, C, H/p, W/p) -> (B, H/p, W/p, C)
        return self.norm(x)


class PatchMerging(nn.Module):
    """§3.1: concatenate the features of each 2x2 group of neighbouring patches (4C), LayerNorm,
    linear 4C -> 2C (no bias). Concatenation order (row offset, column offset): (0,0), (1,0),
    (0,1), (1,1), the authors' order, which torchvision and timm keep."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1], x.shape[2]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # (B, H+1?, W+1?, C), zeros bottom/right
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, 2C)


class SwinStage(nn.Module):
    """One stage of Table 7: patch merging (stages 2-4) and ``depth`` blocks alternating W-MSA
    and SW-MSA."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int,
                 downsample: bool, drop_path: Sequence[float], fused_attn: bool = True,
                 **block_kwargs: float | bool):
        super().__init__()
        self.downsample: nn.Module = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, num_heads, window_size, shift=0 if j % 2 == 0 else window_size // 2,
                      drop_path=drop_path[j], fused_attn=fused_attn, **block_kwargs)
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


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
    """Patch partition + embedding, four stages of Swin blocks, LayerNorm, average pool, fc."""

    def __init__(self, stages: Sequence[Stage], window_size: int = 7, patch_size: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2,
                 fused_attn: bool = True):
        super().__init__()
        if window_size < 1 or patch_size < 1:
            raise ValueError("window_size and patch_size must be positive")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.window_size, self.patch_size, self.fused_attn = window_size, patch_size, fused_attn
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
                                    fused_attn=fused_attn, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                    drop=proj_drop_rate, attn_drop=attn_drop_rate))
            self.feature_info.append({"name": f"stage{i + 1}", "channels": s.dim,
                                      "reduction": reduction})
            blocks += s.layers
            in_dim = s.dim
        self.stages = nn.Sequential(*layers)
        self.num_features = in_dim
        self.norm = nn.LayerNorm(in_dim)
        self.head = ClassifierHead(in_dim, num_classes, drop_rate)
        self.pretrained_cfg = default_cfg(crop_pct=0.875, interpolation="bicubic")
        self.init_weights()

    # -- input constraints --------------------------------------------------------------------

    def min_input_size(self) -> int:
        """Smallest H = W: every patch merging needs a map at least 2x2 (sides halve, rounding
        up, since odd sides are padded)."""
        side = 1
        for _ in range(len(self.stages) - 1):
            side = 2 * side if side == 1 else 2 * side - 1  # smallest side that halves to `side`
        return side * self.patch_size

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        name = self.model_name or type(self).__name__
        H, W = int(x.shape[-2]), int(x.shape[-1])
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"{name}: input height and width must be multiples of the patch size {p} (patch "
                f"partition splits the image into non-overlapping {p}x{p} patches); got {H}x{W}")
        h, w = H // p, W // p
        for i in range(1, len(self.stages)):
            if h < 2 or w < 2:
                m = self.min_input_size()
                raise ValueError(
                    f"{name}: input {H}x{W} is too small: the patch merging before stage {i + 1} "
                    f"concatenates 2x2 neighbouring patches and needs a map of at least 2x2, but "
                    f"gets {h}x{w}; the smallest input is {m}x{m}")
            h, w = -(-h // 2), -(-w // 2)

    # -- forward ------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stages(self.patch_embed(x))  # (B, H/32, W/32, 8C)
        return self.norm(x).permute(0, 3, 1, 2)  # NHWC -> NCHW

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x = self.patch_embed(x)
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out = self.norm(x) if i == len(self.stages) - 1 else x
            maps.append(out.permute(0, 3, 1, 2))  # NHWC -> NCHW
        return maps

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
            rows.append(StageSpec(f"stage{i + 1} ({r}x)", modules, desc, len(stage.blocks),
                                  fmt="NHWC"))
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
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the buffers a state dict does not hold (the relative position indices), as
        needed after building on the meta device and ``to_empty``."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.init_buffers()

    def adapt_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Resample bias tables of another window size to ours (fine-tuning 224 -> 384)."""
        out = dict(state_dict)
        for name, module in self.named_modules():
            if isinstance(module, WindowAttention):
                key = f"{name}.relative_position_bias_table"
                table = out.get(key)
                if (table is not None and table.ndim == 2 and table.shape[1] == module.num_heads
                        and table.shape != module.relative_position_bias_table.shape):
                    out[key] = resample_relative_position_bias(table, module.window_size)
        return out


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
                     num_params=exact, input_size=(3, size, size), min_input_size=20,
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
