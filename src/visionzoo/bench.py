"""Throughput, latency and peak memory, side by side with torchvision, timm and the engines.

``bench(["resnet50"], compare=True)`` measures, for each model:

* **params** and **MACs** (``visionzoo.profile``; multiply-accumulates, FLOPs = 2 x MACs) of every
  candidate, so that "the same network" can be seen to be the same;
* **throughput** (images/s) at each batch size, inference (``torch.inference_mode``) and, with
  ``train=True``, training (forward, cross-entropy, backward, SGD-with-momentum step), with
  stochastic depth off in every implementation (their default rates differ, and a dropped
  branch costs work; dropout is left as each has it);
* **latency** p50 / p90 (ms) at batch 1, from the individual calls;
* **peak memory** (MB) of one call (method below);
* with ``compare=True``: the same network from torchvision and timm (the names in
  ``ModelInfo.references``), and the **ratio** ours / theirs;
* with ``optimize=True``: ``visionzoo.optimize(model)`` (PyTorch's own steps: BN folded,
  channels_last) as one more candidate, and with ``compile=True`` ``optimize(model, compile=True)``
  as another (its compilation happens in the untimed first call); with ``bf16=True`` the same in
  bfloat16 (``optimize(model, dtype=torch.bfloat16)``, unless only the engines are asked for; a
  different number format, so its row says so and its max |logit difference| is shown);
* with ``engines=True`` (inference only; it implies ``compare=True``): the deployments a user
  would build *without* visionzoo, from the reference model (torchvision's where it has one, else
  timm's; the same weights as ours), each configured as its documentation recommends for CPU
  inference, and ``visionzoo.deploy`` on ours:

  - ``onnxruntime``: ``torch.onnx.export(dynamo=True)`` with a dynamic batch (a static one where
    that export fails), an ``InferenceSession`` on the CPU execution provider with
    ``intra_op_num_threads`` set and onnxruntime's default graph optimisations (all of them);
  - ``openvino``: ``openvino.convert_model(ref, example_input=x)``, reshaped to the static input
    shape of each batch size, compiled for the CPU with the ``LATENCY`` hint, the thread count
    and ``INFERENCE_PRECISION_HINT`` f32 (on a CPU with bf16 units OpenVINO's default precision
    is bf16: left to the default, its "float32" row would be a bf16 one), one reused infer
    request;
  - ``torch.compile``: ``torch.compile(ref, dynamic=False, options={"freezing": True})`` called
    under ``torch.inference_mode`` (PyTorch's CPU inference recipe; static shapes, one
    compilation per batch size, in the untimed first call);
  - ``visionzoo+deploy``: ``deploy(ours, "auto", batch_size=b, threads=..., example_input=x)``,
    built per batch size (its engines are tuned and chosen for one); the config column names its
    choice ("auto -> openvino");
  - with ``bf16=True`` also ``openvino+bf16`` (the same OpenVINO model with
    ``INFERENCE_PRECISION_HINT`` bf16) and ``visionzoo+deploy+bf16`` (``deploy(...,
    dtype="bfloat16", check=False)``: random weights can leave bf16's logit tolerance; agreement on
    real photos is the benchmark's int8/bf16 section's job), their max |logit difference| shown.

  Each engine row's ratio is its throughput over the faster eager reference's (the same
  machinery as our rows), its max |logit difference| is against our eager model, and an engine
  that is not installed or fails to build gives a row with its error. Engines are not in the
  peak-memory measurement.

Method. All candidates of a model get the same input tensor. With ``compare=True`` ours is built
by ``port()`` from the reference's own (randomly initialised) state dict, so both have the same
layout flags (e.g. torchvision's v1.5 stride) *and* the same weights; the max |logit difference|
is reported next to each reference to show it. Every candidate is warmed up (one untimed call,
then calls until ``warmup`` calls and ``min_time / 2`` seconds have passed; that also sizes its
rounds), then ``repeats`` rounds are run: in each round every candidate runs back to back for
about ``min_time`` seconds, the order rotating from round to round, so that drifting machine load
hits all candidates alike. Throughput is the median over rounds; a **ratio** is the median over
rounds of the per-round ratio (ours / that reference on a reference's row; this candidate / the
faster eager reference on one of our rows and on an engine's row, the faster being the one with
the higher median throughput: taking the faster reference round by round instead would compare
ours with the better of two noisy draws every time, a bias of about half the round-to-round
spread against ours when the references are equally fast). Next to each ratio,
``[ratio_lo, ratio_hi]`` is a distribution-free confidence interval for that median
(``median_interval``: order statistics of the per-round ratios, at least 95 % coverage from 6
rounds, the range at 5 with 94 %): on a shared machine one call can vary by 10 % or more from
the next, so a ratio of 0.93 from 5 rounds may not differ from 1.0, and the interval says
whether it does. Each row also keeps its per-round throughputs (``img_s_rounds``, aligned round
by round across the rows of one model, mode and batch), so any other ratio, e.g. ``deploy`` over
the fastest engine, can be formed the same way. ``torch.set_num_threads(threads)`` pins the
intra-op threads; the engines get the same thread count.

Peak memory. ``tracemalloc`` does not see torch's allocations, so memory is measured in a fresh
subprocess per model (``memory=True``): on CPU the resident-set high-water mark (``VmHWM``, reset
through ``/proc/self/clear_refs``) during one call, minus the resident set just before it, with
glibc told to serve every allocation of 64 KiB or more by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``),
so freed activations go back to the OS and the next candidate's peak is not hidden in reused
heap. That is the memory the call adds on top of the model: activations and workspace (plus
gradients for training), not the weights. On CUDA it is ``torch.cuda.max_memory_allocated()`` minus
the allocation before the call. Where ``clear_refs`` cannot be written (not Linux), the
``ru_maxrss`` growth is reported instead and the method column says so.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import gc
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from visionzoo.extras import MissingExtraError, MissingExtraWarning, require_pyplot
from visionzoo.profile import count_params
from visionzoo.registry import list_models, model_info

__all__ = ["BenchReport", "BenchRow", "ReferenceUnavailable", "bench", "build_reference",
           "machine_info", "median_interval"]

OURS = "visionzoo"
OURS_OPT = "visionzoo+optimize"
OURS_COMPILED = "visionzoo+optimize+compile"
OURS_BF16 = "visionzoo+optimize+bf16"
OURS_COMPILED_BF16 = "visionzoo+optimize+compile+bf16"
OURS_DEPLOY = "visionzoo+deploy"
OURS_DEPLOY_BF16 = "visionzoo+deploy+bf16"
ENGINES = ("onnxruntime", "openvino", "torch.compile")  # the baselines, built from the reference
OPENVINO_BF16 = "openvino+bf16"


class ReferenceUnavailable(RuntimeError):
    """A reference network that cannot be built here (library missing, unknown name)."""


@dataclass
class BenchRow:
    model: str  # our registered name
    impl: str  # "visionzoo", "visionzoo+optimize", "torchvision", "timm", "openvino", ...
    name: str  # the implementation's own model name (an engine's: the model it runs)
    config: str  # our layout flags / optimize steps / engine settings, "" for a reference
    mode: str  # "infer" | "train"
    batch: int
    size: int
    threads: int
    device: str
    params: int | None = None
    macs: int | None = None  # per image
    img_s: float | None = None  # median over rounds
    img_s_min: float | None = None
    img_s_max: float | None = None
    lat_p50_ms: float | None = None  # batch 1 only
    lat_p90_ms: float | None = None
    peak_mem_mb: float | None = None
    ratio: float | None = None  # see the module docstring
    ratio_lo: float | None = None  # distribution-free interval for the median ratio
    ratio_hi: float | None = None  # (``median_interval``)
    max_diff: float | None = None  # max |logit diff| vs our eager model on the bench input
    error: str = ""
    img_s_rounds: list[float] | None = None  # per round, aligned across one model/mode/batch


@dataclass
class BenchReport:
    rows: list[BenchRow]
    machine: dict[str, Any]
    settings: dict[str, Any]
    memory_method: str = ""

    # ---- formats ----------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"machine": self.machine, "settings": self.settings,
                           "memory_method": self.memory_method,
                           "rows": [asdict(r) for r in self.rows]}, indent=2)

    def to_csv(self) -> str:
        buf = io.StringIO()
        names = list(BenchRow.__dataclass_fields__)
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if v is None else " ".join(f"{x:.6g}" for x in v)
                            if isinstance(v, list) else v) for k, v in asdict(r).items()})
        return buf.getvalue()

    def to_markdown(self) -> str:
        m, s = self.machine, self.settings
        lines = [
            f"Machine: {m.get('cpu', '?')}, {m.get('usable_cpus', '?')} usable CPU(s)"
            + (f", {m['gpu']}" if m.get("gpu") else "")
            + f"; torch {m.get('torch')}, torchvision {m.get('torchvision')}, timm {m.get('timm')}"
            + f"; {m.get('date', '')}; load average at start {m.get('loadavg', '?')}",
            f"Settings: device {s.get('device')}, {s.get('threads')} thread(s), batches "
            f"{s.get('batches')}, {s.get('repeats')} interleaved rounds of ~{s.get('min_time')} s "
            f"after warm-up. MACs = multiply-accumulates per image (FLOPs = 2 x MACs). "
            f"ratio: on a reference row ours (in its layout, same weights)/that reference; on "
            f"our rows and the engines' this/the faster eager reference of the same layout "
            f"(median of per-round ratios), with [lo, hi] a distribution-free interval for "
            f"that median ({_interval_text(s.get('repeats'))}). Peak memory: {self.memory_method}.",
            *([f"Note: {m['note']}"] if m.get("note") else []),
            "",
        ]
        header = ["model", "impl", "config", "mode", "batch", "params", "MACs", "img/s",
                  "p50 ms", "p90 ms", "peak MB", "ratio", "max|dlogit|"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in self.rows:
            spread = (f" ({r.img_s_min:.1f}-{r.img_s_max:.1f})"
                      if r.img_s_min is not None and r.img_s_max is not None else "")
            cells = [r.model, r.impl if r.impl.startswith(OURS) else f"{r.impl}:{r.name}",
                     r.config or "-", r.mode, str(r.batch), _human(r.params), _human(r.macs),
                     (f"{r.img_s:.1f}{spread}" if r.img_s is not None else
                      f"error: {r.error}"), _fmt(r.lat_p50_ms, 2), _fmt(r.lat_p90_ms, 2),
                     _fmt(r.peak_mem_mb, 1), _fmt(r.ratio, 3) + (
                         f" [{r.ratio_lo:.2f}, {r.ratio_hi:.2f}]"
                         if r.ratio_lo is not None and r.ratio_hi is not None else ""),
                     f"{r.max_diff:.1e}" if r.max_diff is not None else "-"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def format(self, fmt: str) -> str:
        try:
            return {"md": self.to_markdown, "csv": self.to_csv, "json": self.to_json}[fmt]()
        except KeyError:
            raise ValueError(f"unknown format {fmt!r}; expected md, csv or json") from None

    def plot(self, path: str | Path, mode: str = "infer") -> Path:
        """PNG: throughput against MACs per image (log-log), one marker style per implementation,
        at the largest batch measured. Raises MissingExtraError without matplotlib."""
        plt = require_pyplot("the throughput plot (bench --plot)")
        import matplotlib.ticker  # importable: require_pyplot succeeded

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [r for r in self.rows if r.mode == mode and r.img_s and r.macs]
        batch = max((r.batch for r in rows), default=0)
        rows = [r for r in rows if r.batch == batch]
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        styles = {OURS: ("o", "tab:blue"), OURS_OPT: ("*", "tab:green"),
                  OURS_COMPILED: ("P", "tab:olive"), OURS_BF16: ("D", "tab:cyan"),
                  OURS_COMPILED_BF16: ("X", "tab:purple"), OURS_DEPLOY: ("*", "black"),
                  OURS_DEPLOY_BF16: ("*", "tab:gray"), "onnxruntime": ("v", "tab:brown"),
                  "openvino": ("<", "tab:pink"), OPENVINO_BF16: (">", "tab:pink"),
                  "torch.compile": ("h", "tab:olive"),
                  "torchvision": ("s", "tab:orange"), "timm": ("^", "tab:red")}
        for impl in dict.fromkeys(r.impl for r in rows):
            pts = [r for r in rows if r.impl == impl]
            marker, color = styles.get(impl, ("x", "tab:gray"))
            ax.scatter([r.macs / 1e9 for r in pts], [r.img_s for r in pts], marker=marker,
                       color=color, label=impl, s=60 if marker == "*" else 36, alpha=0.85)
        for r in rows:
            if r.impl == OURS:
                ax.annotate(r.model, (r.macs / 1e9, r.img_s), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):  # 0.3 and 200, not 3x10^-1 and 2x10^2
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("G MACs per image (FLOPs = 2 x MACs)")
        ax.set_ylabel(f"{'inference' if mode == 'infer' else 'training'} throughput, images/s")
        m, s = self.machine, self.settings
        ax.set_title(f"batch {batch}, {s.get('threads')} thread(s), {s.get('device')}: "
                     f"{m.get('cpu', '')}"[:110], fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if rows:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path

    def save(self, prefix: str | Path) -> dict[str, Path]:
        """Write ``prefix``.md / .csv / .json / .png; returns the paths by format. The PNG is
        left out, with a MissingExtraWarning, without matplotlib (the ``[plots]`` extra)."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        out = {}
        for fmt in ("md", "csv", "json"):
            p = prefix.with_name(prefix.name + f".{fmt}")
            p.write_text(self.format(fmt))
            out[fmt] = p
        png = prefix.with_name(prefix.name + ".png")
        try:
            out["png"] = self.plot(png)
        except MissingExtraError as e:
            warnings.warn(f"skipped {png.name}: {e}", MissingExtraWarning, stacklevel=2)
        return out


