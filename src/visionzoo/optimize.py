"""Faster inference: batch-norm folding, channels_last, oneDNN fusion, torch.compile, bf16, int8.

``optimize(model)`` returns an inference copy of a model (the original is left alone):

* **BN folding.** In eval mode a BatchNorm is the affine map y = (x - mu) * g / sqrt(var + eps) + b
  per channel, so a conv followed directly by one is a single conv with weights
  W * g / sqrt(var + eps) and bias (c - mu) * g / sqrt(var + eps) + b. Every ``Conv2d`` followed
  immediately by a ``BatchNorm2d`` inside an ``nn.Sequential`` is folded (our ``ConvNormAct``,
  torchvision's ``Conv2dNormActivation``); the BN becomes ``nn.Identity``. Only ``Sequential``
  pairs are folded because there the data flow is certain: in a custom module, registration order
  says nothing about which tensor goes where (DenseNet's BN -> ReLU -> conv, for one, must not be
  folded). A ``Conv2d`` subclass (TF "same" padding, ...) is folded only when the folded copy
  reproduces conv -> BN on a probe input, since a subclass may transform its weights in
  ``forward`` (weight standardisation). Folded weights are computed in float64, then cast back.
* **channels_last.** Weights are converted to NHWC and the input is converted by a forward
  pre-hook; oneDNN (CPU) and cuDNN (GPU) convolutions are faster on NHWC.
* **oneDNN fused convolutions** (CPU, ``onednn=True``, the default without ``compile``). Every
  plain ``Conv2d`` becomes a ``OneDNNConv2d``: one oneDNN call that applies the following
  activation (ReLU, ReLU6, SiLU, hard-swish, GELU, ...) to the output tile while it is still in
  registers, with its weight reordered into oneDNN's blocked layout once instead of on every
  call. Then each block is traced with torch.fx (``fuse_blocks``) to find what an
  ``nn.Sequential`` does not show: a BN fed only by a conv (DenseNet's BN after its 1x1 conv,
  torchvision's ``bn1(conv1(x))``) is folded, an activation fed only by a conv is fused, and a
  residual sum ``act(conv(x) + shortcut)`` becomes one convolution with an add post-op
  (``OneDNNConvAdd``). Pre-activation nets get two more exact rewrites: BN -> ReLU -> 1x1 conv
  becomes clamp -> 1x1 conv (``PreActClamp``: ReLU(a x + b) = a clamp(x) + b per channel, the
  a and b go into the conv), and DenseNet's blocks fill one preallocated tensor instead of
  concatenating the growing feature list for every layer (``DenseBlockBuffer``); a 1x1 conv
  followed by an unpadded average pool (DenseNet's transitions) runs after the pool, on a
  quarter of the pixels (the pool commutes with a per-pixel affine map). SE blocks'
  ``act(a * s + shortcut)`` becomes one ``addcmul`` into the fresh conv output (``ScaleAddAct``);
  SE's scale before a 1x1 conv (EfficientNet's projection) moves into that conv's weights at
  batch 1, ``(W diag(s)) U`` instead of a pass over U (``ScaledPointwiseConv``).
  Unpadded max pools (VGG, AlexNet, the SE nets' ceil-mode stem pool) become the maximum of
  their strided views (``StridedMaxPool2d``), without the int64 indices ATen's kernel writes.
  Float32 3x3 stride-1 convs with enough channels and tiles run by Winograd's F(2x2, 3x3)
  (``WinogradConv2d``, Lavin & Gray 2016): 2.25x fewer multiply-adds, as 16 GEMMs between
  small-GEMM transforms (VGG-16's conv3-conv5, ResNet's 256-channel stage, and its 128-channel
  stage at batch 1-2). A 1x1 conv on a 1x1 map (SE's FCs) runs as a linear layer.
  Why it pays on top of folding and NHWC, from op-level profiles on the
  benchmark machine: PyTorch sends a stride-1 1x1 conv at batch < 16 on one thread to its
  im2col/GEMM fallback, which copies NHWC activations to NCHW and back; the separate add and
  ReLU passes over ResNet-50's largest maps cost about a tenth of its time at batch 8; and the
  per-call weight reorder costs as much as the conv itself in the deep layers at batch 1. The
  result has the same parameters (shared, not copied), the same function and the same float32
  tolerance; the model itself keeps its class and its ``forward_*`` methods, but the blocks
  that were rewritten become GraphModules; ``stage_specs()``, which reads block attributes,
  answers with the rows read from the model before the rewrite (``profile`` works on the result).
  These modules are for inference: with gradients enabled they compute the plain ops.
* **torch.compile** (``compile=True``): inductor fuses the element-wise tails (activations,
  residual adds) into the convolutions' epilogues; on CPU with ``freezing`` (weights become
  constants and are pre-packed for oneDNN once), so the result is for inference under
  ``torch.no_grad``/``inference_mode``. The first call compiles (seconds to minutes). Each
  optimized model gets its own ``forward`` code object, so any number of them compile in one
  process (``_own_forward_code``).
* **int8** (``quantize="int8"``, CPU): post-training static quantization with torch.ao's FX
  graph mode (per-channel weights; the oneDNN engine where available, see
  ``default_int8_backend``), calibrated on images you pass. Conv -> ReLU6 outputs are quantized
  straight onto [0, 6] (the kernels cannot fuse ReLU6; quantizing the raw conv output would
  spend the 256 levels on a +-100 range the clamp throws away). The first conv, which sees the
  image, stays float (standard practice; it is the layer int8 hurts most, see below). A submodule
  that symbolic tracing cannot follow (data-dependent Python control flow) is left in float,
  wrapped in quantize/dequantize. Int8 changes logits by design, so it is judged by top-1
  agreement with the float model on real photos (``agreement``, ``int8_agreement``,
  ``real_photos``), never by a logit tolerance. With EfficientNet-Lite0's real weights it
  agrees on 77 % of the photo views (98 % have the float top-1 in the int8 top-5; 54 % with
  the first conv in int8 too): post-training per-tensor activation quantization is lossy for
  depthwise-separable nets (Nagel et al., arXiv 1906.04721), so use it there only after
  checking on your data (``benchmarks/results/int8.md``).
* **bfloat16** (``dtype=torch.bfloat16``): after folding (done in float64), weights and
  activations are cast to bfloat16 (8 significant bits, float32's range); the input is cast on
  the way in and the logits are returned in float32. On CPUs with AMX or AVX-512 BF16
  (Sapphire Rapids and later Xeons; ``cpu_has_native_bf16``) oneDNN runs bf16 convolutions and
  matmuls several times faster than float32 (ResNet-50, one thread, on this project's
  benchmark machine: 2.4x torchvision's float32 at batch 1, 6.0x at batch 8 compiled;
  ``benchmarks/results/SUMMARY.md``). Without those units
  bf16 is emulated and usually *slower*; ``optimize`` warns. Normalisation statistics,
  softmax and the residual sums then run in bf16 too, so its tolerance is its own (below).

Tolerance. Folding, NHWC and Winograd's transforms change only the rounding of the
floating-point sums, so the float32 optimized model's logits stay within ``FLOAT_TOLERANCE``
of the eager model's:
``max |optimized - eager| <= atol + rtol * max |eager|`` with atol = rtol = 1e-3 (relative
to the logits' scale, as rounding errors are).
That bound is loose against what is seen in practice (1e-6 to 1e-4 max |diff|) and tight
against real mistakes (a wrongly folded layer moves logits by O(1)). bfloat16 rounds every
activation to 2^-9 relative, and those errors accumulate over the depth: ``BF16_TOLERANCE`` is
atol = 0.05, rtol = 0.05 (measured 0.5-2 % of the logit scale on one small model per family
with random weights, tests/test_optimize.py; a deep net whose random-init activations grow
through the stages exceeds it and is refused: SE-ResNet-101 with timm's init has logits up to
136 and a bf16 error of 17), and, because a logit bound says little about decisions,
bf16 is also reported by top-1 agreement on real photos (``benchmarks/results/int8.md``).
``check=True`` (the default) verifies the tolerance on an example input and raises
``OptimizeError`` otherwise.
"""

from __future__ import annotations

import copy
import functools
import operator
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BF16_TOLERANCE", "FLOAT_TOLERANCE", "DenseBlockBuffer", "FusionCounts",
           "OneDNNConv2d", "OneDNNConvAdd", "OptimizeError", "OptimizeReport", "PreActClamp",
           "ScaleAddAct", "ScaleInPlace", "ScaledPointwiseConv", "SpatialMean",
           "StridedMaxPool2d", "WinogradConv2d", "agreement", "buffer_dense_blocks",
           "cpu_has_native_bf16", "default_int8_backend", "fold_batchnorm",
           "free_winograd_workspace", "fuse_blocks", "fuse_onednn", "int8_agreement",
           "onednn_available", "optimize", "quantize_int8", "real_photos", "stride_max_pools",
           "top1_agreement", "winograd_convs"]

# atol, rtol of the float32 and bfloat16 paths (module docstring)
FLOAT_TOLERANCE = (1e-3, 1e-3)
BF16_TOLERANCE = (5e-2, 5e-2)


class OptimizeError(RuntimeError):
    """An optimization that cannot be applied, or whose result leaves the documented tolerance."""


