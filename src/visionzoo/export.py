"""Export to deployment formats, each with a parity check against the PyTorch model.

ONNX goes through ``torch.onnx.export`` (the torch.export-based exporter): the model is traced at
one input size (optionally with a symbolic batch dimension) and checked in onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from visionzoo.extras import MissingExtraError

__all__ = ["EXPORT_FORMATS", "PARITY_TOLERANCE", "ExportError", "ExportResult", "MatrixCell",
           "MatrixRow", "MissingExtraError", "export_matrix_row", "export_model", "export_onnx",
           "export_program", "export_torchscript", "format_matrix", "load_exported",
           "onnx_max_abs_diff", "parity"]

DEFAULT_OPSET = 18


def _example_input(model: nn.Module, input_size: Sequence[int] | None, batch: int = 1
                   ) -> torch.Tensor:
    size = tuple(input_size or getattr(model, "pretrained_cfg", {}).get("input_size",
                                                                          (3, 224, 224)))
    if len(size) != 3:
        raise ValueError(f"input_size is (C, H, W); got {size}")
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *size), generator=g).to(device)




def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m)
               is None]
    if missing:
        raise MissingExtraError(f"ONNX export needs {', '.join(missing)}: pip install "
                                f"'visionzoo[onnx]'")


def export_onnx(model: nn.Module, path: str | Path, input_size: Sequence[int] | None = None,
                dynamic_batch: bool = False, *, opset: int = DEFAULT_OPSET,
                batch: int = 1) -> Path:
    """Write ``model`` (in eval mode) as one self-contained ONNX file; returns its path.

    ``input_size`` is (C, H, W), by default the model's ``pretrained_cfg`` size; the graph is
    specialised to that H x W. ``dynamic_batch`` makes the batch dimension symbolic (named
    "batch"); otherwise it is ``batch``. Needs the ``[onnx]`` extra (onnx, onnxscript).
    """
    _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # batch 2 when the batch is symbolic, so the exporter cannot specialise it to 1
    x = _example_input(model, input_size, batch=2 if dynamic_batch else batch)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (x,), dynamo=True, input_names=["input"], output_names=["output"],
                opset_version=opset, dynamic_shapes=dynamic_shapes, external_data=False)
        program.save(str(path), external_data=False)
    finally:
        model.train(was_training)
    return path


def onnx_max_abs_diff(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max |PyTorch - onnxruntime| of the outputs for input ``x`` (the parity check)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (out,) = session.run(None, {name: x.detach().cpu().numpy()})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        model.train(was_training)
    return float((torch.from_numpy(out) - ref.detach().cpu()).abs().max())


# ---------------------------------------------------------------------------------------------
# TorchScript, torch.export, one entry point with a parity check, and the export matrix
# ---------------------------------------------------------------------------------------------
#
# Parity: the exported artifact is loaded back (onnxruntime for ONNX, torch.jit.load,
# torch.export.load) and run on seeded random input; its outputs must satisfy
# max |exported - eager| <= atol + rtol * max |eager| (PARITY_TOLERANCE, float32): relative to
# the scale of the logits, since an element near zero among logits of 1e5 (an untrained
# DenseNet) carries the rounding error of its neighbours' magnitude. With
# ``dynamic_batch`` the check runs at two batch sizes other than the traced one (1 and 3), so a
# batch dimension baked into a reshape shows up as a failure, not as a silent wrong answer.

EXPORT_FORMATS = ("onnx", "torchscript", "exported")
EXPORT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported": ".pt2"}
PARITY_TOLERANCE = (1e-4, 1e-4)  # atol, rtol


class ExportError(RuntimeError):
    """An export that fails, or whose artifact does not reproduce the model's outputs."""