def _interval_text(repeats: Any) -> str:
    """How the ratio interval is formed for ``repeats`` rounds, with its coverage."""
    if not isinstance(repeats, int) or repeats < 1:
        return "order statistics of the per-round ratios"
    lo, _, cov = median_interval(range(repeats))
    k = lo + 1
    return (f"order statistics {k} and {repeats + 1 - k} of the {repeats} per-round ratios, "
            f"coverage {100 * cov:.1f} %")


def _human(n: float | None) -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------------


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on (recorded with every result)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    for lib in ("torchvision", "timm"):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:
            info[lib] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# ---------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------


def build_reference(source: str, name: str) -> nn.Module:
    """The reference library's network, randomly initialised (no download)."""
    try:
        if source == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None)
        if source == "timm":
            import timm

            return timm.create_model(name, pretrained=False)
        if source == "efficientnet_pytorch":
            from efficientnet_pytorch import EfficientNet

            return EfficientNet.from_name(name)
    except ImportError as e:
        raise ReferenceUnavailable(f"{source} is not installed ({e})") from None
    except (KeyError, ValueError, RuntimeError) as e:
        raise ReferenceUnavailable(f"{source} cannot build {name!r}: {e}") from None
    raise ReferenceUnavailable(f"unknown reference source {source!r}")