@dataclass
class OptimizeReport:
    """What ``optimize`` did; attached to the returned model as ``optimize_report``."""

    bn_folded: int = 0
    bn_left: int = 0  # BatchNorms that are not directly after a conv (pre-activation nets)
    channels_last: bool = False
    onednn_convs: int = 0  # convs run as oneDNN fused convolutions (OneDNNConv2d)
    onednn_acts: int = 0  # activations fused into them
    onednn_adds: int = 0  # residual sums fused into the conv before them (OneDNNConvAdd)
    dense_blocks_buffered: int = 0  # DenseNet blocks filling one buffer (DenseBlockBuffer)
    scales_into_convs: int = 0  # SE scales before a 1x1 conv (ScaledPointwiseConv)
    scales_in_place: int = 0  # other SE scales, written into the conv output (ScaleInPlace)
    spatial_means: int = 0  # SE squeezes (means over H, W) as row sums first (SpatialMean)
    pools_before_convs: int = 0  # 1x1 conv -> average pool run as pool -> conv
    max_pools_strided: int = 0  # max pools as maxima of strided views (StridedMaxPool2d)
    winograd_convs: int = 0  # 3x3 convs by Winograd F(2x2, 3x3) where they pay (WinogradConv2d)
    compiled: bool = False
    quantized: str | None = None
    dtype: str = "float32"
    # left float by int8 (untraceable, or the first conv)
    float_modules: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None  # vs eager on the check input (float paths)

    def short(self) -> str:
        """A table cell: "BN folded 20, channels_last"."""
        parts = [f"BN folded {self.bn_folded}"]
        parts += ["channels_last"] if self.channels_last else []
        parts += [f"oneDNN fused {self.onednn_convs}"] if self.onednn_convs else []
        parts += ["compile"] if self.compiled else []
        parts += [self.dtype] if self.dtype != "float32" else []
        parts += [self.quantized] if self.quantized else []
        return ", ".join(parts)

    def summary(self) -> str:
        parts = [f"folded {self.bn_folded} BatchNorm(s) into convs"]
        if self.bn_left:
            parts.append(f"{self.bn_left} BatchNorm(s) not after a conv kept")
        if self.channels_last:
            parts.append("channels_last")
        if self.onednn_convs:
            parts.append(f"{self.onednn_convs} conv(s) as oneDNN fused convolutions "
                         f"({self.onednn_acts} activation(s), {self.onednn_adds} residual "
                         f"sum(s) fused)")
        if self.dense_blocks_buffered:
            parts.append(f"{self.dense_blocks_buffered} dense block(s) without concatenation")
        if self.scales_into_convs:
            parts.append(f"{self.scales_into_convs} SE scale(s) taken by the 1x1 conv after")
        if self.scales_in_place:
            parts.append(f"{self.scales_in_place} SE scale(s) in place")
        if self.spatial_means:
            parts.append(f"{self.spatial_means} mean(s) over H, W as row sums first")
        if self.pools_before_convs:
            parts.append(f"{self.pools_before_convs} average pool(s) moved before their 1x1 conv")
        if self.winograd_convs:
            parts.append(f"{self.winograd_convs} conv(s) by Winograd F(2x2, 3x3)")
        if self.max_pools_strided:
            parts.append(f"{self.max_pools_strided} max pool(s) as strided maxima")
        if self.compiled:
            parts.append("torch.compile")
        if self.dtype != "float32":
            parts.append(self.dtype)
        if self.quantized:
            parts.append(f"{self.quantized} ({len(self.float_modules)} submodule(s) left float)")
        if self.max_abs_diff is not None:
            parts.append(f"max |logit diff| vs eager {self.max_abs_diff:.2e}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# batch-norm folding
# ---------------------------------------------------------------------------------------------


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) in float64 with an eval-mode BN equal to a * x + b per channel:
    a = g / sqrt(var + eps), b = beta - mean * a."""
    var = bn.running_var.double()
    a = (bn.weight.detach().double() if bn.affine else torch.ones_like(var)) / torch.sqrt(
        var + bn.eps)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(var)
    return a, beta - bn.running_mean.double() * a


def _with_params(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` with new (float64-computed) weight and bias in its dtype."""
    new, dtype, grad = copy.deepcopy(conv), conv.weight.dtype, conv.weight.requires_grad
    new.weight = nn.Parameter(weight.to(dtype), requires_grad=grad)
    new.bias = nn.Parameter(bias.to(dtype), requires_grad=grad)
    return new


