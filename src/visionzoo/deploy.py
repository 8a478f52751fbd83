"""Deploy a model on the engines users deploy with: onnxruntime, OpenVINO or torch.compile.

``deploy(model)`` returns a ``Deployed``: a callable that takes an NCHW float32 torch tensor and
returns float32 logits as a torch tensor, computed by one of

* ``"onnxruntime"``: the model exported to ONNX (BN folded first, ``visionzoo.export``'s
  exporter, dynamic batch), run by an ``InferenceSession`` with every graph optimisation on and
  the thread count set;
* ``"openvino"``: the same ONNX file read by OpenVINO and compiled for the CPU with a latency hint
  at batch 1 and a throughput hint above, static shapes (a model is compiled per batch size it
  sees, the deployed one up front), f32 precision for float32 and bf16 where the CPU has it;
* ``"torch"``: PyTorch alone (``visionzoo.optimize``: BN folded, channels_last,
  ``torch.compile`` with freezing on CPU);
* ``"auto"``: every one of them that is installed is built, checked for parity and timed on this
  machine (warm, interleaved rounds, a few seconds), and the fastest is kept; ``.report`` says
  what each measured and why the winner won.

Parity: the deployed logits on the example input must satisfy ``max |deployed - eager| <= atol +
rtol * max |eager|`` with ``FLOAT_TOLERANCE`` (bfloat16: ``BF16_TOLERANCE``). A candidate outside
it is dropped by ``auto`` and raises ``DeployError`` when it was asked for by name.

int8 (``dtype="int8"``, ``calibration=`` images, real ones): onnxruntime's static QDQ quantization
or OpenVINO's post-training quantization (NNCF), both with per-channel weights. Int8 moves logits
by design, so it is judged by top-1 agreement with the float32 model on real photos
(``visionzoo.photos``), reported, and refused below ``min_agreement``.

``Deployed.save(dir)`` writes the artifact (ONNX for onnxruntime, OpenVINO IR for OpenVINO, a
``torch.export`` program for torch) and ``deployed.json``; ``load_deployed(dir)`` rebuilds the
runner without the original model.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["DEFAULT_MIN_AGREEMENT", "RUNTIMES", "CandidateReport", "DeployError", "DeployReport",
           "Deployed", "available_runtimes", "deploy", "load_deployed"]

RUNTIMES = ("onnxruntime", "openvino", "torch")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "int8": "int8"}
# the pip extra that brings each engine (the error names it)
_EXTRA = {"onnxruntime": "onnx", "openvino": "openvino", "torch": ""}
_MODULES = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino",),
            "torch": ()}
# int8 top-1 agreement with float32 below which deploy refuses. Real EfficientNet-Lite0 weights
# on the default photos agree on 87.5 % (both engines); every view they disagree on is one the
# float model itself is unsure of (top-1 probability < 0.4), and on the views it is sure of
# (>= 0.5) they agree on all (benchmarks/results/int8.md).
DEFAULT_MIN_AGREEMENT = 0.85
MANIFEST = "deployed.json"


class DeployError(RuntimeError):
    """A runtime that is missing, fails to build, or leaves the tolerance / agreement threshold."""


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


def available_runtimes() -> list[str]:
    """The runtimes whose Python packages are importable here."""
    import importlib.util

    return [r for r in RUNTIMES if all(importlib.util.find_spec(m) for m in _MODULES[r])]


def _require(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise DeployError(f"unknown runtime {runtime!r}; expected one of auto, "
                          f"{', '.join(RUNTIMES)}")
    if runtime not in available_runtimes():
        raise DeployError(f"runtime {runtime!r} is not installed: pip install "
                          f"'visionzoo[{_EXTRA[runtime]}]'")


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


@dataclass
class CandidateReport:
    """One runtime's build, parity and timing (``status``: ok, dropped, failed, unavailable)."""

    runtime: str
    status: str = "ok"
    max_abs_diff: float | None = None
    tolerance: float | None = None  # atol + rtol * max |eager| on the example input
    agreement: float | None = None  # top-1 agreement with float32 (int8, bf16)
    # the same over the images float32 classifies with probability >= 0.5
    agreement_confident: float | None = None
    ms: float | None = None  # median ms per call at batch_size (auto)
    build_s: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    why: str = ""