@dataclass
class _Candidate:
    impl: str
    name: str
    config: str
    module: nn.Module | None
    spec: dict[str, Any]  # how the memory subprocess rebuilds it
    max_diff: float | None = None
    error: str = ""
    train: bool = True  # optimized models and engines are inference-only
    group: int = 0  # layout group: ours and the references of that layout
    kind: str = ""  # "ours", "reference" or "engine" (ratio base: see _rows_for)
    like: int | None = None  # an engine: the candidate whose params / MACs it has

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = "ours" if self.impl.startswith(OURS) else "reference"


def _flags_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items())


def _candidates(name: str, x: torch.Tensor, compare: bool, optimize: bool, compile: bool,
                device: torch.device, bf16: bool = False, engines: bool = False
                ) -> list[_Candidate]:
    """Ours (one per reference layout), the optimized variants of the first, the references.

    ``group`` ties each reference to the instance of ours in its layout (the same network with
    the same weights): ratios are only taken within a group.
    """
    from visionzoo.factory import create_model
    from visionzoo.ports import PortError, get_port, port

    info = model_info(name)
    refs: list[_Candidate] = []
    layouts: list[tuple[dict[str, Any], nn.Module]] = []  # (flags, ours ported in that layout)
    for source, ref_name in (info.references.items() if compare else ()):
        try:
            ref = build_reference(source, ref_name).eval().to(device)
        except ReferenceUnavailable as e:
            refs.append(_Candidate(source, ref_name, "", None, {}, error=str(e)))
            continue
        cand = _Candidate(source, ref_name, "", ref, {"impl": source, "name": ref_name})
        try:  # ours in the reference's layout, with the reference's weights
            flags = dict(get_port(source, ref_name).overrides)
            ported = port(source, ref_name, ref.state_dict()).eval().to(device)
            group = next((g for g, (f, _) in enumerate(layouts) if f == flags), None)
            if group is None:
                group = len(layouts)
                layouts.append((flags, ported))
            cand.group = group
            with torch.inference_mode():  # same weights: the logits must agree
                cand.max_diff = float((ref(x[:1]) - ported(x[:1])).abs().max())
        except PortError as e:
            cand.config = f"no port ({e}); compared with ours in its first layout"
        except Exception as e:  # noqa: BLE001 - e.g. a size the reference refuses
            cand.error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            cand.module = None
        refs.append(cand)
    if not layouts:
        layouts.append(({}, create_model(name).eval().to(device)))
    out = [_Candidate(OURS, name, _flags_text(flags) or "paper default", model,
                      {"impl": OURS, "name": name, "overrides": flags}, group=g)
           for g, (flags, model) in enumerate(layouts)]
    variants = [(impl, c, d) for impl, c, d, wanted in (
        (OURS_OPT, False, None, optimize), (OURS_COMPILED, True, None, compile),
        (OURS_BF16, False, "bfloat16", bf16 and (optimize or not engines)),
        (OURS_COMPILED_BF16, True, "bfloat16", bf16 and compile)) if wanted]
    for impl, with_compile, dtype in variants:
        from visionzoo.optimize import optimize as optimize_fn

        try:
            opt = optimize_fn(out[0].module, compile=with_compile, dtype=dtype,
                              example_input=x[:1])
            rep = opt.optimize_report
            out.append(_Candidate(impl, name, rep.short(), opt,
                                  {**out[0].spec, "impl": impl, "compile": with_compile,
                                   "dtype": dtype},
                                  max_diff=rep.max_abs_diff, train=False))
        except Exception as e:  # noqa: BLE001 - reported in the row, the others still run
            out.append(_Candidate(impl, name, "", None, {}, train=False,
                                  error=f"{type(e).__name__}: {e}"))
    return out + refs