def _conv_bias64(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is not None:
        return conv.bias.detach().double()
    return torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The single conv equal to ``bn(conv(x))`` for an eval-mode BN."""
    a, b = _bn_affine(bn)  # per output channel
    # (out, in/groups, kh, kw) * (out, 1, 1, 1)
    return _with_params(conv, conv.weight.detach().double() * a.view(-1, 1, 1, 1),
                        _conv_bias64(conv) * a + b)


@torch.no_grad()
def _same_function(conv: nn.Conv2d, bn: nn.BatchNorm2d, fused: nn.Conv2d) -> bool:
    """For a Conv2d subclass (e.g. TF "same" padding) whose forward may do more than a conv:
    does the folded copy compute bn(conv(x)) on a probe input?"""
    k = max(conv.kernel_size) * max(conv.stride) * 2 + 3
    p = conv.weight
    x = torch.randn(2, conv.in_channels, k, k, generator=torch.Generator().manual_seed(0)
                    ).to(p.device, p.dtype)
    ref = bn(conv(x))
    return bool(torch.allclose(fused(x), ref, atol=1e-4, rtol=1e-4))


def fold_batchnorm(model: nn.Module) -> tuple[int, int]:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d inside an nn.Sequential.

    Returns (folded, left): the number folded and the number of BatchNorm2d left (those that do
    not follow a conv, e.g. pre-activation BN -> ReLU -> conv). The model must be in eval mode:
    folding uses the running statistics.
    """
    if model.training:
        raise OptimizeError("fold_batchnorm needs an eval-mode model (it uses running stats)")
    folded = 0
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules)
        for a, b in zip(keys, keys[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d
                    and bn.track_running_stats and bn.running_var is not None
                    and conv.out_channels == bn.num_features):
                fused = _folded_conv(conv, bn)
                if type(conv) is not nn.Conv2d and not _same_function(conv, bn, fused):
                    continue  # a subclass that is not linear in its weights (e.g. std-conv)
                parent._modules[a] = fused
                parent._modules[b] = nn.Identity()
                folded += 1
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return folded, left


# ---------------------------------------------------------------------------------------------
# oneDNN fused convolutions (CPU)
# ---------------------------------------------------------------------------------------------

# activation module -> (oneDNN post-op name, its scalars, algorithm)
_POST_OPS: dict[type[nn.Module], Any] = {
    nn.ReLU: lambda m: ("relu", [], ""),
    nn.ReLU6: lambda m: ("hardtanh", [0.0, 6.0], ""),
    nn.Hardtanh: lambda m: ("hardtanh", [float(m.min_val), float(m.max_val)], ""),
    nn.SiLU: lambda m: ("swish", [], ""),
    nn.Hardswish: lambda m: ("hardswish", [], ""),
    nn.Sigmoid: lambda m: ("sigmoid", [], ""),
    nn.Hardsigmoid: lambda m: ("hardsigmoid", [], ""),
    nn.Tanh: lambda m: ("tanh", [], ""),
    nn.LeakyReLU: lambda m: ("leaky_relu", [float(m.negative_slope)], ""),
    nn.GELU: lambda m: ("gelu", [], m.approximate),
}


def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution op (CPU builds with MKLDNN)."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _weight_version(w: torch.Tensor) -> int:
    """A weight's version counter, for the packed-weight caches. A tensor made under
    ``torch.inference_mode`` has none (reading it raises); it cannot be changed in place outside
    inference mode either, so it counts as one fixed version: a weight of a model *built* in
    inference mode and then overwritten in place inside it keeps its stale packed copy (load new
    weights as new tensors, or build the model outside inference mode)."""
    return -1 if w.is_inference() else w._version


# below this many multiply-accumulates per call a 1x1 conv keeps ATen's kernel (OneDNNConv2d)
SMALL_POINTWISE_MACS = 16_000_000


class OneDNNConv2d(nn.Conv2d):
    """A Conv2d (and the activation after it) as one oneDNN convolution with a fused post-op.

    Same parameters and the same function as ``act(conv(x))``; only the kernel differs. Why it is
    faster on CPU: the activation is applied while the output tile is still in registers instead
    of in a second pass over memory, and every convolution goes to oneDNN. PyTorch itself sends a
    stride-1 1x1 convolution at batch < 16 on one thread to its im2col/GEMM fallback
    (``aten::_slow_conv2d_forward``), which on a channels_last input also copies the activations
    to NCHW and back: ResNet-50's 64 -> 256 channel 1x1 at 56x56, batch 8, one thread, runs in
    47 ms there and in 9 ms in oneDNN on this project's benchmark machine.

    The weight is also reordered into oneDNN's blocked layout once, on the first call (for that
    call's input shape), instead of on every call as ``F.conv2d`` does: that reorder is a pass
    over the weights, which at batch 1 in the deep layers costs as much as the convolution
    (ResNet-50's 3x3 512 conv at 7x7: 2.7 ms unpacked, 1.8 ms packed). The packed copy is a
    cache, not state: it is redone when the weight changes (a new tensor, or an in-place change,
    ``load_state_dict`` included, that bumps its version counter; writes through ``.data`` do
    not) or the input shape does, and is dropped from pickles and copies. The layout oneDNN
    picks depends on the problem's shape; a copy packed for another shape makes every call
    reorder it again (SE-ResNet-101 packed at 224x224 and run at 64x64, batch 1: 69 ms per
    call against 45 ms repacked), so one copy is kept, for the latest shape.

    The fused op has no autograd formula: with gradients enabled (training, or an input that
    requires grad) the module computes ``act(conv(x))`` with the ordinary ops instead.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None, padding: tuple[int, int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         padding, conv.dilation, conv.groups, conv.bias is not None,
                         device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.act = act if act is not None else nn.Identity()
        self.post_op, self.post_scalars, self.post_algorithm = (
            _POST_OPS[type(act)](act) if act is not None else ("none", [], ""))
        self._packed: torch.Tensor | None = None
        self._packed_key: tuple[Any, ...] | None = None
        # what each call needs, read once (a call's Python overhead is per conv; EfficientNet-B0
        # makes 70 of them at batch 1, in ~20 ms)
        self._ungrouped_1x1 = self.kernel_size == (1, 1) and self.groups == 1
        self._linear_on_1x1 = self._ungrouped_1x1 and tuple(padding) == (0, 0)
        self._geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "_packed": None, "_packed_key": None}

    def fused_ok(self, x: torch.Tensor, w: torch.Tensor | None = None) -> bool:
        """Whether the oneDNN path applies to this call: CPU, matching dtype, no autograd, and
        more than one pixel. On a 1x1 map (squeeze-and-excitation's convs on pooled features)
        a conv is a matrix-vector product and oneDNN's fixed cost per call dominates: 56 us
        against 11 us for F.conv2d + SiLU at 672 -> 28 channels, batch 1 (``forward`` runs an
        unpadded 1x1 conv there as F.linear). ``w``: the weight, where the caller has already
        read it."""
        if x.ndim != 4:
            return False
        w = self.weight if w is None else w
        n, _, h, wd = x.shape
        # a small pointwise conv: oneDNN's fixed cost per call (~0.1 ms: primitive lookup,
        # post-op attributes) outweighs what it saves; ATen's GEMM path is faster there
        # (EfficientNet-B0 at batch 1: 192 -> 1152 at 7x7, 10.8 M MACs, 0.42 ms against
        # 0.32 ms; 512 -> 2048 at 7x7, 51 M MACs, 0.82 ms against 1.19 ms)
        if (self._ungrouped_1x1
                and n * h * wd * self.in_channels * self.out_channels < SMALL_POINTWISE_MACS):
            return False
        return (x.device.type == "cpu" and x.dtype == w.dtype and h * wd > 1
                and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))

    def packed_weight(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if w is None else w
        key = (w.data_ptr(), _weight_version(w), w.dtype, w.device, x.shape)
        if self._packed is None or self._packed_key != key:
            padding, stride, dilation, groups = self._geometry
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                w.detach(), padding, stride, dilation, groups, list(x.shape))
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if not self.fused_ok(x, w):
            if self._linear_on_1x1 and x.ndim == 4 and x.shape[-2:] == (1, 1):
                # a 1x1 conv on a 1x1 map (squeeze-and-excitation's FCs) is a linear layer;
                # F.conv2d takes ATen's im2col path there, with its fills and copies
                n = x.shape[0]
                y = F.linear(x.reshape(n, -1), w.reshape(self.out_channels, -1), self.bias)
                return self.act(y.view(n, -1, 1, 1))
            return self.act(super().forward(x))
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed_weight(x, w), self.bias, *self._geometry, self.post_op,
            self.post_scalars, self.post_algorithm)


# Winograd F(2x2, 3x3) (Lavin & Gray, arXiv 1509.09308, section 4):
# Y = A^T [(G g G^T) . (B^T d B)] A for a 4x4 input tile d, a 3x3 filter g, a 2x2 output tile Y
_WINO_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINO_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_WINO_AT = ((1, 1, 1, 0), (0, 1, -1, -1))
# the 2-D transforms as one matrix each over a tile's 16 taps (tap-major): kron(B^T, B^T) maps
# d to B^T d B, kron(A^T, A^T) maps m to A^T m A
_WINO_BB = torch.kron(torch.tensor(_WINO_BT, dtype=torch.float32),
                      torch.tensor(_WINO_BT, dtype=torch.float32))
_WINO_AA = torch.kron(torch.tensor(_WINO_AT, dtype=torch.float32),
                      torch.tensor(_WINO_AT, dtype=torch.float32))
# the sizes where it beat oneDNN's direct 3x3 convolution on this project's benchmark machines
# (one thread; see WinogradConv2d): channels in / out, and 2x2 output tiles per call
WINOGRAD_MIN_IN, WINOGRAD_MIN_OUT, WINOGRAD_MIN_TILES = 128, 256, 32
# narrower convs (out channels from WINOGRAD_NARROW_OUT up to WINOGRAD_MIN_OUT, in channels up
# to out) only while the scratch stays small: at most this many tiles
WINOGRAD_NARROW_OUT, WINOGRAD_NARROW_MAX_TILES = 128, 400

_workspace = threading.local()


def _winograd_buffer(name: str, numel: int) -> torch.Tensor:
    """A per-thread scratch buffer of at least ``numel`` float32s, kept between calls. Growing
    one drops the views that ``_winograd_views`` made of the old ones."""
    bufs = _workspace.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.numel() < numel:
        buf = bufs[name] = torch.empty(numel, dtype=torch.float32)  # whatever the default dtype
        _workspace.__dict__.pop("views", None)
        _workspace.__dict__.pop("padded_for", None)  # a new pad buffer has no zero border yet
    return buf[:numel]


def free_winograd_workspace() -> int:
    """Release this thread's ``WinogradConv2d`` scratch buffers; returns the bytes freed."""
    _workspace.__dict__.pop("views", None)
    _workspace.__dict__.pop("padded_for", None)
    bufs = _workspace.__dict__.pop("bufs", {})
    return sum(b.numel() * b.element_size() for b in bufs.values())


class _WinogradViews(NamedTuple):
    """The views of the scratch buffers one input shape (n, h, w, c) and k output channels use
    (see ``WinogradConv2d.forward``): made once per thread and shape instead of ~25 view calls
    per conv (SE-ResNet-101 runs 23 convs of one shape in a row)."""

    edges: tuple[torch.Tensor, ...]  # the padded map's border, zeroed when another shape wrote
    interior: torch.Tensor  # where the input goes
    windows: torch.Tensor  # the padded map's 4x4 windows, tap-major
    d: torch.Tensor  # their copy, (4, 4, n, th, tw, c)
    d16: torch.Tensor  # the same, (16, tiles * c)
    v: torch.Tensor  # B^T d B, (16, tiles * c)
    v3: torch.Tensor  # the same, (16, tiles, c)
    m: torch.Tensor  # the products, (16, tiles, k)
    m16: torch.Tensor  # the same, (16, tiles * k)
    y: torch.Tensor  # A^T m A, (4, tiles * k)
    y_tiles: torch.Tensor  # the same as (n, th, 2, tw, 2, k) output pixels


def _winograd_views(n: int, h: int, w: int, c: int, k: int) -> _WinogradViews:
    key = (n, h, w, c, k)
    found = _workspace.__dict__.get("views", {}).get(key)
    if found is None:
        found = _make_winograd_views(n, h, w, c, k)  # may grow a buffer, dropping old views
        _workspace.__dict__.setdefault("views", {})[key] = found
    if _workspace.__dict__.get("padded_for") != key[:4]:
        for edge in found.edges:  # a new buffer, or another shape's input went into it
            edge.zero_()
        _workspace.padded_for = key[:4]
    return found


def _make_winograd_views(n: int, h: int, w: int, c: int, k: int) -> _WinogradViews:
    th, tw = h // 2, w // 2
    tiles = n * th * tw
    # the buffers first: growing one drops the views made so far
    xp = _winograd_buffer("pad", n * (h + 2) * (w + 2) * c)
    a = _winograd_buffer("a", 16 * tiles * max(c, k))
    b = _winograd_buffer("b", max(16 * tiles * c, 4 * tiles * k))
    xp = xp.view(n, h + 2, w + 2, c)  # the zero-padded input, channels last
    # two scratch buffers, each reused once its first content is dead: a holds the tiles d,
    # then the products m; b holds V, then the outputs y
    d = a[:16 * tiles * c].view(4, 4, n, th, tw, c)
    v = b[:16 * tiles * c].view(16, tiles * c)
    m = a[:16 * tiles * k].view(16, tiles, k)
    y = b[:4 * tiles * k].view(4, tiles * k)
    return _WinogradViews(
        edges=(xp[:, 0], xp[:, -1], xp[:, :, 0], xp[:, :, -1]),
        interior=xp[:, 1:h + 1, 1:w + 1],
        # (N, th, tw, C, 4, 4) windows of the padded map (stride 2), as (4, 4, N, th, tw, C)
        windows=xp.unfold(1, 4, 2).unfold(2, 4, 2).permute(4, 5, 0, 1, 2, 3),
        d=d, d16=d.view(16, -1), v=v, v3=v.view(16, tiles, c), m=m, m16=m.view(16, -1), y=y,
        y_tiles=y.view(2, 2, n, th, tw, k).permute(2, 3, 0, 4, 1, 5))


class WinogradConv2d(OneDNNConv2d):
    """A 3x3, stride-1, padding-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin &
    Gray, "Fast Algorithms for Convolutional Neural Networks", arXiv 1509.09308): each 2x2 output
    tile takes 16 multiplications per input/output channel pair instead of 36, so the product, a
    batch of 16 matrix multiplications ``(tiles x C_in) @ (C_in x C_out)``, has 2.25x fewer
    multiply-adds than the direct convolution. What it adds is the transforms, linear maps with 0 /
    +-1 / +-1/2 entries: the input's 4x4 tiles (overlapping by 2) go through B^T d B, the products
    through A^T m A, and the filters through G g G^T once (in float64, cached like the packed
    weight). Those passes are memory-bound, so it only pays where the channel counts make the
    product dominate: on this project's benchmark machine (one thread, float32, batch 8, noisy
    repeated micro-benchmarks) faster than oneDNN's direct kernel by 1.4-2.2x at 512 channels and
    28x28 or 14x14 (VGG-16's conv4 and conv5), 1.2-1.8x at 256 channels and 56x56, 1.1-1.5x at 256
    channels and 14x14 (ResNet's third stage), about even from 128 to 256 channels at 56x56, and
    slower with 64 input channels. At batch 1 it still pays from 49 tiles (a 14x14 map;
    SE-ResNet-101's 23 convs of 256 channels there: 6-8 % off the whole network, VGG-16: 27 %),
    though the transformed filters are 16/9 the direct ones' size and come from memory cold. Hence
    ``WINOGRAD_MIN_IN`` / ``_OUT`` / ``_TILES``. Narrower convs, from ``WINOGRAD_NARROW_OUT``
    (128) output channels and no more input than output channels, pay only while the scratch is
    small, up to ``WINOGRAD_NARROW_MAX_TILES`` (400) tiles: 128 -> 128 channels at 28x28 (ResNet's
    second stage), on the AMD EPYC of benchmark run 8, 1.21x at batch 1 (196 tiles), 1.23x at
    batch 2, even at batch 4 and 0.91x at batch 8; 256 -> 128 at batch 1, 0.98x. Any other call
    (odd height or width, bfloat16, autograd) runs the direct oneDNN kernel. The views of the
    scratch each input shape uses are made once per thread (``_winograd_views``).

    The transforms' scratch, two buffers of 16 x tiles x channels floats plus the padded input
    (222 MiB for VGG-16 at batch 8, sized by its 256-channel 56x56 convs; 28 MiB at batch 1), is
    kept per thread between calls (``free_winograd_workspace`` releases it): a fresh buffer that
    size costs page faults on every call.

    Arithmetic: exact in real numbers; in float32 the transforms add rounding of the order of the
    inputs' magnitude times 2^-24 per term (max |diff| against the direct kernel 3e-6 to 1e-5 on
    unit-scale inputs), far inside ``FLOAT_TOLERANCE``."""

    def __init__(self, conv: OneDNNConv2d):
        act = None if isinstance(conv.act, nn.Identity) else conv.act
        super().__init__(conv, act, tuple(conv.padding))  # the fallback: the same oneDNN conv
        self._wino: torch.Tensor | None = None
        self._wino_key: tuple[Any, ...] | None = None
        self._relu = type(act) is nn.ReLU

    @staticmethod
    def applies_to(conv: nn.Module) -> bool:
        return (type(conv) is OneDNNConv2d and conv.kernel_size == (3, 3)
                and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and tuple(conv.padding) == (1, 1) and conv.weight.dtype == torch.float32
                and conv.in_channels >= WINOGRAD_MIN_IN
                and (conv.out_channels >= WINOGRAD_MIN_OUT
                     or (WINOGRAD_NARROW_OUT <= conv.out_channels
                         and conv.in_channels <= conv.out_channels))
                and type(conv.act) in (nn.Identity, nn.ReLU))

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_wino": None, "_wino_key": None}

    def winograd_ok(self, x: torch.Tensor) -> bool:
        n, _, h, w = x.shape if x.ndim == 4 else (0, 0, 1, 1)
        tiles = n * (h // 2) * (w // 2)
        narrow = self.out_channels < WINOGRAD_MIN_OUT
        return (x.ndim == 4 and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and h % 2 == 0 and w % 2 == 0
                and tiles >= WINOGRAD_MIN_TILES
                and not (narrow and tiles > WINOGRAD_NARROW_MAX_TILES)
                and not (torch.is_grad_enabled()
                         and (x.requires_grad or self.weight.requires_grad)))

    def transformed_weight(self) -> torch.Tensor:
        """G g G^T for every filter, as 16 (C_in, C_out) matrices (tap-major)."""
        w = self.weight
        key = (w.data_ptr(), _weight_version(w), w.device)
        if self._wino is None or self._wino_key != key:
            g = torch.tensor(_WINO_G, dtype=torch.float64)
            u = torch.einsum("ij,ocjl,ml->imco", g, w.detach().double(), g)  # (4, 4, C, K)
            self._wino = u.reshape(16, self.in_channels, self.out_channels).to(w.dtype)
            self._wino_key = key
        return self._wino

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.winograd_ok(x):
            return super().forward(x)
        n, c, h, w = x.shape
        k = self.out_channels
        vw = _winograd_views(n, h, w, c, k)
        vw.interior.copy_(x.permute(0, 2, 3, 1))
        # d: the 16 taps of every 4x4 tile, then V = B^T d B as one (16 x 16) product
        vw.d.copy_(vw.windows)
        torch.mm(_WINO_BB, vw.d16, out=vw.v)
        # M = U V: 16 independent (tiles x C) @ (C x K) products
        torch.bmm(vw.v3, self.transformed_weight(), out=vw.m)
        if self.bias is not None:
            vw.m[5].add_(self.bias)  # element (1, 1) reaches all four outputs with weight +1
        # Y = A^T M A, the four outputs of every tile, interleaved into (N, H, W, K)
        torch.mm(_WINO_AA, vw.m16, out=vw.y)
        out = torch.empty(n, h, w, k, dtype=x.dtype)
        dst = out.view(n, h // 2, 2, w // 2, 2, k)
        if self._relu:  # the ReLU on the way out: one pass over the output instead of two
            torch.clamp_min(vw.y_tiles, 0, out=dst)
        else:
            dst.copy_(vw.y_tiles)
        out = out.permute(0, 3, 1, 2)  # (N, K, H, W), channels_last
        return out if self._relu else self.act(out)


def winograd_convs(model: nn.Module) -> int:
    """Replace, in place, every ``OneDNNConv2d`` that ``WinogradConv2d.applies_to`` (3x3,
    stride 1, padding 1, float32, enough channels; not the conv inside a ``OneDNNConvAdd``)
    by a ``WinogradConv2d``; returns how many."""
    n = 0
    for parent in list(model.modules()):
        if isinstance(parent, OneDNNConvAdd):
            continue
        for key, conv in parent._modules.items():
            if conv is not None and WinogradConv2d.applies_to(conv):
                parent._modules[key] = WinogradConv2d(conv)
                n += 1
    return n


def _plain_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The conv's padding as two ints, or None where oneDNN's symmetric zero padding cannot
    express it (another padding mode, a "same" that would be asymmetric)."""
    if conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return None if any(t % 2 for t in total) else (total[0] // 2, total[1] // 2)
    return tuple(conv.padding)  # type: ignore[return-value]


def fuse_onednn(model: nn.Module) -> tuple[int, int]:
    """Replace, in place, every plain ``nn.Conv2d`` on the CPU by a ``OneDNNConv2d``, taking in
    the activation that follows it inside an ``nn.Sequential`` (identities left by BN folding
    are skipped; the activation becomes ``nn.Identity``). Conv2d subclasses (TF "same"
    padding, weight standardisation) are left alone: their forward does more than a conv.

    Returns (convs replaced, activations fused).
    """
    if not onednn_available():
        return 0, 0
    convs = acts = 0
    for parent in list(model.modules()):
        keys = list(parent._modules)
        for i, key in enumerate(keys):
            conv = parent._modules[key]
            if (type(conv) is not nn.Conv2d or conv.weight.device.type != "cpu"
                    or conv.weight.dtype not in (torch.float32, torch.bfloat16)):
                continue
            padding = _plain_padding(conv)
            if padding is None:
                continue
            act = None
            if isinstance(parent, nn.Sequential):
                j = i + 1
                while j < len(keys) and type(parent._modules[keys[j]]) is nn.Identity:
                    j += 1
                nxt = parent._modules[keys[j]] if j < len(keys) else None
                if nxt is not None and type(nxt) in _POST_OPS:
                    act = nxt
                    parent._modules[keys[j]] = nn.Identity()
                    acts += 1
            parent._modules[key] = OneDNNConv2d(conv, act, padding)
            convs += 1
    return convs, acts


class OneDNNConvAdd(nn.Module):
    """``act(conv(x) + other)``, a residual block's last conv, its sum and the activation after
    it, as one oneDNN convolution with an add post-op: the sum is taken while the output tile is
    in registers instead of in two more passes over memory (the add and the activation).

    ``inplace``: write into ``other`` (oneDNN's "sum" post-op; no new allocation). Only set by
    ``fuse_residual_adds`` where ``other`` is a fresh conv output that nothing else reads.
    Falls back to the ordinary ops with gradients enabled or where ``other`` would broadcast.
    """

    def __init__(self, conv: OneDNNConv2d, act: nn.Module | None, inplace: bool):
        super().__init__()
        self.conv, self.inplace = conv, inplace
        self.act = act if act is not None else nn.Identity()
        self.post_op, self.post_scalars, self.post_algorithm = (
            _POST_OPS[type(act)](act) if act is not None else (None, [], None))

    def _out_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        c = self.conv
        hw = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in zip(
            x.shape[-2:], c.padding, c.dilation, c.kernel_size, c.stride, strict=True)]
        return (x.shape[0], c.out_channels, *hw)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        c = self.conv
        # oneDNN reads `other` in the output's layout; another layout would send the call to
        # ATen's unfused path
        layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        w = c.weight
        if (not c.fused_ok(x, w) or other.dtype != x.dtype
                or (torch.is_grad_enabled() and other.requires_grad)
                or tuple(other.shape) != self._out_shape(x)
                or not other.is_contiguous(memory_format=layout)):
            return self.act(nn.Conv2d.forward(c, x) + other)
        args = (x, c.packed_weight(x, w), c.bias, *c._geometry, "add", 1.0, self.post_op,
                self.post_scalars, self.post_algorithm)
        if self.inplace:
            return torch.ops.mkldnn._convolution_pointwise_.binary(other, *args)
        return torch.ops.mkldnn._convolution_pointwise.binary(x, other, *args[1:])


class PreActClamp(nn.Module):
    """What is left of a pre-activation BN -> ReLU once its scale and shift moved into the 1x1
    conv after it (``_preact_folded``): a per-channel clamp, one pass over memory instead of two.

    Why it is exact: with the eval-mode BN y = a x + b per channel, ReLU(a x + b) equals
    a max(x, -b/a) + b where a > 0 and a min(x, -b/a) + b where a < 0 (check both sides of the
    threshold), and ReLU(b) where a = 0. So ReLU(BN(x)) = a' clamp(x, lo, hi) + b' per channel,
    and a 1x1 unpadded conv W after it is the conv W diag(a') of the clamp plus the constant
    W b' in its bias. DenseNet runs BN -> ReLU before every 1x1 conv (its dense layers and
    transitions); those two passes over a growing concatenation were 18 % of its optimized time
    at batch 8, the concatenations another 10 % (``torch.profiler``, one thread).
    """

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor):
        super().__init__()
        self.register_buffer("lo", lo.view(-1, 1, 1))
        self.register_buffer("hi", hi.view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # where no BN scale is negative (every upper bound infinite, as with the usual positive
        # gammas) the clamp is a maximum: a binary op, 15-25 % faster than the ternary clamp on
        # DenseNet's prefixes (channels_last, batch 1, one thread). The answer is kept for the
        # buffer's identity and version, so new values loaded into it are seen.
        hi = self.hi
        if torch.compiler.is_compiling():
            return torch.clamp(x, self.lo, hi)
        key = (hi.data_ptr(), _weight_version(hi))
        if getattr(self, "_one_sided_key", None) != key:
            self._one_sided = bool(torch.isposinf(hi).all())
            self._one_sided_key = key
        if self._one_sided:
            return torch.maximum(x, self.lo)
        return torch.clamp(x, self.lo, hi)


def _preact_folded(bn: nn.BatchNorm2d, conv: OneDNNConv2d
                   ) -> tuple[PreActClamp, OneDNNConv2d] | None:
    """(clamp, conv') with conv'(clamp(x)) = conv(relu(bn(x))) for an eval BN and a 1x1
    unpadded ungrouped conv (``PreActClamp``); None where a threshold overflows the dtype."""
    dtype = conv.weight.dtype
    a, b = _bn_affine(bn)  # per input channel of the conv
    t = -b / torch.where(a == 0, torch.ones_like(a), a)  # where the ReLU switches
    inf = torch.full_like(t, float("inf"))
    lo = torch.where(a > 0, t, -inf)
    hi = torch.where(a < 0, t, inf)
    if not bool(torch.isfinite(t[a != 0].to(dtype)).all()):
        return None
    b = torch.where(a == 0, b.clamp_min(0), b)  # a channel BN makes constant: ReLU(b)
    w = conv.weight.detach().double()  # (out, in, 1, 1)
    new = _with_params(conv, w * a.view(1, -1, 1, 1), _conv_bias64(conv) + w[:, :, 0, 0] @ b)
    return PreActClamp(lo.to(dtype), hi.to(dtype)), new


class ScaleAddAct(nn.Module):
    """``act(a * s + other)``, squeeze-and-excitation's recalibration (s: (N, C, 1, 1)) and the
    residual sum after it, as one ``torch.addcmul`` and an in-place activation: two passes over
    the block's output instead of three (product, sum, activation) and, with ``inplace`` (set by
    ``fuse_blocks`` where ``a`` is a fresh conv output that nothing reads afterwards), no new
    allocation. Those three passes were 14 % of SE-ResNet-101's optimized time at batch 8.
    Falls back to the plain ops with gradients enabled or where the shapes differ."""

    def __init__(self, act: nn.Module | None, inplace: bool):
        super().__init__()
        self.act = act if act is not None else nn.Identity()
        self.inplace = inplace

    def forward(self, a: torch.Tensor, s: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() or a.shape != other.shape or a.dtype != other.dtype
                or a.dtype != s.dtype):
            return self.act(a * s + other)
        out = torch.addcmul(other, a, s, out=a) if self.inplace else torch.addcmul(other, a, s)
        if type(self.act) is nn.ReLU:
            return out.relu_()
        return self.act(out)


class ScaledPointwiseConv(nn.Module):
    """``conv(a * s)``, or ``act(conv(a * s) + other)`` for a ``OneDNNConvAdd``: a 1x1 conv
    after squeeze-and-excitation's per-sample scale s (N, C, 1, 1), as in EfficientNet's
    MBConv, where the scaled map feeds the linear projection.

    At batch 1, where the conv's weights are smaller than the map (C_out < H W), the scale
    moves into the weights: conv(diag(s) U) = (W diag(s)) U, the same sums in another order. A
    pass over the C_out x C weights then replaces the product's pass over the C x H x W map
    (EfficientNet-B0 at 112x112 to 28x28: 13-100x fewer elements), and the conv runs as one
    GEMM on the channels_last map, with the residual sum (if any) accumulated into it. Only
    where the conv would take ATen's GEMM route anyway (under ``SMALL_POINTWISE_MACS``; the
    bare GEMM is within 2 % of it); a larger conv keeps oneDNN's packed kernel. Elsewhere
    (batch > 1, NCHW input, gradients enabled) it multiplies, in place when
    ``inplace`` (``a`` is a fresh conv output that nothing reads after the product; set by
    ``fuse_blocks``), then runs the conv as before.
    """

    def __init__(self, conv: OneDNNConv2d | OneDNNConvAdd, inplace: bool):
        super().__init__()
        self.conv, self.inplace = conv, inplace

    def _fold_ok(self, a: torch.Tensor, s: torch.Tensor, other: torch.Tensor | None) -> bool:
        c = self.conv.conv if isinstance(self.conv, OneDNNConvAdd) else self.conv
        if torch.is_grad_enabled() or a.ndim != 4 or a.shape[0] != 1:
            return False
        h, w = a.shape[-2:]
        return (c.out_channels < h * w and tuple(s.shape) == (1, a.shape[1], 1, 1)
                and not c.fused_ok(a)
                and a.dtype == s.dtype == c.weight.dtype
                and a.is_contiguous(memory_format=torch.channels_last)
                and (other is None or (tuple(other.shape) == (1, c.out_channels, h, w)
                                       and other.dtype == a.dtype
                                       and other.is_contiguous(memory_format=torch.channels_last))))

    def forward(self, a: torch.Tensor, s: torch.Tensor,
                other: torch.Tensor | None = None) -> torch.Tensor:
        add = isinstance(self.conv, OneDNNConvAdd)
        if not self._fold_ok(a, s, other):
            # (a per-sample, per-channel scale; torch.broadcast_shapes costs ~90 us in Python)
            if (self.inplace and not torch.is_grad_enabled() and a.dtype == s.dtype
                    and a.ndim == 4 and tuple(s.shape) == (*a.shape[:2], 1, 1)):
                a = a.mul_(s)
            else:
                a = a * s
            return self.conv(a, other) if add else self.conv(a)
        c = self.conv.conv if add else self.conv
        h, w = a.shape[-2:]
        x = a.permute(0, 2, 3, 1).reshape(h * w, a.shape[1])  # the NHWC map as (pixels, C)
        wt = (c.weight.view(c.out_channels, -1) * s.view(1, -1)).t()  # (W diag(s))^T
        if other is None:
            y = torch.addmm(c.bias, x, wt) if c.bias is not None else torch.mm(x, wt)
        else:
            o = other.permute(0, 2, 3, 1).reshape(h * w, c.out_channels)
            y = o.addmm_(x, wt) if self.conv.inplace else torch.addmm(o, x, wt)
            if c.bias is not None:
                y.add_(c.bias)
        return self.conv.act(y.view(1, h, w, c.out_channels).permute(0, 3, 1, 2))


def _identity_at_inference(m: nn.Module | None) -> bool:
    """Modules that return their input unchanged in eval mode (what BN folding leaves, dropout,
    stochastic depth from us, timm and torchvision)."""
    if m is None:
        return False
    if type(m) is nn.Identity:
        return True
    return not m.training and (isinstance(m, nn.Dropout)
                               or type(m).__name__ in ("DropPath", "StochasticDepth"))


# leaves of the block traces
class ScaleInPlace(nn.Module):
    """``a * s``, squeeze-and-excitation's scale s (N, C, 1, 1) where nothing else takes it
    (SE-ResNet's first block of a stage, whose residual sum went into the downsample conv as a
    ``OneDNNConvAdd``), written into ``a``, a fresh conv output that nothing reads after the
    product (``fuse_blocks`` checks that). A new map that size costs page faults on every call:
    8 x 256 x 56 x 56 floats, 6.9 ms against 1.4 ms in place on the AMD EPYC of benchmark
    run 8. With gradients enabled, or other shapes, it is the plain product."""

    def forward(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if (not torch.is_grad_enabled() and a.ndim == 4 and a.dtype == s.dtype
                and tuple(s.shape) == (*a.shape[:2], 1, 1)):
            return a.mul_(s)
        return a * s


class SpatialMean(nn.Module):
    """``x.mean((2, 3), keepdim=True)``, squeeze-and-excitation's squeeze, on a float32
    channels_last map as two sums: first over the H rows, each W x C floats contiguous, so the
    adds run along long contiguous rows, then over the W pixels of the one row left. ATen's
    reduction over H and W of a channels_last map vectorises along C alone: at 1024 channels,
    14x14, batch 8, with the maps cold, 0.74 ms against 0.35 ms on the AMD EPYC of benchmark
    run 8; about even at 56x56, hence only up to ``MAX_PIXELS``.
    The same sums in another order (float32 rounding differs in the last bits). Anything else
    (NCHW, bfloat16, gradients enabled) takes ``mean``."""

    MAX_PIXELS = 32 * 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.ndim != 4 or x.dtype != torch.float32 or torch.is_grad_enabled()
                or x.shape[2] * x.shape[3] > self.MAX_PIXELS or x.is_contiguous()
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return x.mean((2, 3), keepdim=True)
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n, h, w * c).sum(1)  # (N, W * C)
        return rows.view(n, w, c).sum(1).div_(h * w).view(n, c, 1, 1)


_FUSED = (OneDNNConv2d, OneDNNConvAdd, PreActClamp, ScaleAddAct, ScaledPointwiseConv,
          ScaleInPlace, SpatialMean)


class _FusionTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, _FUSED) or getattr(m, "fusion_leaf", False)
                or super().is_leaf_module(m, qualname))


_ADDS = (operator.add, torch.add, operator.iadd)
_RELU_FNS = (F.relu, torch.relu, torch.relu_)


def _act_of(node: Any, module: Callable[[Any], nn.Module | None]) -> nn.Module | None:
    """The activation a graph node applies to its single input, as a module, or None."""
    if node is None or not node.args or len(node.args) != 1:
        return None
    if type(module(node)) in _POST_OPS:
        return module(node)
    if set(node.kwargs) <= {"inplace"} and (
            (node.op == "call_function" and node.target in _RELU_FNS)
            or (node.op == "call_method" and node.target in ("relu", "relu_"))):
        return nn.ReLU()
    return None


def _is_add(node: Any) -> bool:
    return ((node.op == "call_function" and node.target in _ADDS)
            or (node.op == "call_method" and node.target == "add"))


def _is_mul(node: Any) -> bool:
    return isinstance(node, torch.fx.Node) and (
        (node.op == "call_function" and node.target in (operator.mul, torch.mul))
        or (node.op == "call_method" and node.target == "mul"))


def _ancestors(node: Any) -> set[Any]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        for v in n.all_input_nodes:
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def _se_product(node: Any) -> tuple[Any, Any] | None:
    """``(a, s)`` where ``node`` is a product ``a * s`` of two graph values with s computed
    from a (squeeze-and-excitation's scale of its input), else None."""
    if (not _is_mul(node) or len(node.args) != 2 or node.kwargs
            or not all(isinstance(v, torch.fx.Node) for v in node.args)):
        return None
    a, scale = node.args
    if a in _ancestors(scale):
        return a, scale
    return (scale, a) if scale in _ancestors(a) else None


def _eval_bn(bn: nn.Module | None) -> bool:
    """A BatchNorm2d that is the affine map of its running statistics (foldable)."""
    return (type(bn) is nn.BatchNorm2d and not bn.training and bn.track_running_stats
            and bn.running_var is not None)


def _free_name(modules: dict[str, nn.Module], stem: str) -> str:
    i = 0
    while f"{stem}_{i}" in modules:
        i += 1
    return f"{stem}_{i}"


class FusionCounts(NamedTuple):
    """What ``fuse_blocks`` rewrote."""

    bn_folded: int  # conv -> BN and BN -> ReLU -> 1x1 conv (PreActClamp)
    acts: int  # activations fused into the conv before them
    sums: int  # residual sums fused (OneDNNConvAdd, ScaleAddAct)
    scales: int  # SE scales before a 1x1 conv (ScaledPointwiseConv)
    pools_first: int  # 1x1 conv -> average pool turned into pool -> conv
    scales_in_place: int = 0  # the other SE scales, taken in place (ScaleInPlace)
    spatial_means: int = 0  # means over H and W kept (keepdim) as SpatialMean


def _is_pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1 conv that maps each pixel on its own: stride 1, no padding, no dilation."""
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and _pair(conv.padding) == (0, 0) and conv.dilation == (1, 1))


def _rewrite_block(gm: torch.fx.GraphModule) -> FusionCounts:
    """In a traced block: fold conv -> BN pairs, fuse conv -> activation, fold BN -> ReLU ->
    1x1 conv into clamp -> conv (``PreActClamp``), replace
    conv -> [identities] -> add(., other) -> [activation] by OneDNNConvAdd nodes, SE's
    scale before a 1x1 conv by ``ScaledPointwiseConv``, and 1x1 conv -> average pool by
    pool -> 1x1 conv.
    """
    modules = dict(gm.named_modules())

    def module(node: Any) -> nn.Module | None:
        return modules.get(node.target) if getattr(node, "op", None) == "call_module" else None

    def called_once(node: Any) -> bool:
        """The module a call_module node calls is called nowhere else in the graph."""
        return sum(n.op == "call_module" and n.target == node.target for n in gm.graph.nodes) == 1

    def sole_conv(node: Any) -> OneDNNConv2d | None:
        """The OneDNNConv2d a node calls, if it is called there only and read by one node."""
        conv = module(node)
        if (not isinstance(conv, OneDNNConv2d) or conv.post_op != "none" or len(node.users) != 1
                or len(node.args) != 1 or node.kwargs or not called_once(node)):
            return None
        return conv

    def identity_chain(node: Any) -> list[Any]:
        """[node, ...] back through identities read only there, ending at the first other."""
        chain = [node]
        while (isinstance(node, torch.fx.Node) and _identity_at_inference(module(node))
               and len(node.users) == 1):
            node = node.args[0]
            chain.append(node)
        return chain

    def through_identities(node: Any) -> Any:
        return identity_chain(node)[-1]

    def overwritable(a: Any, mul: Any, scale: Any) -> bool:
        """Whether the product ``mul`` of ``a`` and ``scale`` may be written into ``a``: a fresh
        conv output whose other readers all run before the product (SE's pooling, an ancestor
        of the scale)."""
        early, producer = _ancestors(scale), a
        while (_identity_at_inference(module(producer))
               and len(producer.args[0].users) == 1):  # the identities BN folding left
            producer = producer.args[0]
        return (isinstance(module(producer), (OneDNNConv2d, OneDNNConvAdd))
                and all(u is mul or u in early for u in a.users))

    def sum_tail(node: Any) -> tuple[nn.Module | None, Any]:
        """The activation applied to a sum, and the node a fused sum replaces (it or the sum)."""
        user = next(iter(node.users)) if len(node.users) == 1 else None
        act = _act_of(user, module)
        return act, (user if act is not None else node)

    def call_new(stem: str, fused: nn.Module, before: Any, args: tuple[Any, ...]) -> Any:
        """A call of ``fused``, added as a submodule named after ``stem``, on ``args``,
        inserted before the node ``before``."""
        name = _free_name(modules, stem)
        modules[name] = fused
        gm.add_submodule(name, fused)
        with gm.graph.inserting_before(before):
            return gm.graph.call_module(name, args)

    def replace_sum(node: Any, end: Any, chain: list[Any], stem: str, fused: nn.Module,
                    args: tuple[Any, ...]) -> None:
        """Call ``fused`` on ``args`` in place of the sum ``node`` (and the activation ``end``);
        erase them and the operand ``chain`` the fused module computes itself."""
        end.replace_all_uses_with(call_new(stem, fused, node, args))
        for dead in ([end] if end is not node else []) + [node, *chain]:
            gm.graph.erase_node(dead)

    folded = acts = 0
    for node in list(gm.graph.nodes):  # conv -> BN outside an nn.Sequential (DenseNet's H_l)
        bn = module(node)
        if not _eval_bn(bn) or len(node.args) != 1 or node.kwargs:
            continue
        src = through_identities(node.args[0])
        conv = sole_conv(src)
        if conv is None or conv.out_channels != bn.num_features:
            continue
        new = _folded_conv(conv, bn)
        gm.set_submodule(src.target, new)
        modules[src.target] = new
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        folded += 1
    for node in list(gm.graph.nodes):  # conv -> activation
        conv = sole_conv(node)
        if conv is None:
            continue
        user = next(iter(node.users))
        while _identity_at_inference(module(user)) and len(user.users) == 1:
            user = next(iter(user.users))  # conv -> dropout (eval) -> act
        act = _act_of(user, module)
        if act is None:
            continue
        conv.act = act
        conv.post_op, conv.post_scalars, conv.post_algorithm = _POST_OPS[type(act)](act)
        user.replace_all_uses_with(user.args[0])
        gm.graph.erase_node(user)
        acts += 1
    for node in list(gm.graph.nodes):  # BN -> ReLU -> 1x1 conv (pre-activation, DenseNet)
        bn = module(node)
        if not _eval_bn(bn) or len(node.args) != 1 or node.kwargs or len(node.users) != 1:
            continue
        relu = next(iter(node.users))
        if type(_act_of(relu, module)) is not nn.ReLU or len(relu.users) != 1:
            continue
        dst = next(iter(relu.users))
        conv = module(dst)
        if (not isinstance(conv, OneDNNConv2d) or dst.args != (relu,) or dst.kwargs
                or conv.kernel_size != (1, 1) or tuple(conv.padding) != (0, 0)
                or conv.groups != 1 or conv.in_channels != bn.num_features
                or not called_once(dst)):
            continue
        pair = _preact_folded(bn, conv)
        if pair is None:
            continue
        gm.set_submodule(dst.target, pair[1])
        modules[dst.target] = pair[1]
        name = _free_name(modules, "preact_clamp")
        gm.add_submodule(name, pair[0])
        modules[name] = pair[0]
        with gm.graph.inserting_before(node):
            clamp = gm.graph.call_module(name, (node.args[0],))
        relu.replace_all_uses_with(clamp)
        gm.graph.erase_node(relu)
        gm.graph.erase_node(node)
        folded += 1

    fused = 0
    for node in list(gm.graph.nodes):
        if not _is_add(node) or len(node.args) != 2 or node.kwargs:
            continue
        sides = [(0, 1), (1, 0)] if node.target is not operator.iadd else [(0, 1)]
        for i, j in sides:
            chain, other = identity_chain(node.args[i]), node.args[j]
            src = chain[-1]
            conv = module(src)
            # grouped convs (ShuffleNet's 1x1 GConv) get no add post-op in oneDNN: ATen then
            # runs conv and add_relu unfused, which has no bf16 kernel
            if (isinstance(conv, OneDNNConv2d) and conv.post_op == "none" and conv.groups == 1
                    and len(src.users) == 1 and isinstance(other, torch.fx.Node)
                    and len(src.args) == 1 and not src.kwargs):
                break
        else:
            continue
        act, end = sum_tail(node)
        # writing into `other` is safe only where it is a fresh conv output read by this add
        # alone (identities return the very same tensor)
        producer = through_identities(other)
        inplace = (len(producer.users) == 1
                   and isinstance(module(producer), (OneDNNConv2d, OneDNNConvAdd)))
        replace_sum(node, end, chain, "onednn_add", OneDNNConvAdd(conv, act, inplace),
                    (src.args[0], other))
        fused += 1
    for node in list(gm.graph.nodes):  # act(a * s + other): squeeze-and-excitation's scale
        if not _is_add(node) or len(node.args) != 2 or node.kwargs:
            continue
        # an in-place sum (a += b) is only taken with the product as the one written into
        for i, j in [(0, 1), (1, 0)] if node.target is not operator.iadd else [(0, 1)]:
            chain = identity_chain(node.args[i])
            mul = chain[-1]
            if (_is_mul(mul) and len(mul.users) == 1 and len(mul.args) == 2 and not mul.kwargs
                    and all(isinstance(v, torch.fx.Node) for v in mul.args)
                    and isinstance(node.args[j], torch.fx.Node)):
                break
        else:
            continue
        a, scale = mul.args
        act, end = sum_tail(node)
        replace_sum(node, end, chain, "scale_add",
                    ScaleAddAct(act, overwritable(a, mul, scale)), (a, scale, node.args[j]))
        fused += 1

    scales = 0
    for node in list(gm.graph.nodes):  # conv1x1(a * s): SE's scale before a projection
        product = _se_product(node)
        if product is None or len(node.users) != 1:
            continue
        a, scale = product
        dst = next(iter(node.users))
        target = module(dst)
        conv = target.conv if isinstance(target, OneDNNConvAdd) else target
        if (not isinstance(conv, OneDNNConv2d) or not dst.args or dst.args[0] is not node
                or node in dst.args[1:] or dst.kwargs or not called_once(dst)
                or len(dst.args) != (2 if isinstance(target, OneDNNConvAdd) else 1)
                or not _is_pointwise(conv)):
            continue
        dst.replace_all_uses_with(
            call_new("scaled_conv", ScaledPointwiseConv(target, overwritable(a, node, scale)),
                     dst, (a, scale, *dst.args[1:])))
        gm.graph.erase_node(dst)
        gm.graph.erase_node(node)
        scales += 1

    in_place = 0
    for node in list(gm.graph.nodes):  # the other SE scales: a * s into a where a is dead after
        product = _se_product(node)
        if product is None or not overwritable(product[0], node, product[1]):
            continue
        node.replace_all_uses_with(call_new("scale_in_place", ScaleInPlace(), node, product))
        gm.graph.erase_node(node)
        in_place += 1

    means = 0
    for node in list(gm.graph.nodes):  # x.mean((2, 3), keepdim=True): SE's squeeze
        if not (node.op == "call_method" and node.target == "mean") or len(node.args) != 2:
            continue
        dims = node.args[1]
        if (not isinstance(dims, (tuple, list)) or sorted(dims) not in ([2, 3], [-2, -1])
                or node.kwargs != {"keepdim": True}):
            continue
        node.replace_all_uses_with(call_new("spatial_mean", SpatialMean(), node,
                                            (node.args[0],)))
        gm.graph.erase_node(node)
        means += 1

    pools = 0
    for node in list(gm.graph.nodes):  # conv1x1 -> average pool: pool first (k*k fewer MACs)
        pool = module(node)
        if (type(pool) is not nn.AvgPool2d or len(node.args) != 1 or node.kwargs
                or _pair(pool.padding) != (0, 0) or pool.ceil_mode
                or pool.divisor_override is not None):
            continue
        src = through_identities(node.args[0])
        conv = sole_conv(src)
        if conv is None or not _is_pointwise(conv):
            continue
        with gm.graph.inserting_before(src):
            pooled = gm.graph.call_module(node.target, (src.args[0],))
        src.args = (pooled,)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        pools += 1
    # a block whose only rewrite would be its means is left as it is (the caller keeps it)
    counts = FusionCounts(folded, acts, fused, scales, pools, in_place,
                          means if (folded, acts, fused, scales, pools, in_place) != (0,) * 6
                          else 0)
    if any(counts):
        for node in list(gm.graph.nodes):  # what folding left: a module call per identity
            if (type(module(node)) is nn.Identity and len(node.args) == 1 and not node.kwargs
                    and isinstance(node.args[0], torch.fx.Node)):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return counts


class _DenseLayerOnPrefix(nn.Module):
    """A DenseNet layer called on the concatenated input (``DenseLayer.forward_concatenated``),
    so that its trace starts at one tensor instead of a list."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.forward_concatenated(x)


class DenseBlockBuffer(nn.Module):
    """A dense block for inference without concatenations: the block's output tensor is
    allocated once per call, the input is copied into its first channels, and each layer reads
    the channel prefix [x_0, ..., x_{l-1}] it needs (a view) and writes its k new maps behind
    it. ``DenseBlock.forward`` (and torchvision's and timm's) instead concatenates the growing
    list anew for every layer, a copy of all earlier maps per layer: about a tenth of DenseNet's
    optimized time at batch 8. With the pre-activation folded into a clamp (``PreActClamp``),
    the prefix view is read once per layer, by the clamp. With gradients enabled it
    concatenates, as the original does (writing into a buffer that autograd saved would fail).
    """

    fusion_leaf = True  # fuse_blocks rewrites its layers, never its own loop

    def __init__(self, block: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(_DenseLayerOnPrefix(layer) for layer in block)
        self.out_chs = int(block.out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            features = [x]
            for layer in self.layers:
                features.append(layer(torch.cat(features, 1)))
            return torch.cat(features, 1)
        n, c, h, w = x.shape
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        buf = torch.empty((n, self.out_chs, h, w), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        buf[:, :c] = x
        for layer in self.layers:
            new = layer(buf[:, :c])
            buf[:, c:c + new.shape[1]] = new
            c += new.shape[1]
        if c != self.out_chs:
            raise RuntimeError(f"dense block filled {c} of its {self.out_chs} channels")
        return buf


def _pool_out(n: int, k: int, s: int, ceil_mode: bool) -> int:
    """PyTorch's pooled length for an unpadded, undilated window: floor (or ceil) of (n - k) / s
    plus one, where in ceil mode the last window must still start inside the input."""
    out = (n - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n:
        out -= 1
    return out


class StridedMaxPool2d(nn.MaxPool2d):
    """An unpadded ``nn.MaxPool2d`` (VGG's 2x2/2, AlexNet's 3x3/2, the Caffe-style 3x3/2 ceil
    pool of the SE nets) computed as the element-wise maximum of its k x k strided views: tap
    (i, j) of every window is ``x[..., i::s, j::s]``, so the pool is k^2 - 1 ``torch.maximum``
    calls, written in place into the first one's output. Max is exact, so the result equals
    ``F.max_pool2d`` bit for bit (NaN propagates in both).

    Why it is faster on CPU: inference still goes through ``max_pool2d_with_indices``, which
    writes an int64 index per output (twice the output's bytes) and, on a channels_last map,
    ran at a third of the speed (VGG-16's first pool at batch 8, (8, 64, 224, 224), one thread:
    60 ms against 17 ms on this project's benchmark machine). In ceil mode the windows that
    overhang the input's end take only their taps inside it, as PyTorch's implicit -inf padding
    does. With gradients enabled it calls ``F.max_pool2d`` (its gradient routes to the index
    the kernel picks)."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                         pool.return_indices, pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = _pair(self.kernel_size)
        sh, sw = _pair(self.stride if self.stride is not None else self.kernel_size)
        if x.ndim != 4 or x.device.type != "cpu" or torch.is_grad_enabled():
            return super().forward(x)
        h, w = x.shape[-2:]
        ho, wo = _pool_out(h, kh, sh, self.ceil_mode), _pool_out(w, kw, sw, self.ceil_mode)
        if ho < 1 or wo < 1 or h < kh or w < kw:
            return super().forward(x)  # PyTorch's own error for a map smaller than the window
        full, partial = [], []
        for i in range(kh):
            rows = min(ho, (h - i + sh - 1) // sh)  # windows whose tap row i is inside the map
            for j in range(kw):
                cols = min(wo, (w - j + sw - 1) // sw)
                tap = x[:, :, i:i + (rows - 1) * sh + 1:sh, j:j + (cols - 1) * sw + 1:sw]
                (full if (rows, cols) == (ho, wo) else partial).append(tap)
        # tap (0, 0) is always full: the last window starts inside the map
        out = torch.maximum(full[0], full[1]) if len(full) > 1 else full[0].clone()
        for tap in full[2:] + partial:
            o = out[:, :, :tap.shape[2], :tap.shape[3]]
            torch.maximum(o, tap, out=o)
        return out


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def stride_max_pools(model: nn.Module) -> int:
    """Replace, in place, every unpadded, undilated ``nn.MaxPool2d`` without indices by a
    ``StridedMaxPool2d`` (same function, faster kernel); returns how many."""
    n = 0
    for parent in list(model.modules()):
        for key, pool in parent._modules.items():
            if (type(pool) is nn.MaxPool2d and not pool.return_indices
                    and _pair(pool.padding) == (0, 0) and _pair(pool.dilation) == (1, 1)):
                parent._modules[key] = StridedMaxPool2d(pool)
                n += 1
    return n


def buffer_dense_blocks(model: nn.Module) -> int:
    """Replace, in place, every visionzoo ``DenseBlock`` by a ``DenseBlockBuffer`` (same layers,
    same parameters). Returns how many."""
    from visionzoo.models.densenet import DenseBlock, DenseLayer

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is DenseBlock and all(type(m) is DenseLayer for m in child):
                parent._modules[name] = DenseBlockBuffer(child)
                count += 1
    return count


def fuse_blocks(model: nn.Module) -> FusionCounts:
    """What ``fold_batchnorm`` and ``fuse_onednn`` cannot see inside an ``nn.Sequential``,
    found in the blocks' dataflow graphs (run those two first). In place:

    * a BatchNorm2d fed only by a conv is folded into it (DenseNet's BN after the 1x1 conv,
      torchvision ResNets' ``bn1(conv1(x))``);
    * an activation fed only by a conv is fused into it;
    * BN -> ReLU -> 1x1 conv (pre-activation) becomes ``PreActClamp`` -> conv with the BN's
      scale and shift in the conv (counted with the folded BNs);
    * a residual sum with one operand straight from a conv becomes a ``OneDNNConvAdd``,
      together with the activation after the sum;
    * a residual sum of a product ``a * s`` (squeeze-and-excitation) becomes a ``ScaleAddAct``;
    * a product ``a * s`` with s computed from a (squeeze-and-excitation's scale) read only by a
      1x1 conv (EfficientNet's projection) becomes a ``ScaledPointwiseConv``, which at batch 1
      scales the conv's weights instead of the map; any other such product into a fresh conv
      output that nothing reads afterwards becomes a ``ScaleInPlace``;
    * a mean over H and W with keepdim (squeeze-and-excitation's squeeze) becomes a
      ``SpatialMean`` (only in a block that has another rewrite);
    * a 1x1 conv (no activation) read only by an unpadded average pool runs after the pool
      instead: the pool averages each window with weights that sum to 1, so it commutes with
      the per-pixel affine map, and the conv sees 1/(k*k) of the pixels. DenseNet's
      transitions (BN-ReLU-conv-pool, the paper's order) then cost a quarter of their MACs:
      231 M of DenseNet-121's 2.87 G.

    Bottom-up over the submodules (never the model itself, which keeps its class and methods):
    a block is symbolically traced (torch.fx) with the oneDNN modules as leaves; where the trace
    shows a pattern, the block is replaced by the rewritten ``GraphModule``, which is for
    inference (``training`` branches were taken as in eval mode). A block that cannot be traced
    (Python control flow on tensor values) is left as it is, and a module with a true
    ``fusion_leaf`` attribute (``DenseBlockBuffer``) has only its children rewritten. Returns
    the counts (``FusionCounts``).
    """
    if not onednn_available():
        return FusionCounts(*[0] * len(FusionCounts._fields))
    total = [0] * len(FusionCounts._fields)

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, _FUSED):
                continue
            visit(child)  # smallest blocks first; a parent's trace inlines their graphs
            if (getattr(child, "fusion_leaf", False)
                    or not any(isinstance(m, OneDNNConv2d) for m in child.modules())):
                continue
            try:
                gm = torch.fx.GraphModule(child, _FusionTracer().trace(child),
                                          class_name=type(child).__name__)
            except Exception:  # noqa: BLE001 - an untraceable block keeps its eager forward
                continue
            counts = _rewrite_block(gm)
            if any(counts):
                gm.train(child.training)
                parent._modules[name] = gm
                total[:] = [t + c for t, c in zip(total, counts, strict=True)]

    visit(model)
    return FusionCounts(*total)


# ---------------------------------------------------------------------------------------------
# channels_last
# ---------------------------------------------------------------------------------------------


def _to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    x, *rest = args
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)


# ---------------------------------------------------------------------------------------------
# bfloat16
# ---------------------------------------------------------------------------------------------


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX-BF16 or AVX-512 BF16), from /proc/cpuinfo
    on Linux; False where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _cast_input(dtype: torch.dtype):
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, *rest = args
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.to(dtype)
        return (x, *rest)
    return hook


def _float32_output(_module: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
    """bf16 logits back to float32 (what losses, softmax and comparisons expect)."""
    return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 else out


# ---------------------------------------------------------------------------------------------
# int8 (FX graph mode post-training quantization)
# ---------------------------------------------------------------------------------------------


def _skip_input_check(model: nn.Module) -> None:
    """Symbolic tracing cannot evaluate ``check_input``'s shape test; drop it on this copy."""
    for m in model.modules():
        if hasattr(m, "check_input"):
            m.check_input = lambda x: None  # instance attribute shadows the method


def _untraceable(model: nn.Module) -> list[str]:
    """Qualified names of the smallest submodules symbolic tracing cannot follow.

    Bottom-up: a module is untraceable when tracing it fails even with its untraceable
    descendants as leaves; those names become float islands in the quantized graph.
    """
    bad: list[str] = []

    class Tracer(torch.fx.Tracer):
        def __init__(self, leaves: set[str]):
            super().__init__()
            self.leaves = leaves

        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in self.leaves or super().is_leaf_module(m, qualname)

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            visit(child, f"{prefix}{name}.")
        if not list(module.children()) and type(module).__module__.startswith("torch.nn"):
            return  # standard leaf layers are traceable by construction
        here = prefix[:-1]
        leaves = {b[len(prefix):] for b in bad if b.startswith(prefix)}
        try:
            Tracer(leaves).trace(module)
        except Exception:  # noqa: BLE001 - any tracing failure makes it a float island
            bad[:] = [b for b in bad if not b.startswith(prefix)] + [here]

    visit(model, "")
    return bad


def _convs_before_relu6(model: nn.Module) -> list[str]:
    """Names of Conv2d layers whose output goes straight into a ReLU6 (inside a Sequential,
    past Identity left by BN folding)."""
    names = []
    for prefix, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules)
        for i, key in enumerate(keys):
            if not isinstance(parent._modules[key], nn.Conv2d):
                continue
            j = i + 1
            while j < len(keys) and isinstance(parent._modules[keys[j]], nn.Identity):
                j += 1
            if j < len(keys) and isinstance(parent._modules[keys[j]], nn.ReLU6):
                names.append(f"{prefix}.{key}" if prefix else key)
    return names


def default_int8_backend() -> str:
    """oneDNN where this torch has it: on AVX-512 VNNI / AMX CPUs its int8 kernels were the
    fastest of torch's engines for every network tried (fbgemm's depthwise 5x5 path, which the
    "x86" engine picks for EfficientNet, is several times slower than float)."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("onednn", "x86", "fbgemm", "qnnpack") if e in engines), "none")


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor] | torch.Tensor,
                  backend: str | None = None, keep_first_float: bool = True
                  ) -> tuple[nn.Module, list[str]]:
    """Post-training static int8 quantization (CPU) of an eval-mode float model.

    ``calibration``: a batch (or batches) of preprocessed images that set the activation ranges;
    use real images (``real_photos``), not noise. ``backend``: torch's quantized engine
    (default ``default_int8_backend()``); the returned model selects it on every call, since its
    weights are packed for that engine. ``keep_first_float``: leave the first conv (it sees the
    image) in float32. Returns (quantized model, submodules left float). The model may have its
    BN folded, but not its convs fused for oneDNN (``optimize(model, onednn=False)``).
    """
    if any(isinstance(m, (OneDNNConv2d, OneDNNConvAdd)) for m in model.modules()):
        raise OptimizeError("quantize_int8 needs the float model's own convs, not oneDNN-fused "
                            "ones: pass optimize(model, onednn=False) or the eager model")
    backend = backend or default_int8_backend()
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise OptimizeError(f"quantized engine {backend!r} is not available in this torch build")
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    if not batches:
        raise OptimizeError("int8 quantization needs calibration images")
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import FixedQParamsObserver

    torch.backends.quantized.engine = backend
    model = copy.deepcopy(model).eval().cpu()
    _skip_input_check(model)
    floats = _untraceable(model)
    if "" in floats:
        raise OptimizeError(f"{getattr(model, 'model_name', type(model).__name__)} cannot be "
                            f"traced for int8 quantization")
    mapping = get_default_qconfig_mapping(backend)
    # conv -> ReLU6 (MobileNetV2, EfficientNet-Lite): the quantized kernels cannot fuse ReLU6, so
    # the conv output would be quantized over its whole pre-activation range (often +-100) and
    # the [0, 6] that survives the clamp would get a handful of levels. Quantizing that output
    # straight onto [0, 6] (scale 6/255, zero point 0) *is* ReLU6, by saturation, at full
    # resolution.
    relu6 = QConfig(activation=FixedQParamsObserver.with_args(
        scale=6.0 / 255, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=255),
        weight=mapping.global_qconfig.weight)
    # the first conv (the one that sees the image) stays float32: with EfficientNet-Lite0's real
    # weights, int8 there alone cuts top-1 agreement with float from 77 % to 54 % of the photo
    # views, for about 2 % of the MACs; keeping the first layer in higher precision is standard
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    for name in _convs_before_relu6(model):
        if name != first:
            mapping.set_module_name(name, relu6)
    if first is not None and keep_first_float:
        mapping.set_module_name(first, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's FX quantization deprecation notices
        prepared = prepare_fx(model, mapping, (batches[0],),
                              prepare_custom_config={"non_traceable_module_name": floats})
        with torch.inference_mode():
            for x in batches:
                prepared(x)
        quantized = convert_fx(prepared)

    def select_engine(_module: nn.Module, _args: Any) -> None:
        if torch.backends.quantized.engine != backend:
            torch.backends.quantized.engine = backend

    quantized.register_forward_pre_hook(select_engine)
    quantized.quantized_engine = backend
    return quantized, floats + ([first] if first is not None and keep_first_float else [])


# ---------------------------------------------------------------------------------------------
# optimize()
# ---------------------------------------------------------------------------------------------


def _example_input(model: nn.Module) -> torch.Tensor:
    size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
    p = next(model.parameters(), None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, *size), generator=g)
    return x.to(p.device, p.dtype) if p is not None else x


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16}


def _stage_specs_before(model: nn.Module) -> tuple[Any, ...] | None:
    """The paper-table rows, read while every block still has its class."""
    try:
        return tuple(model.stage_specs()) if hasattr(model, "stage_specs") else None
    except Exception:  # noqa: BLE001 - a model whose specs fail keeps failing the same way
        return None


def _cached_stage_specs(specs: tuple[Any, ...]) -> list[Any]:
    return list(specs)


def _keep_stage_specs(model: nn.Module, specs: tuple[Any, ...] | None) -> None:
    """Rewritten blocks (GraphModules, ``DenseBlockBuffer``) no longer have the attributes
    ``stage_specs()`` reads, but the architecture they describe is unchanged: the optimized model
    answers with the rows read before the rewrite, as long as every module they name still
    exists at its path (so ``profile`` can count its parameters and MACs)."""
    if not specs:
        return
    names = {name for name, _ in model.named_modules()}
    if all(m in names for spec in specs for m in spec.modules):
        # an instance attribute shadows the method; a partial (not a lambda) pickles
        model.stage_specs = functools.partial(_cached_stage_specs, specs)


def _outside_inference_mode(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Run ``fn`` with ``torch.inference_mode`` off, so that the optimized model's folded and
    copied weights are ordinary tensors even when ``optimize`` is called inside an
    ``inference_mode`` block (an inference tensor has no version counter and cannot be changed
    in place outside inference mode)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> nn.Module:
        with torch.inference_mode(False):
            return fn(*args, **kwargs)
    return wrapper


def _own_forward_code(model: nn.Module) -> bool:
    """Give ``model`` a ``forward`` of its own: a copy of its class's function with a fresh code
    object, bound to this instance. Dynamo keeps compiled graphs per *code object* and stops
    compiling a function after ``torch._dynamo.config.recompile_limit`` (8) entries, warning
    once and then running it eagerly. Every zoo model shares ``ZooModel.forward``, so without
    this the ninth compiled model in a process (or the fifth, each compiled at two batch sizes)
    silently ran uncompiled. Returns whether a copy was made (not for builtins or callables
    that are not plain methods)."""
    fn = getattr(model.forward, "__func__", None)
    if not isinstance(fn, types.FunctionType):
        return False
    copy_fn = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                                 fn.__defaults__, fn.__closure__)
    copy_fn.__kwdefaults__ = fn.__kwdefaults__
    copy_fn.__qualname__, copy_fn.__doc__ = fn.__qualname__, fn.__doc__
    model.forward = types.MethodType(copy_fn, model)
    return True


@_outside_inference_mode
def optimize(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
             compile: bool = False, compile_mode: str | None = None,
             dtype: torch.dtype | str | None = None, onednn: bool | None = None,
             quantize: str | None = None, calibration: Any = None,
             example_input: torch.Tensor | None = None, check: bool = True,
             inplace: bool = False, winograd: bool = True) -> nn.Module:
    """An inference copy of ``model``: BN folded, channels_last, optionally compiled, bf16 or int8.

    ``dtype``: ``torch.bfloat16`` (or ``"bf16"``) computes in bfloat16 and returns float32
    logits; default float32. ``onednn`` (default: on without ``compile``, which does its own
    fusion) runs the convs as oneDNN convolutions with their activations and residual sums
    fused (``fuse_onednn``, ``fuse_blocks``; CPU, where PyTorch has oneDNN); with it,
    ``winograd`` (default on) runs the float32 3x3 convs that are large enough by Winograd's
    F(2x2, 3x3) (``WinogradConv2d``). ``quantize="int8"`` (CPU) needs ``calibration`` images
    and replaces channels_last/compile/dtype/onednn. ``check`` compares the result with the
    eager model on ``example_input`` (default: one random image at the model's
    ``pretrained_cfg`` size) and raises ``OptimizeError`` beyond ``FLOAT_TOLERANCE``
    (``BF16_TOLERANCE`` for bfloat16). The returned model carries ``optimize_report`` (an
    ``OptimizeReport``).
    """
    if quantize not in (None, "int8"):
        raise OptimizeError(f"unknown quantization {quantize!r}; expected 'int8' or None")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise OptimizeError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise OptimizeError(f"dtype {dtype} is not supported; expected torch.float32 or "
                            f"torch.bfloat16")
    if dtype == torch.float32:
        dtype = None
    if dtype is not None and quantize:
        raise OptimizeError("dtype=bfloat16 and quantize='int8' are exclusive")
    eager = model
    was_training = eager.training
    eager.eval()
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    specs = _stage_specs_before(out)
    report = OptimizeReport()
    try:
        if fold_bn:
            report.bn_folded, report.bn_left = fold_batchnorm(out)
        if quantize == "int8":
            if calibration is None:
                raise OptimizeError("quantize='int8' needs calibration images (e.g. real_photos)")
            out, report.float_modules = quantize_int8(out, calibration)
            report.quantized = "int8"
        else:
            if dtype is not None:
                p = next(out.parameters(), None)
                if p is not None and p.device.type == "cpu" and not cpu_has_native_bf16():
                    warnings.warn("this CPU has no AMX/AVX-512 BF16 units: bfloat16 is "
                                  "emulated and likely slower than float32", stacklevel=2)
                out = out.to(dtype)
                out.register_forward_pre_hook(_cast_input(dtype))
                out.register_forward_hook(_float32_output)
                report.dtype = str(dtype).removeprefix("torch.")
            if onednn is None:
                onednn = not compile
            if onednn:
                report.onednn_convs, report.onednn_acts = fuse_onednn(out)
                if report.onednn_convs:
                    report.dense_blocks_buffered = buffer_dense_blocks(out)
                (folded, acts, report.onednn_adds, report.scales_into_convs,
                 report.pools_before_convs, report.scales_in_place,
                 report.spatial_means) = fuse_blocks(out)
                report.bn_folded += folded
                report.bn_left -= folded
                report.onednn_acts += acts
                if winograd:
                    report.winograd_convs = winograd_convs(out)
            if not compile:  # inductor lowers the pools itself
                report.max_pools_strided = stride_max_pools(out)
            if channels_last:
                out = out.to(memory_format=torch.channels_last)
                out.register_forward_pre_hook(_to_channels_last)
                report.channels_last = True
            if check and not inplace:
                x = example_input if example_input is not None else _example_input(eager)
                with torch.inference_mode():
                    ref, got = eager(x), out(x)
                atol, rtol = FLOAT_TOLERANCE if dtype is None else BF16_TOLERANCE
                # logits, or a backbone's list of feature maps (features_only)
                refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
                gots = list(got) if isinstance(got, (list, tuple)) else [got]
                if len(refs) != len(gots):
                    raise OptimizeError(f"optimized model returns {len(gots)} outputs, the "
                                        f"eager one {len(refs)}")
                report.max_abs_diff = max((g.to(r.dtype) - r).abs().max().item()
                                          for r, g in zip(refs, gots, strict=True))
                scale = max(r.abs().max().item() for r in refs)
                if report.max_abs_diff > atol + rtol * scale:
                    raise OptimizeError(
                        f"optimized ({report.dtype}) logits leave the tolerance (atol={atol}, "
                        f"rtol={rtol}): "
                        f"max |diff| {report.max_abs_diff:.3g}")
            _keep_stage_specs(out, specs)
            if compile:
                out.optimize_report = report
                _own_forward_code(out)
                p = next(out.parameters(), None)
                if compile_mode is None and (p is None or p.device.type == "cpu"):
                    # freezing: weights become constants, so inductor can pre-pack them into
                    # oneDNN's blocked layout once instead of on every call (inference only)
                    out = torch.compile(out, options={"freezing": True})
                else:
                    out = torch.compile(out, mode=compile_mode)
                report.compiled = True
    finally:
        if not inplace:  # in place, the model *is* the optimized one: it stays in eval mode
            eager.train(was_training)
    # the report sits on the module itself (a compiled wrapper forwards attribute reads)
    target = getattr(out, "_orig_mod", out)
    target.optimize_report = report
    return out


# ---------------------------------------------------------------------------------------------
# real photos and top-1 agreement (judging int8)
# ---------------------------------------------------------------------------------------------

# scikit-image's bundled photos (no download); grayscale ones are repeated to three channels.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
          "camera", "clock", "hubble_deep_field", "immunohistochemistry", "retina", "brick")


def _load_photo(name: str) -> torch.Tensor:
    import skimage.data as data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(data, name)()
    t = torch.from_numpy(img.copy()).float() / 255.0
    if t.ndim == 2:
        t = t.unsqueeze(-1).expand(-1, -1, 3)
    return t[..., :3].permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


def real_photos(input_size: Sequence[int] = (3, 224, 224), mean: Sequence[float] = (0.485, 0.456,
                0.406), std: Sequence[float] = (0.229, 0.224, 0.225), crop_pct: float = 0.875,
                views: int = 1, names: Sequence[str] = PHOTOS, seed: int = 0) -> torch.Tensor:
    """Preprocessed photos from ``skimage.data`` as a (N, 3, H, W) batch.

    View 0 of each photo is the evaluation transform (resize the short side to size / crop_pct,
    centre crop); views 1.. are seeded random crops (20-100 % of the area) with random flips, so
    a handful of photos gives enough distinct inputs to calibrate and to measure agreement.
    """
    _, h, w = input_size
    g = torch.Generator().manual_seed(seed)
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)
    out = []
    for name in names:
        img = _load_photo(name)
        _, ih, iw = img.shape
        for v in range(views):
            if v == 0:
                short = round(min(h, w) / crop_pct)
                scale = short / min(ih, iw)
                rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
                big = F.interpolate(img[None], size=(rh, rw), mode="bilinear",
                                    antialias=True, align_corners=False)[0]
                top, left = (rh - h) // 2, (rw - w) // 2
                crop = big[:, top:top + h, left:left + w]
            else:
                area = float(torch.empty(1).uniform_(0.2, 1.0, generator=g)) * ih * iw
                side = int(min(ih, iw, area ** 0.5))
                top = int(torch.randint(0, ih - side + 1, (1,), generator=g))
                left = int(torch.randint(0, iw - side + 1, (1,), generator=g))
                crop = F.interpolate(img[None, :, top:top + side, left:left + side],
                                     size=(h, w), mode="bilinear", antialias=True,
                                     align_corners=False)[0]
                if torch.rand(1, generator=g) < 0.5:
                    crop = crop.flip(-1)
            out.append((crop.clamp(0, 1) - mean_t) / std_t)
    return torch.stack(out)


@torch.inference_mode()
def agreement(reference: nn.Module, candidate: nn.Module, images: torch.Tensor,
              batch_size: int = 16, confident: float = 0.5) -> dict[str, float]:
    """How often ``candidate`` predicts what ``reference`` predicts, on ``images``.

    ``top1``: same top-1 class; ``top1_in_top5``: the reference's top-1 is among the candidate's
    top 5; ``top1_confident``: top-1 agreement over the images the reference classifies with
    softmax probability >= ``confident`` (an ambiguous photo flips under any perturbation, so
    this separates the quantizer's error from the photo's ambiguity); ``n``/``n_confident``.
    """
    reference.eval()
    candidate.eval()
    ref_logits, cand_logits = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        ref_logits.append(reference(x).float())
        cand_logits.append(candidate(x).float())
    a, b = torch.cat(ref_logits), torch.cat(cand_logits)
    top1 = a.argmax(1)
    same = top1 == b.argmax(1)
    in5 = (b.topk(min(5, b.shape[1]), dim=1).indices == top1[:, None]).any(1)
    sure = a.softmax(1).amax(1) >= confident
    return {"top1": same.float().mean().item(), "top1_in_top5": in5.float().mean().item(),
            "top1_confident": same[sure].float().mean().item() if sure.any() else float("nan"),
            "n": float(len(same)), "n_confident": float(sure.sum())}


def top1_agreement(reference: nn.Module, candidate: nn.Module, images: torch.Tensor,
                   batch_size: int = 16) -> float:
    """Fraction of images on which both models predict the same class."""
    return agreement(reference, candidate, images, batch_size)["top1"]


def int8_agreement(model: nn.Module, calibration_views: int = 8, eval_views: int = 4
                   ) -> tuple[nn.Module, dict[str, float]]:
    """Quantize ``model`` (give it real weights) to int8 and measure its agreement with float.

    Calibration and evaluation use the same ``skimage.data`` photos but different seeded views
    (centre crop + random crops/flips), preprocessed with the model's ``pretrained_cfg``.
    Returns (int8 model, ``agreement`` dict).
    """
    cfg = getattr(model, "pretrained_cfg", {})
    kw = {k: cfg[k] for k in ("input_size", "mean", "std", "crop_pct") if k in cfg}
    calib = real_photos(**kw, views=calibration_views, seed=1)
    evals = real_photos(**kw, views=eval_views, seed=2)
    model = model.eval()
    q = optimize(model, quantize="int8", calibration=calib.split(16))
    return q, agreement(model, q, evals)