@dataclass
class DeployReport:
    """What ``deploy`` built, checked and chose."""

    runtime: str
    dtype: str
    batch_size: int
    threads: int
    input_size: tuple[int, int, int]
    dynamic_batch: bool
    reason: str = ""
    candidates: list[CandidateReport] = field(default_factory=list)

    def candidate(self, runtime: str) -> CandidateReport | None:
        return next((c for c in self.candidates if c.runtime == runtime), None)

    def summary(self) -> str:
        c, h, w = self.input_size
        lines = [f"deployed on {self.runtime} ({self.dtype}, input {c}x{h}x{w}, batch "
                 f"{self.batch_size}{', dynamic' if self.dynamic_batch else ''}, "
                 f"{self.threads} thread(s)): {self.reason}"]
        for cand in self.candidates:
            parts = [f"  {cand.runtime:<12} {cand.status:<11}"]
            if cand.ms is not None:
                parts.append(f"{cand.ms:8.2f} ms/call")
            if cand.max_abs_diff is not None:
                parts.append(f"max |diff| {cand.max_abs_diff:.2e} (tol {cand.tolerance:.1e})")
            if cand.agreement is not None:
                parts.append(f"top-1 agreement {cand.agreement:.1%}")
                if cand.agreement_confident is not None:
                    parts.append(f"({cand.agreement_confident:.1%} where float32 is sure)")
            if cand.why:
                parts.append(cand.why)
            lines.append("  ".join(parts))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# the deployed model
# ---------------------------------------------------------------------------------------------


class Deployed:
    """A model running on one engine: ``deployed(x) -> logits`` (torch tensors, float32)."""

    def __init__(self, runtime: str, runner: _Runner, report: DeployReport,
                 name: str = "", pretrained_cfg: dict[str, Any] | None = None,
                 num_classes: int = 0):
        self.runtime, self._runner, self.report, self.name = runtime, runner, report, name
        # what ``visionzoo.predict`` needs to preprocess images and name classes
        self.pretrained_cfg = dict(pretrained_cfg or {"input_size": report.input_size})
        self.num_classes = int(num_classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.report.input_size

    def check_input(self, x: torch.Tensor) -> None:
        c, h, w = self.input_size
        ok = (isinstance(x, torch.Tensor) and x.ndim == 4 and tuple(x.shape[1:]) == (c, h, w)
              and (self.report.dynamic_batch or x.shape[0] == self.report.batch_size))
        if not ok:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            batch = "N" if self.report.dynamic_batch else str(self.report.batch_size)
            raise ValueError(f"{self.name or 'deployed model'} ({self.runtime}) takes a float "
                             f"tensor of shape ({batch}, {c}, {h}, {w}); got {shape}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._runner(x.detach().to("cpu", torch.float32).contiguous())

    def __repr__(self) -> str:
        return (f"Deployed({self.name or 'model'}, runtime={self.runtime!r}, "
                f"dtype={self.report.dtype!r})")

    def save(self, directory: str | Path) -> Path:
        """Write the artifact and ``deployed.json`` into ``directory`` (created; an existing
        deployment there is replaced only once the new one is completely written)."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise DeployError(f"cannot save into {directory}: it is a file")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".deploy-", dir=directory.parent))
        try:
            artifact = self._runner.save(tmp)
            manifest = {"format": 1, "name": self.name, "runtime": self.runtime,
                        "artifact": artifact, "report": self.report.to_dict(),
                        "config": self._runner.config, "num_classes": self.num_classes,
                        "pretrained_cfg": _jsonable(self.pretrained_cfg)}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if directory.exists():
                old = directory.with_name(directory.name + ".old-deploy")
                shutil.rmtree(old, ignore_errors=True)
                directory.rename(old)
                tmp.rename(directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory


def load_deployed(directory: str | Path) -> Deployed:
    """A ``Deployed`` from ``Deployed.save``'s directory (the runtime must be installed)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise DeployError(f"{directory} holds no deployed model ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text())
        rep = dict(manifest["report"])
        rep["candidates"] = [CandidateReport(**c) for c in rep.get("candidates", [])]
        rep["input_size"] = tuple(rep["input_size"])
        report = DeployReport(**rep)
        runtime, artifact, config = manifest["runtime"], manifest["artifact"], manifest["config"]
    except (ValueError, KeyError, TypeError) as e:
        raise DeployError(f"{path} is not a valid deployment manifest ({_first_line(e)})"
                          ) from None
    _require(runtime)
    file = directory / artifact
    if not file.is_file():
        raise DeployError(f"{directory}: the artifact {artifact} named in {MANIFEST} is missing")
    runner = _RUNNERS[runtime].load(file, config)
    return Deployed(runtime, runner, report, manifest.get("name", ""),
                    manifest.get("pretrained_cfg"), manifest.get("num_classes", 0))


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()
            if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}


# ---------------------------------------------------------------------------------------------
# runners: one per engine, each built from an ONNX file or a module, savable and loadable
# ---------------------------------------------------------------------------------------------


class _Runner:
    config: dict[str, Any]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save(self, directory: Path) -> str:
        raise NotImplementedError


class _OrtRunner(_Runner):
    """An onnxruntime session over the ONNX bytes it keeps (so ``save`` needs no file)."""

    def __init__(self, model: bytes, config: dict[str, Any]):
        import onnxruntime as ort

        self.config, self.model = dict(config), model
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(config["threads"])
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: x.numpy()})
        return torch.from_numpy(out).float()

    def save(self, directory: Path) -> str:
        (directory / "model.onnx").write_bytes(self.model)
        return "model.onnx"

    @classmethod
    def load(cls, path: Path, config: dict[str, Any]) -> _OrtRunner:
        return cls(path.read_bytes(), config)