# ---------------------------------------------------------------------------------------------
# engines: what a user would deploy with without visionzoo, and deploy()
# ---------------------------------------------------------------------------------------------


class _Engine(nn.Module):
    """An engine's callable behind ``nn.Module``'s call, so the timing loop runs it like a model
    (torch tensors in and out)."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with the exporters' and converters' chatter silenced."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _one_line(e: BaseException) -> str:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first[:160]}"


def _ort_session(ref: nn.Module, x: torch.Tensor, threads: int, dynamic: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # graph optimisation: the default, ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory(prefix="visionzoo-bench-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        shapes = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
        _quiet(torch.onnx.export, ref, (x,), path, dynamo=True, **shapes)
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _onnxruntime(ref: nn.Module, x: torch.Tensor, threads: int, cache: dict[str, Any]
                 ) -> tuple[nn.Module, str]:
    import onnxruntime  # noqa: F401 - not installed: the row says so before any export

    session, how = cache.get("onnxruntime", (None, "static batch"))
    if session is None and "onnxruntime static" not in cache:
        try:  # one dynamic-batch session serves every batch size
            session, how = _ort_session(ref, x, threads, dynamic=True), "dynamic batch"
            cache["onnxruntime"] = (session, how)
        except Exception:  # noqa: BLE001 - then a static batch, exported per batch size
            cache["onnxruntime static"] = True
    if session is None:
        session = _ort_session(ref, x, threads, dynamic=False)
    name = session.get_inputs()[0].name

    def run(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: t.numpy()})[0])

    return _Engine(run), f"dynamo export, {how}, ORT_ENABLE_ALL, {threads} thread(s)"


def _openvino(ref: nn.Module, x: torch.Tensor, threads: int, cache: dict[str, Any],
              precision: str = "f32") -> tuple[nn.Module, str]:
    import openvino as ov

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU",
                                                               "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeError("this CPU has no bf16 units OpenVINO can use")
    if "openvino" not in cache:  # converted once per model, compiled per batch size
        cache["openvino"] = _quiet(ov.convert_model, ref, example_input=x)
    model = cache["openvino"].clone()
    model.reshape({0: list(x.shape)})  # static shapes compile to faster code
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()

    def run(t: torch.Tensor) -> torch.Tensor:
        request.infer({0: t.numpy()}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    run.compiled = compiled  # keeps the compiled model alive beside its request
    return _Engine(run), f"convert_model, static shape, LATENCY, {precision}, {threads} thread(s)"


def _torch_compile(ref: nn.Module, cache: dict[str, Any]) -> tuple[nn.Module, str]:
    if "torch.compile" not in cache:  # static shapes: one compilation per batch size
        cache["torch.compile"] = torch.compile(ref, dynamic=False, options={"freezing": True})
    return cache["torch.compile"], "freezing, static shapes, inference_mode"


def _deployed(ours: nn.Module, x: torch.Tensor, threads: int, dtype: str, budget: float
              ) -> tuple[nn.Module, str, float | None]:
    from visionzoo.deploy import deploy

    d = _quiet(deploy, ours, "auto", batch_size=len(x), threads=threads, example_input=x,
               dtype=dtype, check=dtype == "float32", time_budget_s=budget)
    chosen = d.report.candidate(d.runtime)
    suffix = "" if dtype == "float32" else f", {dtype}"
    return _Engine(d), f"auto -> {d.runtime}{suffix}", chosen.max_abs_diff if chosen else None


def _reference_index(cands: list[_Candidate]) -> int | None:
    """The reference the engines are built from: torchvision's, else timm's, else any."""
    built = [i for i, c in enumerate(cands) if c.kind == "reference" and c.module is not None]
    for source in ("torchvision", "timm"):
        for i in built:
            if cands[i].impl == source:
                return i
    return built[0] if built else None


def _engine_candidates(cands: list[_Candidate], x: torch.Tensor, threads: int, bf16: bool,
                       cache: dict[str, Any], budget: float) -> list[_Candidate]:
    """The engine rows of one batch size (module docstring); failures become error rows."""
    ri = _reference_index(cands)
    group = cands[ri].group if ri is not None else 0
    oi = next(i for i, c in enumerate(cands) if c.impl == OURS and c.group == group)
    ours = cands[oi].module
    builds: list[tuple[str, int, Callable[[], tuple]]] = []
    if ri is not None:
        ref = cands[ri].module
        builds += [("onnxruntime", ri, lambda: _onnxruntime(ref, x, threads, cache)),
                   ("openvino", ri, lambda: _openvino(ref, x, threads, cache)),
                   ("torch.compile", ri, lambda: _torch_compile(ref, cache))]
        if bf16:
            builds.append((OPENVINO_BF16, ri, lambda: _openvino(ref, x, threads, cache, "bf16")))
    builds.append((OURS_DEPLOY, oi, lambda: _deployed(ours, x, threads, "float32", budget)))
    if bf16:
        builds.append((OURS_DEPLOY_BF16, oi,
                       lambda: _deployed(ours, x, threads, "bfloat16", budget)))
    with torch.inference_mode():
        eager = ours(x).float()
    out = []
    for impl, like, build in builds:
        cand = _Candidate(impl, cands[like].name, "", None, {}, train=False, group=group,
                          kind="engine", like=like)
        try:
            module, cand.config, *diff = build()
            with torch.inference_mode():  # also the first call (compilation, for torch's)
                got = module(x).float()
            cand.max_diff = diff[0] if diff and diff[0] is not None else float(
                (got - eager).abs().max())
            cand.module = module
        except ImportError as e:
            cand.error = f"not installed ({_one_line(e)})"
        except Exception as e:  # noqa: BLE001 - reported in the row, the others still run
            cand.error = _one_line(e)
        out.append(cand)
    return out


def _rebuild(spec: dict[str, Any], device: torch.device) -> nn.Module:
    """A candidate from its spec (memory subprocess): same architecture, fresh weights."""
    from visionzoo.factory import create_model

    if spec["impl"].startswith(OURS):
        model = create_model(spec["name"], **spec.get("overrides", {})).eval().to(device)
        if spec["impl"] != OURS:
            from visionzoo.optimize import optimize as optimize_fn

            model = optimize_fn(model, compile=spec.get("compile", False),
                                dtype=spec.get("dtype"), check=False)
        return model
    return build_reference(spec["impl"], spec["name"]).eval().to(device)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def _no_stochastic_depth(model: nn.Module) -> int:
    """Turn stochastic depth off (ours' and timm's ``DropPath.drop_prob``, torchvision's
    ``StochasticDepth.p``): the libraries' defaults differ (EfficientNet-B0: ours and
    torchvision 0.2, timm none), and a dropped branch costs a mask and a multiply, so training
    is timed with the same work in each. Returns how many modules were changed."""
    n = 0
    for m in model.modules():
        if isinstance(getattr(m, "drop_prob", None), float) and m.drop_prob > 0:
            m.drop_prob = 0.0
            n += 1
        elif type(m).__name__ == "StochasticDepth" and getattr(m, "p", 0) > 0:
            m.p = 0.0
            n += 1
    return n


def _step_fn(model: nn.Module, x: torch.Tensor, mode: str, num_classes: int
             ) -> Callable[[], None]:
    if mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(x)

        return infer
    model.train()
    _no_stochastic_depth(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.arange(x.shape[0], device=x.device) % num_classes
    loss_fn = nn.CrossEntropyLoss()

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        opt.step()

    return train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(fns: dict[int, Callable[[], None]], device: torch.device, repeats: int,
                 min_time: float, warmup: int) -> dict[int, list[list[float]]]:
    """Per candidate: per round, the list of per-call seconds."""
    iters: dict[int, int] = {}
    for k, fn in fns.items():
        fn()  # untimed first call: lazy init, oneDNN primitive creation, compilation
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while n < warmup or time.perf_counter() - t0 < min_time / 2:
            fn()
            _sync(device)
            n += 1
        per_call = (time.perf_counter() - t0) / n
        iters[k] = max(1, min(10_000, round(min_time / max(per_call, 1e-9))))
    times: dict[int, list[list[float]]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        order = keys[r % len(keys):] + keys[:r % len(keys)]  # rotate who goes first
        for k in order:
            fn, calls = fns[k], []
            for _ in range(iters[k]):
                t0 = time.perf_counter()
                fn()
                _sync(device)
                calls.append(time.perf_counter() - t0)
            times[k].append(calls)
    return times


def median_interval(values: Sequence[float], level: float = 0.95
                    ) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of i.i.d. draws: the order
    statistics ``k`` and ``n + 1 - k`` of the ``n`` sorted values, with ``k`` the largest whose
    coverage ``1 - 2 P(Binomial(n, 1/2) <= k - 1)`` is at least ``level`` (with too few values
    for ``level``, ``k = 1``: the range). Returns ``(lo, hi, coverage)``."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median_interval needs at least one value")

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return s[k - 1], s[n - k], coverage(k)


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------------
# peak memory (subprocess)
# ---------------------------------------------------------------------------------------------

_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except OSError:
        return None
    return None


def _measure_call(fn: Callable[[], None], device: torch.device) -> tuple[float, str]:
    """MB that one call adds at its peak (module docstring), and the method used."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda max_allocated"
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
        if before is not None and peak is not None:
            return max(0, peak - before) / 1024, "VmHWM"
    except OSError:
        pass
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return max(0, after - before) * scale / 2**20, "ru_maxrss growth"