@dataclass
class ExportResult:
    model: str
    format: str
    path: Path
    input_size: tuple[int, int, int]
    dynamic_batch: bool
    batches: tuple[int, ...]  # the batch sizes the parity check ran
    max_abs_diff: float
    passed: bool
    seconds: float  # export + load + parity

    def summary(self) -> str:
        c, h, w = self.input_size
        atol, rtol = PARITY_TOLERANCE
        verdict = "ok" if self.passed else "FAILED"
        return (f"exported {self.model} to {self.path} ({self.format}, input {c}x{h}x{w}, "
                f"{'dynamic' if self.dynamic_batch else 'static'} batch) in {self.seconds:.1f} s; "
                f"parity vs PyTorch at batch {', '.join(map(str, self.batches))}: max |diff| "
                f"{self.max_abs_diff:.2e} (tolerance atol={atol:g}, rtol={rtol:g}): {verdict}")


def export_torchscript(model: nn.Module, path: str | Path,
                       input_size: Sequence[int] | None = None,
                       dynamic_batch: bool = False) -> Path:
    """``torch.jit.trace`` (deprecated upstream, still what many runtimes load) -> ``path``.

    Tracing records tensor ops only; Python control flow is frozen at the traced input, which is
    why the parity check also runs at other batch sizes when ``dynamic_batch`` is asked for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _example_input(model, input_size, batch=2 if dynamic_batch else 1)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit deprecation and TracerWarnings (input checks)
            with torch.no_grad():
                traced = torch.jit.trace(model, (x,), check_trace=False)
            torch.jit.save(traced, str(path))
    finally:
        model.train(was_training)
    return path


def export_program(model: nn.Module, path: str | Path, input_size: Sequence[int] | None = None,
                   dynamic_batch: bool = False) -> Path:
    """``torch.export.export`` -> ``torch.export.save`` (a .pt2 ExportedProgram) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _example_input(model, input_size, batch=2 if dynamic_batch else 1)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
        torch.export.save(program, str(path))
    finally:
        model.train(was_training)
    return path