class _OpenVINORunner(_Runner):
    """An OpenVINO model compiled for the CPU per batch size (static shapes compile to faster
    code than a dynamic batch), the deployed batch size up front."""

    def __init__(self, model: Any, config: dict[str, Any]):
        import openvino as ov

        self.core, self.model, self.config = ov.Core(), model, dict(config)
        self._compiled: dict[int, Any] = {}
        self._request(int(config["batch_size"]))

    def _request(self, batch: int) -> Any:
        req = self._compiled.get(batch)
        if req is None:
            model = self.model.clone()
            if model.input(0).get_partial_shape().is_dynamic:
                c, h, w = self.config["input_size"]
                model.reshape({0: [batch, c, h, w]})
            hint = "LATENCY" if batch == 1 else "THROUGHPUT"
            props = {"PERFORMANCE_HINT": hint,
                     "INFERENCE_NUM_THREADS": int(self.config["threads"]),
                     "NUM_STREAMS": 1}
            precision = self.config.get("precision")
            if precision:
                props["INFERENCE_PRECISION_HINT"] = precision
            compiled = self.core.compile_model(model, "CPU", props)
            req = self._compiled[batch] = compiled.create_infer_request()
        return req

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        req = self._request(x.shape[0])
        req.infer({0: x.numpy()}, share_inputs=True)
        return torch.from_numpy(req.get_output_tensor(0).data.copy()).float()

    def save(self, directory: Path) -> str:
        import openvino as ov

        ov.save_model(self.model, str(directory / "model.xml"), compress_to_fp16=False)
        return "model.xml"

    @classmethod
    def load(cls, path: Path, config: dict[str, Any]) -> _OpenVINORunner:
        import openvino as ov

        return cls(ov.Core().read_model(str(path)), config)