def _memory_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess: every candidate, mode and batch, one after the other."""
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    size, num_classes = job["size"], job["num_classes"]
    results: dict[str, float | str] = {}
    methods = set()
    g = torch.Generator().manual_seed(0)
    chans = job.get("chans", 3)
    for key, spec in job["candidates"].items():
        try:
            model = _rebuild(spec, device)
        except Exception as e:  # noqa: BLE001
            results[key] = f"error: {type(e).__name__}: {e}"
            continue
        for mode, batch in job["points"]:
            if mode == "train" and spec["impl"] != OURS and spec["impl"].startswith(OURS):
                continue
            x = torch.randn(batch, chans, size, size, generator=g).to(device)
            try:
                fn = _step_fn(model, x, mode, num_classes)
                fn()  # warm-up: one-time buffers (optimizer state, primitive caches)
                mb, method = _measure_call(fn, device)
                results[f"{key}|{mode}|{batch}"] = mb
                methods.add(method)
            except Exception as e:  # noqa: BLE001
                results[f"{key}|{mode}|{batch}"] = f"error: {type(e).__name__}: {e}"
            del x
        del model
        gc.collect()
    return {"results": results, "methods": sorted(methods)}


def _memory_subprocess(job: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": str(job["threads"])}
    code = ("import json, sys; from visionzoo.bench import _memory_worker; "
            "print('@@' + json.dumps(_memory_worker(json.loads(sys.stdin.read()))))")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(job), text=True,
                          capture_output=True, env=env, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory subprocess failed: {tail}")
    return json.loads(line[2:])


# ---------------------------------------------------------------------------------------------
# bench()
# ---------------------------------------------------------------------------------------------


def _macs(model: nn.Module, chans: int, size: int) -> int | None:
    from visionzoo.profile import profile

    try:
        return profile(model, (chans, size, size)).macs
    except Exception:  # noqa: BLE001 - e.g. an int8 graph the counter cannot run
        return None


def bench(models: Sequence[str] | str, *, batches: Sequence[int] = (1, 32),
          size: int | None = None, threads: int | None = None, train: bool = False,
          compare: bool = False, optimize: bool = False, compile: bool = False,
          bf16: bool = False, engines: bool = False, device: str = "cpu", repeats: int = 5,
          min_time: float = 1.0, warmup: int = 3, memory: bool = True,
          log: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark registered models (names or fnmatch patterns); see the module docstring.

    ``engines=True`` (CPU only; implies ``compare=True``) adds the onnxruntime, OpenVINO and
    torch.compile deployments of the reference and ``visionzoo.deploy`` of ours as inference
    rows; with ``bf16=True`` also their bfloat16 rows."""
    patterns = [models] if isinstance(models, str) else list(models)
    names: list[str] = []
    for p in patterns:
        found = list_models(p)
        if not found:
            model_info(p)  # raises UnknownModelError with suggestions
        names += [n for n in found if n not in names]
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be positive integers; got {list(batches)}")
    if repeats < 1 or min_time <= 0:
        raise ValueError("repeats must be >= 1 and min_time > 0")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    if engines and dev.type != "cpu":
        raise ValueError("engines=True benchmarks the CPU engines; use device='cpu'")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)
    plan = _Plan(dev, list(batches), ["infer"] + (["train"] if train else []), size,
                 torch.get_num_threads(), compare or engines, optimize, compile, bf16, engines,
                 repeats, min_time, warmup, memory, log or (lambda _msg: None))
    machine = machine_info(device)
    settings = {"device": device, "threads": plan.threads, "batches": plan.batches,
                "size": size, "repeats": repeats, "min_time": min_time, "warmup": warmup,
                "train": train, "compare": plan.compare, "optimize": optimize,
                "compile": compile, "bf16": bf16, "engines": engines}
    rows: list[BenchRow] = []
    methods: set[str] = set()
    for name in names:
        rows += _bench_model(name, plan, methods)
    if dev.type == "cuda":
        method = "torch.cuda.max_memory_allocated growth during one call"
    elif "VmHWM" in methods:
        method = ("RSS high-water (VmHWM) growth during one call, fresh subprocess per model, "
                  "MALLOC_MMAP_THRESHOLD_=65536")
    elif methods:
        method = "ru_maxrss growth during one call, fresh subprocess per model"
    else:
        method = "not measured"
    return BenchReport(rows, machine, settings, method)


