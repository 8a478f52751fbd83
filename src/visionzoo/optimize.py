"""Faster PyTorch inference with PyTorch's own steps: BN folding, channels_last, compile, bf16.

``optimize(model)`` returns an inference copy of a model (the original is left alone). It changes
no model code and calls no kernel of its own; speed beyond this (onnxruntime, OpenVINO, int8) is
``visionzoo.deploy``'s job.

* **BN folding.** In eval mode a BatchNorm is the affine map y = (x - mu) * g / sqrt(var + eps) + b
  per channel, so a conv followed directly by one is a single conv with weights
  W * g / sqrt(var + eps) and bias (c - mu) * g / sqrt(var + eps) + b. Every ``Conv2d`` followed
  immediately by a ``BatchNorm2d`` inside an ``nn.Sequential`` is folded (our ``ConvNormAct``,
  torchvision's ``Conv2dNormActivation``); the BN becomes ``nn.Identity`` at the same module
  path, so ``stage_specs()`` and ``profile`` still read the result. Only ``Sequential`` pairs are
  folded because there the data flow is certain: in a custom module, registration order says
  nothing about which tensor goes where (DenseNet's BN -> ReLU -> conv, for one, must not be
  folded). A ``Conv2d`` subclass (TF "same" padding, ...) is folded only when the folded copy
  reproduces conv -> BN on a probe input, since a subclass may transform its weights in
  ``forward`` (weight standardisation). Folded weights are computed in float64, then cast back.
* **channels_last.** Weights are converted to NHWC and the input is converted by a forward
  pre-hook; oneDNN (CPU) and cuDNN (GPU) convolutions are faster on NHWC.
* **torch.compile** (``compile=True``): inductor fuses the element-wise tails (activations,
  residual adds) into the convolutions; on CPU with ``freezing`` (weights become constants and
  are pre-packed once), so the result is for inference under ``torch.no_grad`` /
  ``inference_mode``. The first call compiles (seconds to minutes). Each optimized model gets its
  own ``forward`` code object, so any number of them compile in one process
  (``_own_forward_code``).
* **bfloat16** (``dtype=torch.bfloat16``): after folding (done in float64), weights and
  activations are cast to bfloat16 (8 significant bits, float32's range); the input is cast on
  the way in and the logits are returned in float32. On CPUs with AMX or AVX-512 BF16
  (``cpu_has_native_bf16``) bf16 convolutions and matmuls run several times faster than
  float32; without those units bf16 is emulated and usually *slower*, and ``optimize`` warns.
  Normalisation statistics, softmax and the residual sums then run in bf16 too, so its
  tolerance is its own (below).

Tolerance. Folding and NHWC change only the rounding of the floating-point sums, so the float32
optimized model's logits stay within ``FLOAT_TOLERANCE`` of the eager model's:
``max |optimized - eager| <= atol + rtol * max |eager|`` with atol = rtol = 1e-3 (relative
to the logits' scale, as rounding errors are).
That bound is loose against what is seen in practice (1e-6 to 1e-4 max |diff|) and tight
against real mistakes (a wrongly folded layer moves logits by O(1)). bfloat16 rounds every
activation to 2^-9 relative, and those errors accumulate over the depth: ``BF16_TOLERANCE`` is
atol = 0.05, rtol = 0.05 (measured 0.5-2 % of the logit scale on one small model per family
with random weights, tests/test_optimize.py; a deep net whose random-init activations grow
through the stages exceeds it and is refused: SE-ResNet-101 with timm's init has logits up to
136 and a bf16 error of 17), and, because a logit bound says little about decisions,
bf16 is also judged by top-1 agreement on real photos (``visionzoo.photos.agreement``).
``check=True`` (the default) verifies the tolerance on an example input and raises
``OptimizeError`` otherwise.
"""

from __future__ import annotations

import copy
import functools
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = ["BF16_TOLERANCE", "FLOAT_TOLERANCE", "OptimizeError", "OptimizeReport",
           "cpu_has_native_bf16", "fold_batchnorm", "optimize"]

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
    compiled: bool = False
    dtype: str = "float32"
    max_abs_diff: float | None = None  # vs eager on the check input

    def short(self) -> str:
        """A table cell: "BN folded 20, channels_last"."""
        parts = [f"BN folded {self.bn_folded}"]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compiled else []
        parts += [self.dtype] if self.dtype != "float32" else []
        return ", ".join(parts)

    def summary(self) -> str:
        parts = [f"folded {self.bn_folded} BatchNorm(s) into convs"]
        if self.bn_left:
            parts.append(f"{self.bn_left} BatchNorm(s) not after a conv kept")
        if self.channels_last:
            parts.append("channels_last")
        if self.compiled:
            parts.append("torch.compile")
        if self.dtype != "float32":
            parts.append(self.dtype)
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


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The single conv equal to ``bn(conv(x))`` for an eval-mode BN (a copy; ``conv`` is kept)."""
    a, b = _bn_affine(bn)  # per output channel
    w = conv.weight.detach().double() * a.view(-1, 1, 1, 1)  # (out, in/groups, kh, kw) * (out,)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(a)
    new, dtype, grad = copy.deepcopy(conv), conv.weight.dtype, conv.weight.requires_grad
    new.weight = nn.Parameter(w.to(dtype), requires_grad=grad)
    new.bias = nn.Parameter((bias * a + b).to(dtype), requires_grad=grad)
    return new


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
# forward hooks: channels_last input, bfloat16 in and float32 out
# ---------------------------------------------------------------------------------------------


def _to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    x, *rest = args
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)


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
# optimize()
# ---------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16}


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """bfloat16, or None for float32; anything else is an ``OptimizeError``."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise OptimizeError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise OptimizeError(f"dtype {dtype} is not supported; expected torch.float32 or "
                            f"torch.bfloat16")
    return None if dtype == torch.float32 else dtype