class _TorchRunner(_Runner):
    """``optimize(model, compile=...)`` run under inference mode with the deployed threads.

    ``save`` writes a ``torch.export`` program of the folded model (dynamic batch);
    ``load`` compiles it again."""

    def __init__(self, module: nn.Module, config: dict[str, Any], source: Any = None):
        self.module, self.config, self.source = module, dict(config), source

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        threads, before = int(self.config["threads"]), torch.get_num_threads()
        if threads != before:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return self.module(x).float()
        finally:
            if threads != before:
                torch.set_num_threads(before)

    def save(self, directory: Path) -> str:
        program = self.source
        if isinstance(program, nn.Module):
            c, h, w = self.config["input_size"]
            x = torch.zeros((2, c, h, w))
            try:
                with torch.no_grad():
                    program = torch.export.export(
                        program, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            except Exception as e:  # noqa: BLE001 - one line for the user
                raise DeployError(f"this torch deployment cannot be saved: torch.export "
                                  f"failed ({_first_line(e)})") from None
        torch.export.save(program, str(directory / "model.pt2"))
        return "model.pt2"

    @classmethod
    def load(cls, path: Path, config: dict[str, Any]) -> _TorchRunner:
        program = torch.export.load(str(path))
        module = program.module()
        if config.get("compile"):
            module = torch.compile(module, dynamic=False, options={"freezing": True})
        return cls(module, config, program)


_RUNNERS: dict[str, type] = {"onnxruntime": _OrtRunner, "openvino": _OpenVINORunner,
                             "torch": _TorchRunner}


# ---------------------------------------------------------------------------------------------
# building each candidate
# ---------------------------------------------------------------------------------------------


def _folded(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every conv -> BN pair folded (float64 arithmetic)."""
    from visionzoo.optimize import fold_batchnorm

    out = copy.deepcopy(model).cpu().float().eval()
    fold_batchnorm(out)
    return out


def _export_onnx(model: nn.Module, path: Path, input_size: tuple[int, int, int],
                 batch_size: int) -> bool:
    """The folded model as ONNX with a dynamic batch, or static at ``batch_size`` when the
    dynamic export fails; returns whether the batch is dynamic."""
    import contextlib
    import io
    import logging
    import warnings

    from visionzoo.export import export_onnx

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_log = logging.getLogger("torch")
        level = torch_log.level
        torch_log.setLevel(logging.CRITICAL)  # a failed dynamic attempt logs pages of guards
        try:
            export_onnx(model, path, input_size, dynamic_batch=True)
            return True
        except Exception:  # noqa: BLE001 - fall back to a static batch
            try:
                export_onnx(model, path, input_size, dynamic_batch=False, batch=batch_size)
            except Exception as e:  # noqa: BLE001 - one line for the user
                raise DeployError(f"could not export {_name(model)} to ONNX: "
                                  f"{_first_line(e)}") from None
            return False
        finally:
            torch_log.setLevel(level)


def _name(model: nn.Module) -> str:
    return getattr(model, "model_name", "") or type(model).__name__


def _ov_bf16_capable() -> bool:
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no capability information: assume none
        return False


class _Build:
    """Everything the candidates share: the eager model, the folded copy, its ONNX file."""

    def __init__(self, model: nn.Module, workdir: Path, input_size: tuple[int, int, int],
                 batch_size: int, threads: int, dtype: str):
        self.model, self.workdir = model, workdir
        self.input_size, self.batch_size, self.threads, self.dtype = (
            input_size, batch_size, threads, dtype)
        self._onnx: Path | None = None
        self.dynamic = True
        self._folded: nn.Module | None = None

    @property
    def folded(self) -> nn.Module:
        if self._folded is None:
            self._folded = _folded(self.model)
        return self._folded

    def onnx(self) -> Path:
        if self._onnx is None:
            path = self.workdir / "model.onnx"
            self.dynamic = _export_onnx(self.folded, path, self.input_size, self.batch_size)
            self._onnx = path
        return self._onnx

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"threads": self.threads, "batch_size": self.batch_size,
                "input_size": list(self.input_size), "dtype": self.dtype, **extra}


def _build_onnxruntime(b: _Build, calibration: Any) -> _Runner:
    if b.dtype == "bfloat16":
        raise DeployError("onnxruntime has no bfloat16 CPU kernels for these models")
    path = b.onnx()
    if b.dtype == "int8":
        path = _ort_quantize(path, b, calibration)
        return _OrtRunner(path.read_bytes(), b.config(
            quantization="QDQ, per-channel int8 weights, uint8 activations, MinMax "
                         "calibration"))
    return _OrtRunner(path.read_bytes(), b.config())


def _build_openvino(b: _Build, calibration: Any) -> _Runner:
    import openvino as ov

    model = ov.Core().read_model(str(b.onnx()))
    precision = "f32"
    if b.dtype == "bfloat16":
        if not _ov_bf16_capable():
            raise DeployError("this CPU has no bf16 units OpenVINO can use")
        precision = "bf16"
    extra: dict[str, Any] = {"precision": precision}
    if b.dtype == "int8":
        model = _ov_quantize(model, b, calibration)
        extra["quantization"] = "NNCF post-training, per-channel int8 weights"
    return _OpenVINORunner(model, b.config(**extra))


def _build_torch(b: _Build, calibration: Any, compile: bool = True) -> _Runner:
    from visionzoo.optimize import optimize

    if b.dtype == "int8":
        raise DeployError("int8 runs on onnxruntime or OpenVINO (runtime='onnxruntime' or "
                          "'openvino'); the torch runtime computes in float32 or bfloat16")
    dtype = torch.bfloat16 if b.dtype == "bfloat16" else None
    module = optimize(b.model, compile=compile, dtype=dtype, check=False)
    # what ``save`` exports: the same steps without the channels_last input hook
    plain = optimize(b.model, channels_last=False, dtype=dtype, check=False)
    return _TorchRunner(module, b.config(compile=compile), plain)


_BUILDERS: dict[str, Callable[..., _Runner]] = {
    "onnxruntime": _build_onnxruntime, "openvino": _build_openvino, "torch": _build_torch}


# ---------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------


def _calibration_batches(calibration: Any, input_size: tuple[int, int, int]
                         ) -> list[torch.Tensor]:
    if calibration is None:
        raise DeployError("dtype='int8' needs calibration images: calibration=<(N, C, H, W) "
                          "tensor or batches> (real images, preprocessed as for the model)")
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    out = []
    for t in batches:
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or tuple(t.shape[1:]) != input_size:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise DeployError(f"calibration images must be tensors of shape (N, "
                              f"{', '.join(map(str, input_size))}); got {shape}")
        out += list(t.float().split(1))
    if not out:
        raise DeployError("calibration holds no images")
    return out


def _ort_quantize(path: Path, b: _Build, calibration: Any) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = _calibration_batches(calibration, b.input_size)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            x = next(self.it, None)
            return None if x is None else {"input": x.numpy()}

    pre = b.workdir / "model.pre.onnx"
    quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
    out = b.workdir / "model.int8.onnx"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return out


def _ov_quantize(model: Any, b: _Build, calibration: Any) -> Any:
    try:
        import nncf
    except ImportError:
        raise DeployError("int8 on OpenVINO needs NNCF: pip install 'visionzoo[openvino]'"
                          ) from None
    images = _calibration_batches(calibration, b.input_size)
    dataset = nncf.Dataset(images, lambda x: x.numpy())
    return nncf.quantize(model, dataset, subset_size=len(images))


def _agreement_images(model: nn.Module, input_size: tuple[int, int, int],
                      images: torch.Tensor | None) -> torch.Tensor:
    if images is not None:
        return images.float()
    from visionzoo.photos import real_photos

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    kw = {k: cfg[k] for k in ("mean", "std", "crop_pct") if k in cfg}
    return real_photos(input_size, **kw, views=8, seed=2)


# ---------------------------------------------------------------------------------------------
# checking and timing
# ---------------------------------------------------------------------------------------------


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x).float()


def _check_parity(cand: CandidateReport, runner: _Runner, ref: torch.Tensor, x: torch.Tensor,
                  dtype: str) -> bool:
    from visionzoo.optimize import BF16_TOLERANCE, FLOAT_TOLERANCE

    atol, rtol = BF16_TOLERANCE if dtype == "bfloat16" else FLOAT_TOLERANCE
    got = runner(x)
    if got.shape != ref.shape:
        cand.why = f"output shape {tuple(got.shape)}, eager {tuple(ref.shape)}"
        return False
    cand.max_abs_diff = float((got - ref).abs().max())
    cand.tolerance = atol + rtol * float(ref.abs().max())
    if not cand.max_abs_diff <= cand.tolerance:  # NaN fails too
        cand.why = f"logits leave the tolerance (atol={atol:g}, rtol={rtol:g})"
        return False
    return True


def _check_agreement(cand: CandidateReport, runner: _Runner, model: nn.Module,
                     images: torch.Tensor, min_agreement: float, batch: int,
                     dynamic: bool) -> bool:
    from visionzoo.photos import agreement

    def run(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if dynamic or n == batch:
            return runner(x.contiguous())
        # a static-batch artifact takes exactly ``batch`` images: pad the last chunk
        pad = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])])
        return runner(pad.contiguous())[:n]

    rep = agreement(model, run, images, batch_size=batch)
    cand.agreement = rep["top1"]
    if rep["n_confident"]:
        cand.agreement_confident = rep["top1_confident"]
    if cand.agreement < min_agreement:
        cand.why = (f"top-1 agreement with float32 {cand.agreement:.1%} < min_agreement "
                    f"{min_agreement:.1%} on {len(images)} real photo views")
        return False
    return True


def _time(runners: dict[str, _Runner], x: torch.Tensor, budget_s: float = 3.0,
          rounds: int = 7) -> dict[str, float]:
    """Median ms per call of each runner: warm, then interleaved rounds (the order rotating) of
    about ``budget_s / rounds / len(runners)`` seconds each."""
    names = list(runners)
    if len(names) == 1:
        return {names[0]: float("nan")}
    calls: dict[str, int] = {}
    for n in names:  # warm up and size the rounds
        runners[n](x)
        t0, k = time.perf_counter(), 0
        while k < 3 or time.perf_counter() - t0 < 0.1:
            runners[n](x)
            k += 1
        per = (time.perf_counter() - t0) / k
        calls[n] = max(1, int(budget_s / rounds / len(names) / per))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(calls[n]):
                runners[n](x)
            times[n].append((time.perf_counter() - t0) / calls[n] * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


# ---------------------------------------------------------------------------------------------
# deploy
# ---------------------------------------------------------------------------------------------


def _input_size(model: nn.Module, example_input: torch.Tensor | None,
                input_size: Sequence[int] | None) -> tuple[int, int, int]:
    if example_input is not None:
        if example_input.ndim != 4:
            raise DeployError(f"example_input must be (N, C, H, W); got "
                              f"{tuple(example_input.shape)}")
        return tuple(int(v) for v in example_input.shape[1:])
    size = input_size or (getattr(model, "pretrained_cfg", {}) or {}).get("input_size",
                                                                          (3, 224, 224))
    if len(size) != 3:
        raise DeployError(f"input_size is (C, H, W); got {tuple(size)}")
    return tuple(int(v) for v in size)


def deploy(model: nn.Module, runtime: str = "auto", *, batch_size: int = 1,
           dtype: str = "float32", threads: int | None = None,
           example_input: torch.Tensor | None = None, check: bool = True,
           calibration: torch.Tensor | Iterable[torch.Tensor] | None = None,
           min_agreement: float = DEFAULT_MIN_AGREEMENT,
           agreement_images: torch.Tensor | None = None,
           input_size: Sequence[int] | None = None, time_budget_s: float = 3.0) -> Deployed:
    """Deploy ``model`` (an ``nn.Module`` taking NCHW images) on ``runtime``.

    ``runtime``: "onnxruntime", "openvino", "torch" or "auto" (each installed one is built,
    checked and timed; the fastest is kept). ``batch_size`` is the batch the engines are tuned
    and timed for (the ONNX graph keeps a dynamic batch where it exports so). ``dtype``:
    "float32", "bfloat16" (OpenVINO / torch, on CPUs with bf16 units) or "int8" (onnxruntime /
    OpenVINO, needs ``calibration`` images; judged by top-1 agreement with float32 on
    ``agreement_images``, by default ``skimage.data`` photos, and refused below
    ``min_agreement``). ``threads``: intra-op threads (default ``torch.get_num_threads()``).
    ``example_input`` (default: seeded random at the model's ``pretrained_cfg`` input size)
    is what parity is checked on; ``check=False`` skips the check (not for int8).
    """
    runtime = runtime.lower()
    if dtype not in DTYPES:
        raise DeployError(f"unknown dtype {dtype!r}; expected float32, bfloat16 or int8")
    dtype = DTYPES[dtype]
    if batch_size < 1:
        raise DeployError(f"batch_size must be >= 1; got {batch_size}")
    if runtime == "auto":
        names = [r for r in available_runtimes() if not (dtype == "int8" and r == "torch")]
        if not names:
            raise DeployError("no runtime is installed for auto: pip install "
                              "'visionzoo[onnx]' or 'visionzoo[openvino]'")
    else:
        _require(runtime)
        names = [runtime]
    threads = int(threads or torch.get_num_threads())
    size = _input_size(model, example_input, input_size)
    was_training = model.training
    model.eval()
    try:
        return _deploy(model, runtime, names, size, batch_size, dtype, threads, example_input,
                       check, calibration, min_agreement, agreement_images, time_budget_s)
    finally:
        model.train(was_training)


def _deploy(model: nn.Module, runtime: str, names: list[str], size: tuple[int, int, int],
            batch_size: int, dtype: str, threads: int, example_input: torch.Tensor | None,
            check: bool, calibration: Any, min_agreement: float,
            agreement_images: torch.Tensor | None, time_budget_s: float) -> Deployed:
    x = example_input
    if x is None:
        x = torch.randn((batch_size, *size), generator=torch.Generator().manual_seed(0))
    x = x.detach().to("cpu", torch.float32).contiguous()
    explicit = runtime != "auto"
    with tempfile.TemporaryDirectory(prefix="visionzoo-deploy-") as tmp:
        build = _Build(model, Path(tmp), size, batch_size, threads, dtype)
        ref = _eager(model, x)
        photos = (_agreement_images(model, size, agreement_images)
                  if dtype in ("int8", "bfloat16") else None)
        cands, runners = _build_all(build, names, calibration, explicit)
        for name, cand in cands.items():
            runner = runners.get(name)
            if runner is None:
                continue
            ok = True
            judge = functools.partial(_check_agreement, cand, runner, model, photos,
                                      batch=batch_size, dynamic=build.dynamic)
            if dtype == "int8":
                ok = judge(min_agreement)
            elif check:
                ok = _check_parity(cand, runner, ref, x, dtype)
                if photos is not None and ok:
                    judge(0.0)
            if not ok:
                cand.status = "dropped"
                runners.pop(name)
                if explicit:
                    raise DeployError(f"{_name(model)} on {name} ({dtype}): {cand.why}")
        if not runners:
            why = "; ".join(f"{c.runtime}: {c.why}" for c in cands.values())
            raise DeployError(f"no runtime passed for {_name(model)} ({dtype}): {why}")
        chosen, reason = _choose(cands, runners, x, time_budget_s, explicit)
        report = DeployReport(chosen, dtype, batch_size, threads, size, build.dynamic,
                              reason, list(cands.values()))
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg["input_size"] = size
    return Deployed(chosen, runners[chosen], report, _name(model), cfg,
                    int(getattr(model, "num_classes", 0) or 0))


def _build_all(build: _Build, names: list[str], calibration: Any, explicit: bool
               ) -> tuple[dict[str, CandidateReport], dict[str, _Runner]]:
    cands: dict[str, CandidateReport] = {}
    runners: dict[str, _Runner] = {}
    for name in names:
        cand = cands[name] = CandidateReport(name)
        t0 = time.perf_counter()
        try:
            runners[name] = _BUILDERS[name](build, calibration)
            cand.config = {k: v for k, v in runners[name].config.items()
                           if k not in ("input_size",)}
        except DeployError as e:
            cand.status, cand.why = "failed", str(e)
            if explicit:
                raise
        except Exception as e:  # noqa: BLE001 - an engine that cannot take this model
            cand.status, cand.why = "failed", _first_line(e)
            if explicit:
                raise DeployError(f"{_name(build.model)} on {name}: {cand.why}") from None
        cand.build_s = round(time.perf_counter() - t0, 2)
    return cands, runners


def _choose(cands: dict[str, CandidateReport], runners: dict[str, _Runner], x: torch.Tensor,
            budget_s: float, explicit: bool) -> tuple[str, str]:
    if explicit or len(runners) == 1:
        (name,) = runners
        return name, "asked for" if explicit else "the only candidate that passed"
    ms = _time(runners, x, budget_s)
    for name, v in ms.items():
        cands[name].ms = round(v, 4)
    order = sorted(ms, key=ms.get)
    best, second = order[0], order[1]
    return best, (f"fastest at batch {x.shape[0]}: {ms[best]:.2f} ms/call, "
                  f"{ms[second] / ms[best]:.2f}x {second}")