@dataclass
class _Plan:
    """bench()'s settings, as every model's measurement uses them."""

    dev: torch.device
    batches: list[int]
    modes: list[str]
    size: int | None
    threads: int
    compare: bool
    optimize: bool
    compile: bool
    bf16: bool
    engines: bool
    repeats: int
    min_time: float
    warmup: int
    memory: bool
    log: Callable[[str], None]

    @property
    def deploy_budget(self) -> float:
        """deploy()'s own timing of its candidates: its default 3 s, less for smoke settings."""
        return min(3.0, max(0.3, 10 * self.min_time))


def _bench_model(name: str, plan: _Plan, methods: set[str]) -> list[BenchRow]:
    """Every mode and batch of one model: candidates, memory, then the timed points."""
    info = model_info(name)
    s = plan.size or info.input_size[1]
    chans = info.input_size[0]
    g = torch.Generator().manual_seed(0)
    x_max = torch.randn(max(plan.batches), chans, s, s, generator=g).to(plan.dev)
    plan.log(f"{name}: building candidates")
    cands = _candidates(name, x_max, plan.compare, plan.optimize, plan.compile, plan.dev,
                        plan.bf16, plan.engines)
    base = {"model": name, "size": s, "threads": plan.threads, "device": str(plan.dev)}
    stats = {i: (count_params(c.module), _macs(cands[0].module if c.impl.startswith(OURS + "+")
                                               else c.module, chans, s))
             for i, c in enumerate(cands) if c.module is not None}
    mem: dict[str, Any] = {}
    if plan.memory:
        job = {"device": str(plan.dev), "threads": plan.threads, "size": s, "chans": chans,
               "num_classes": info.num_classes,
               "points": [[m, b] for m in plan.modes for b in plan.batches],
               "candidates": {str(i): c.spec for i, c in enumerate(cands)
                              if c.module is not None}}
        plan.log(f"{name}: peak memory (subprocess)")
        try:
            got = _memory_subprocess(job)
            mem = got["results"]
            methods.update(got["methods"])
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            plan.log(f"{name}: {e}")
    rows: list[BenchRow] = []
    cache: dict[str, Any] = {}  # engine builds shared by the batch sizes of one model
    for mode in plan.modes:
        for batch in plan.batches:
            x = x_max[:batch]
            extra = []
            if (plan.engines or plan.compile) and mode == "infer":
                # compile every candidate of this batch size as a fresh process would: dynamo's
                # automatic-dynamic state is keyed by the function's name and line, which every
                # zoo model's forward shares, so a batch size or model compiled earlier would
                # turn this one's shapes symbolic
                torch.compiler.reset()
            if plan.engines and mode == "infer":
                plan.log(f"{name}: batch {batch}, building the engines")
                extra = _engine_candidates(cands, x, plan.threads, plan.bf16, cache,
                                           plan.deploy_budget)
            rows += _bench_point(name, cands + extra, x, mode, info.num_classes, plan, base,
                                 stats, mem)
            del extra
            gc.collect()
    cache.clear()
    return rows