def _example_input(model: nn.Module) -> torch.Tensor:
    size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
    p = next(model.parameters(), None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, *size), generator=g)
    return x.to(p.device, p.dtype) if p is not None else x


def _check(eager: nn.Module, out: nn.Module, x: torch.Tensor, report: OptimizeReport,
           tolerance: tuple[float, float]) -> None:
    """Compare ``out`` with ``eager`` on ``x``; record the max |diff|, raise beyond tolerance."""
    with torch.inference_mode():
        ref, got = eager(x), out(x)
    # logits, or a backbone's list of feature maps (features_only)
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    gots = list(got) if isinstance(got, (list, tuple)) else [got]
    if len(refs) != len(gots):
        raise OptimizeError(f"optimized model returns {len(gots)} outputs, the eager one "
                            f"{len(refs)}")
    report.max_abs_diff = max((g.to(r.dtype) - r).abs().max().item()
                              for r, g in zip(refs, gots, strict=True))
    scale = max(r.abs().max().item() for r in refs)
    atol, rtol = tolerance
    if report.max_abs_diff > atol + rtol * scale:
        raise OptimizeError(f"optimized ({report.dtype}) logits leave the tolerance "
                            f"(atol={atol}, rtol={rtol}): max |diff| {report.max_abs_diff:.3g}")


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


def _compiled(model: nn.Module, mode: str | None) -> nn.Module:
    """``torch.compile`` with static shapes (one graph per input shape). Without
    ``dynamic=False``, dynamo's automatic-dynamic state, keyed by the forward's name and line
    (shared by every zoo model even with ``_own_forward_code``), made a process's later
    compiles symbolic: deploying EfficientNet-Lite0 after ResNet-50 at two batch sizes took
    3.4 min instead of 12-20 s."""
    _own_forward_code(model)
    p = next(model.parameters(), None)
    if mode is None and (p is None or p.device.type == "cpu"):
        # freezing: weights become constants, so inductor can pre-pack them into oneDNN's
        # blocked layout once instead of on every call (inference only)
        return torch.compile(model, dynamic=False, options={"freezing": True})
    return torch.compile(model, mode=mode, dynamic=False)


@_outside_inference_mode
def optimize(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
             compile: bool = False, compile_mode: str | None = None,
             dtype: torch.dtype | str | None = None, example_input: torch.Tensor | None = None,
             check: bool = True, inplace: bool = False) -> nn.Module:
    """An inference copy of ``model``: BN folded, channels_last, optionally bf16 and compiled.

    ``dtype``: ``torch.bfloat16`` (or ``"bf16"``) computes in bfloat16 and returns float32
    logits; default float32. ``compile_mode`` is passed to ``torch.compile`` (default on CPU:
    inductor with ``freezing``). ``check`` compares the result with the eager model on
    ``example_input`` (default: one random image at the model's ``pretrained_cfg`` size) before
    compiling and raises ``OptimizeError`` beyond ``FLOAT_TOLERANCE`` (``BF16_TOLERANCE`` for
    bfloat16); ``inplace=True`` changes ``model`` itself, with no check (there is no eager model
    left to compare with). The returned model carries ``optimize_report`` (an ``OptimizeReport``).
    """
    dtype = _resolve_dtype(dtype)
    eager = model
    was_training = eager.training
    eager.eval()
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    report = OptimizeReport()
    try:
        if fold_bn:
            report.bn_folded, report.bn_left = fold_batchnorm(out)
        if dtype is not None:
            p = next(out.parameters(), None)
            if p is not None and p.device.type == "cpu" and not cpu_has_native_bf16():
                warnings.warn("this CPU has no AMX/AVX-512 BF16 units: bfloat16 is emulated and "
                              "likely slower than float32", stacklevel=3)
            out = out.to(dtype)
            out.register_forward_pre_hook(_cast_input(dtype))
            out.register_forward_hook(_float32_output)
            report.dtype = str(dtype).removeprefix("torch.")
        if channels_last:
            out = out.to(memory_format=torch.channels_last)
            out.register_forward_pre_hook(_to_channels_last)
            report.channels_last = True
        if check and not inplace:
            x = example_input if example_input is not None else _example_input(eager)
            _check(eager, out, x, report, FLOAT_TOLERANCE if dtype is None else BF16_TOLERANCE)
        if compile:
            out.optimize_report = report
            out = _compiled(out, compile_mode)
            report.compiled = True
    finally:
        if not inplace:  # in place, the model *is* the optimized one: it stays in eval mode
            eager.train(was_training)
    # the report sits on the module itself (a compiled wrapper forwards attribute reads)
    getattr(out, "_orig_mod", out).optimize_report = report
    return out