def load_exported(path: str | Path, format: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running the artifact at ``path`` (float32 CPU tensors in and out)."""
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            (out,) = session.run(None, {name: x.detach().cpu().numpy()})
            return torch.from_numpy(out)

        return run_onnx
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
    elif format == "exported":
        module = torch.export.load(str(path)).module()
    else:
        raise ValueError(f"unknown export format {format!r}; expected one of "
                         f"{', '.join(EXPORT_FORMATS)}")

    def run_torch(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run_torch


def parity(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor],
           input_size: Sequence[int], batches: Sequence[int]) -> tuple[float, bool]:
    """Max |exported - eager| over seeded inputs at each batch size, and whether it is within
    ``PARITY_TOLERANCE``."""
    atol, rtol = PARITY_TOLERANCE
    worst, ok = 0.0, True
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            x = torch.randn((b, *input_size), generator=torch.Generator().manual_seed(b))
            with torch.no_grad():
                ref = model(x).float().cpu()
            got = run(x).float()
            if got.shape != ref.shape:
                raise ExportError(f"exported output has shape {tuple(got.shape)} at batch {b}, "
                                  f"PyTorch gives {tuple(ref.shape)}")
            diff = float((got - ref).abs().max())
            worst = max(worst, diff)
            ok = ok and diff <= atol + rtol * float(ref.abs().max())
    finally:
        model.train(was_training)
    return worst, ok


def export_model(model: nn.Module, path: str | Path, format: str = "onnx",
                 input_size: Sequence[int] | None = None, dynamic_batch: bool = False,
                 check: bool = True) -> ExportResult:
    """Export ``model`` (CPU, float32) as ``format`` and check parity (see ``PARITY_TOLERANCE``).

    Failures of the exporter itself propagate; a parity failure is reported in the result
    (``passed=False``), so a caller can show the numbers before deciding.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    size = tuple(int(v) for v in (input_size or getattr(model, "pretrained_cfg", {}).get(
        "input_size", (3, 224, 224))))
    if len(size) != 3:
        raise ValueError(f"input_size is (C, H, W); got {size}")
    model = model.cpu().float()
    t0 = time.perf_counter()
    if format == "onnx":
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            path = export_onnx(model, path, size, dynamic_batch)
    elif format == "torchscript":
        path = export_torchscript(model, path, size, dynamic_batch)
    else:
        path = export_program(model, path, size, dynamic_batch)
    batches = (1, 3) if dynamic_batch else (1,)
    diff, ok = (parity(model, load_exported(path, format), size, batches) if check
                else (float("nan"), True))
    name = getattr(model, "model_name", "") or type(model).__name__
    return ExportResult(name, format, Path(path), size, dynamic_batch, batches, diff, ok,
                        time.perf_counter() - t0)


@dataclass
class MatrixCell:
    format: str
    status: str  # "ok" (dynamic batch), "static" (static batch only), "parity", "fails"
    max_abs_diff: float | None = None
    why: str = ""  # first line of the error, for "static", "parity" and "fails"


@dataclass
class MatrixRow:
    model: str
    input_size: tuple[int, int, int]
    cells: list[MatrixCell] = field(default_factory=list)


def _why(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:160]


def export_matrix_row(name: str, formats: Sequence[str] = EXPORT_FORMATS,
                      size: int | None = None, workdir: str | Path | None = None) -> MatrixRow:
    """Try every format for one registered model: dynamic batch first, static if that fails.

    Random (seeded, ``randomize_weights_``) weights: export does not depend on their values.
    """
    import tempfile

    from visionzoo.factory import create_model
    from visionzoo.registry import model_info

    info = model_info(name)
    input_size = (info.input_size[0], size, size) if size else tuple(info.input_size)
    from visionzoo.layers import randomize_weights_

    model = randomize_weights_(create_model(name)).eval()
    row = MatrixRow(name, input_size)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for fmt in formats:
            path = Path(tmp) / f"{name}{EXPORT_SUFFIX[fmt]}"
            try:
                res = export_model(model, path, fmt, input_size, dynamic_batch=True)
                cell = MatrixCell(fmt, "ok" if res.passed else "parity", res.max_abs_diff)
                if not res.passed:
                    cell.why = f"max |diff| {res.max_abs_diff:.2e} beyond tolerance"
            except Exception as dyn_err:  # noqa: BLE001 - every failure is a matrix entry
                try:
                    res = export_model(model, path, fmt, input_size, dynamic_batch=False)
                    cell = MatrixCell(fmt, "static" if res.passed else "parity",
                                      res.max_abs_diff, f"dynamic batch: {_why(dyn_err)}")
                except Exception as e:  # noqa: BLE001
                    cell = MatrixCell(fmt, "fails", None, _why(e))
            row.cells.append(cell)
    return row


def format_matrix(rows: Sequence[MatrixRow], header_note: str = "") -> str:
    """The export matrix as a Markdown table (the README block)."""
    formats = list(dict.fromkeys(c.format for r in rows for c in r.cells)) or list(EXPORT_FORMATS)
    label = {"onnx": "ONNX (onnxruntime)", "torchscript": "TorchScript (trace)",
             "exported": "torch.export (.pt2)"}
    mark = {"ok": "yes", "static": "static batch", "parity": "PARITY FAIL", "fails": "no"}
    atol, rtol = PARITY_TOLERANCE
    lines = []
    if header_note:
        lines += [header_note, ""]
    lines += ["| model | input | " + " | ".join(label.get(f, f) for f in formats) + " |",
              "|---|---|" + "---|" * len(formats)]
    notes: list[str] = []
    for r in rows:
        cells = []
        for c in r.cells:
            text = mark[c.status]
            if c.max_abs_diff is not None:
                text += f" ({c.max_abs_diff:.0e})"
            if c.why:
                notes.append(f"{r.model} / {c.format}: {c.why}")
                text += f" [{len(notes)}]"
            cells.append(text)
        lines.append(f"| {r.model} | {'x'.join(map(str, r.input_size[1:]))} | "
                     + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    lines += ["", f"\"yes\": exports with a dynamic batch dimension and the reloaded artifact "
              f"matches PyTorch at batch 1 and 3 (max |diff| <= {atol:g} + {rtol:g} x max "
              f"|PyTorch|; the number is the max |diff|; weights random, fan-in scaled); "
              f"\"static batch\": only a fixed batch of 1 exports or matches; \"no\": export "
              f"fails."]
    if notes:
        lines += [""] + [f"[{i}] {n.replace('|', '/')}  " for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"