def _bench_point(name: str, cands: list[_Candidate], x: torch.Tensor, mode: str,
                 num_classes: int, plan: _Plan, base: dict[str, Any],
                 stats: dict[int, tuple[int, int | None]], mem: dict[str, Any]
                 ) -> list[BenchRow]:
    """One mode at one batch size: every live candidate timed in interleaved rounds."""
    batch = x.shape[0]
    live = {i: c for i, c in enumerate(cands)
            if c.module is not None and (mode == "infer" or c.train)}
    fns, errors = {}, {}
    for i, c in live.items():
        try:
            fns[i] = _step_fn(c.module, x, mode, num_classes)
        except Exception as e:  # noqa: BLE001
            errors[i] = f"{type(e).__name__}: {e}"
    plan.log(f"{name}: {mode} batch {batch}, {len(fns)} candidate(s)")
    times = _run_all(fns, plan.dev, plan.repeats, plan.min_time, plan.warmup, errors)
    rows = _rows_for(cands, live, times, errors, mode, batch, base, stats, mem)
    for c in live.values():
        c.module.eval()
    return rows


def _run_all(fns: dict[int, Callable[[], None]], dev: torch.device, repeats: int,
             min_time: float, warmup: int, errors: dict[int, str]) -> dict[int, list[list[float]]]:
    """Interleaved timing; a candidate that fails (e.g. train at batch 1 with a 1x1 map) is
    dropped with its error and the others are timed without it."""
    fns = dict(fns)
    while fns:
        try:
            return _interleaved(fns, dev, repeats, min_time, warmup)
        except Exception:  # noqa: BLE001 - find the culprit, keep the others
            dropped = False
            for k in list(fns):
                try:
                    fns[k]()
                except Exception as e:  # noqa: BLE001
                    errors[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                    del fns[k]
                    dropped = True
            if not dropped:
                raise
    return {}


def _rows_for(cands: list[_Candidate], live: dict[int, _Candidate],
              times: dict[int, list[list[float]]], errors: dict[int, str], mode: str, batch: int,
              base: dict[str, Any], stats: dict[int, tuple[int, int | None]],
              mem: dict[str, Any]) -> list[BenchRow]:
    # per round throughput (images/s) of each timed candidate
    tput = {k: [batch * len(calls) / sum(calls) for calls in rounds]
            for k, rounds in times.items()}
    refs_of = {g: [k for k in tput if cands[k].kind == "reference" and cands[k].group == g]
               for g in {c.group for c in cands}}
    plain = {c.group: k for k, c in enumerate(cands) if c.impl == OURS and k in tput}
    rows = []
    for i, c in enumerate(cands):
        if mode == "train" and not c.train:
            continue
        row = BenchRow(impl=c.impl, name=c.name, config=c.config, mode=mode, batch=batch,
                       max_diff=c.max_diff, **base)
        if (c.like if c.like is not None else i) in stats:
            row.params, row.macs = stats[c.like if c.like is not None else i]
        if i not in live:
            row.error = c.error or "unavailable"
        elif i not in tput:
            row.error = errors.get(i, "not timed")
        else:
            t = tput[i]
            row.img_s, row.img_s_min, row.img_s_max = statistics.median(t), min(t), max(t)
            row.img_s_rounds = t
            if batch == 1:
                calls = [v for rnd in times[i] for v in rnd]
                row.lat_p50_ms = 1e3 * _percentile(calls, 0.5)
                row.lat_p90_ms = 1e3 * _percentile(calls, 0.9)
            refs = refs_of.get(c.group, [])
            per_round: list[float] = []
            if c.kind != "reference" and refs:  # ours, optimized or an engine
                # the faster reference over the run, then the per-round ratios against it (a
                # per-round max over the references would pick the luckier one in every round)
                best = max(refs, key=lambda k: statistics.median(tput[k]))
                per_round = [a / b for a, b in zip(t, tput[best], strict=True)]
            elif c.kind == "reference" and c.group in plain:
                per_round = [a / b for a, b in zip(tput[plain[c.group]], t, strict=True)]
            if per_round:
                row.ratio = statistics.median(per_round)
                row.ratio_lo, row.ratio_hi, _ = median_interval(per_round)
        m = mem.get(f"{i}|{mode}|{batch}", mem.get(str(i))) if c.kind != "engine" else None
        if isinstance(m, (int, float)):
            row.peak_mem_mb = float(m)
        rows.append(row)
    return rows
