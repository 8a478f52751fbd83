"""Training and evaluation: ``train()`` (``visionzoo train``), ``evaluate()`` (``visionzoo eval``).

The engine knows no specific model: it builds one by name through ``visionzoo.create_model`` (or
trains a module built that way). ``train`` is a few named steps, read top to bottom: resolve the
run (directory, checkpoint, recipe), open the data, build the model, build the loaders and the
optimization, resume, start the run's files and callbacks, the epoch loop, finish. Its parts
live in modules named for them:

* ``visionzoo.recipes``: the recipe keys, the YAML recipes and their resolution;
* ``visionzoo.optim``: parameter groups, optimizers, learning-rate schedules, EMA;
* ``visionzoo.distributed``: torchrun process groups, cross-rank sums and BatchNorm;
* ``visionzoo.train_state``: the optimizer / EMA / scaler / RNG state inside a checkpoint;
* ``visionzoo.callbacks``: the per-epoch hook and the files written on it (metrics.csv,
  curves.png, TensorBoard); ``visionzoo.progress``: the progress display.

Recipes
-------
Resolution order: ``RECIPE_KEYS`` defaults <- recipe file <- overrides (command-line options or
keyword arguments) <- ``auto`` values filled in from the model and dataset. The resolved
configuration is written to ``<run>/config.yaml`` and into every checkpoint, so a resumed run and
``visionzoo eval`` preprocess exactly as training did.

Precision
---------
``amp: bf16`` runs the forward pass under bfloat16 autocast; ``amp: fp16`` under float16 autocast
with a ``torch.amp.GradScaler`` (its state is part of the checkpoint, so a resumed run continues
with the same loss scale); ``none`` is float32. Both work on CPUs and GPUs. ``channels_last`` and
``compile`` (``torch.compile``) are independent of it.

Reproducibility and resume
--------------------------
Everything random is a function of (seed, position): the epoch permutation and the per-image
augmentation (see ``visionzoo.data.datasets``), the MixUp/CutMix draw of a step, and the global
generator, reseeded at every step for dropout and stochastic depth. A checkpoint stores the
weights with the whole training state (``visionzoo.train_state``), written atomically;
``resume`` then continues to the same final weights as a run never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.callbacks import CurvesPNG, MetricsCSV, TensorBoardLogger, as_callbacks
from visionzoo.data.datasets import (
    DataError,
    DataSource,
    EpochSampler,
    ShardSampler,
    TransformedSplit,
    make_loader,
    mix_seed,
    open_dataset,
)
from visionzoo.distributed import (
    DistInfo,
    all_sum,
    close_distributed,
    convert_sync_bn,
    init_distributed,
    pick_device,
)
from visionzoo.extras import MissingExtraError, MissingExtraWarning, require_pyplot
from visionzoo.optim import ModelEma, build_optimizer, lr_at, lr_scale
from visionzoo.progress import Progress, format_duration
from visionzoo.recipes import RECIPE_KEYS, RecipeError, resolve_config, upgrade_keys
from visionzoo.train_state import (
    checkpoint_position,
    load_train_state,
    remove_stale_temps,
    save_train_state,
)

__all__ = ["EpochTotals", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "autocast",
           "evaluate", "evaluate_loader", "make_scaler", "plot_confusion", "train",
           "train_one_epoch"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: a checkpoint was saved; ``--resume`` continues."""


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``amp`` ("none", "bf16" or "fp16") on ``device``'s type."""
    if amp in (None, "none"):
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise RecipeError(f"amp expects none, bf16 or fp16; got {amp!r}")
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def make_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler | None:
    """float16 training scales the loss so small gradients do not flush to zero; bfloat16 has
    float32's exponent range and needs no scaler."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


# ---------------------------------------------------------------------------------------------
# evaluation of a loader
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: Any, *, num_classes: int,
                    device: torch.device | str = "cpu", amp: str = "none",
                    channels_last: bool = False, info: DistInfo | None = None,
                    progress: Progress | None = None, hflip_tta: bool = False
                    ) -> dict[str, Any]:
    """Top-1, top-5, mean cross-entropy and the confusion matrix (rows: true class) of ``model``
    on ``loader``, summed over ranks. Undecodable images are counted in ``skipped``.
    ``hflip_tta``: the logits are the mean of the image's and its mirror's."""
    info = info or DistInfo()
    device = torch.device(device)
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top-1, top-k, images
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long)
    skipped: list[str] = []
    start = time.monotonic()
    for i, (x, y, sk) in enumerate(loader):
        skipped += [s.path for s in sk]
        if len(y):
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = model(x).float()
                if hflip_tta:
                    logits = (logits + model(x.flip(-1)).float()) / 2
            topk = logits.topk(k, dim=1).indices
            sums += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(),
                                  (topk[:, 0] == y).sum().item(),
                                  (topk == y[:, None]).any(1).sum().item(), len(y)],
                                 dtype=torch.float64)
            confusion += torch.bincount((y * num_classes + topk[:, 0]).cpu(),
                                        minlength=num_classes * num_classes)
        if progress is not None:
            progress.update(i + 1, time.monotonic() - start, "")
    if progress is not None:
        progress.close()
    seconds = time.monotonic() - start
    n_skip = all_sum(torch.tensor([len(skipped)], dtype=torch.float64), info)
    all_sum(sums, info)
    all_sum(confusion, info)
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "top1": sums[1].item() / n, "top5": sums[2].item() / n,
            "images": int(sums[3].item()), "skipped": int(n_skip.item()),
            "skipped_paths": skipped[:20], "seconds": seconds,
            "confusion": confusion.view(num_classes, num_classes)}


# ---------------------------------------------------------------------------------------------
# one epoch of training
# ---------------------------------------------------------------------------------------------


@dataclass
class EpochTotals:
    """Running totals of one epoch (kept in mid-epoch checkpoints, so a resumed epoch reports
    the same numbers)."""

    loss: float = 0.0
    correct: float = 0.0
    images: int = 0
    data_wait: float = 0.0
    time: float = 0.0
    skipped: int = 0
    skipped_paths: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _StopFlag:
    """Ctrl-C / SIGTERM set the flag; the loop stops after the current step (a second Ctrl-C
    interrupts at once)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Stop(Exception):
    def __init__(self, kind: str, detail: str = "", step: int = 0):
        super().__init__(kind)
        self.kind, self.detail, self.step = kind, detail, step


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                optimizer: torch.optim.Optimizer, *, cfg: Mapping[str, Any], gstep: int,
                where: str, device: torch.device, info: DistInfo, mixer: Any,
                scaler: torch.amp.GradScaler | None, params: list[nn.Parameter],
                stop: _StopFlag | None, n_skipped: int) -> torch.Tensor:
    """Forward, loss, backward and the optimizer step of one batch. Returns the step's numbers
    summed over ranks: loss x images, correct, images, skipped, non-finite flag, stop flag.
    Raises ``_Stop("diverged")`` before applying a non-finite loss."""
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if cfg["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    target: torch.Tensor = y
    if mixer is not None and mixer.enabled:
        x, target = mixer(x, y, mix_seed(cfg["seed"], "mix", gstep, info.rank))
    with autocast(device, cfg["amp"]):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg["label_smoothing"])
    hard = y if target.ndim == 1 else target.argmax(1)
    stats = torch.tensor([loss.item() * len(y), (logits.argmax(1) == hard).sum().item(),
                          len(y), n_skipped, float(not math.isfinite(loss.item())),
                          float(stop is not None and stop.requested is not None)],
                         dtype=torch.float64)
    all_sum(stats, info)
    if stats[4] > 0:
        raise _Stop("diverged", f"loss {loss.item()} at {where}")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if cfg["clip_grad"]:
            nn.utils.clip_grad_norm_(params, cfg["clip_grad"])
        optimizer.step()
    else:  # float16: scaled loss; steps with inf/NaN gradients are skipped, the scale lowered
        scaler.scale(loss).backward()
        if cfg["clip_grad"]:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, cfg["clip_grad"])
        scaler.step(optimizer)
        scaler.update()
    return stats


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, *,
                    cfg: Mapping[str, Any], epoch: int, steps: int, start_step: int = 0,
                    totals: EpochTotals | None = None, device: torch.device | str = "cpu",
                    info: DistInfo | None = None, mixer: Any = None, ema: ModelEma | None = None,
                    raw_model: nn.Module | None = None,
                    scaler: torch.amp.GradScaler | None = None, stop: _StopFlag | None = None,
                    progress: Progress | None = None,
                    on_step: Callable[[int, EpochTotals], None] | None = None) -> EpochTotals:
    """Run steps ``start_step .. steps-1`` of ``epoch``. Raises ``_Stop("diverged")`` before
    applying a non-finite loss and ``_Stop("interrupted")`` after the step during which a stop
    was requested; ``on_step(step_done, totals)`` runs after each step (checkpointing)."""
    info = info or DistInfo()
    device = torch.device(device)
    raw_model = raw_model or model
    totals = totals or EpochTotals()
    model.train()
    params = [p for p in raw_model.parameters() if p.requires_grad]
    it: Iterator = iter(loader)
    t_epoch = time.monotonic() - totals.time
    for step in range(start_step, steps):
        t0 = time.monotonic()
        x, y, skipped = next(it)
        totals.data_wait += time.monotonic() - t0
        totals.skipped_paths += [s.path for s in skipped][: max(0, 20 - len(totals.skipped_paths))]
        gstep = epoch * steps + step
        for g in optimizer.param_groups:
            g["lr"] = lr_at(cfg, gstep, steps)
        torch.manual_seed(mix_seed(cfg["seed"], "step", gstep, info.rank))  # dropout, drop-path
        if len(y) == 0 and info.world == 1:  # every image of the batch was undecodable
            totals.skipped += len(skipped)
            continue
        if len(y) == 0:
            raise DataError("a whole per-rank batch was undecodable; distributed steps need "
                            "at least one image per rank")
        stats = _train_step(model, x, y, optimizer, cfg=cfg, gstep=gstep,
                            where=f"epoch {epoch + 1}, step {step + 1}", device=device,
                            info=info, mixer=mixer, scaler=scaler, params=params, stop=stop,
                            n_skipped=len(skipped))
        if ema is not None:
            ema.update(raw_model)
        totals.loss += stats[0].item()
        totals.correct += stats[1].item()
        totals.images += int(stats[2].item())
        totals.skipped += int(stats[3].item())
        totals.time = time.monotonic() - t_epoch
        if progress is not None:
            _show_progress(progress, step + 1, totals)
        if on_step is not None:
            on_step(step + 1, totals)
        if stats[5] > 0:
            raise _Stop("interrupted", step=step + 1)
    totals.time = time.monotonic() - t_epoch
    return totals


def _show_progress(progress: Progress, done: int, totals: EpochTotals) -> None:
    ips = totals.images / max(totals.time, 1e-9)
    wait = totals.data_wait / max(totals.time, 1e-9)
    progress.update(done, totals.time,
                    f"loss {totals.loss / max(totals.images, 1):.4f} "
                    f"acc {totals.correct / max(totals.images, 1):.2%} "
                    f"{ips:.0f} img/s  data {wait:.0%}")


# ---------------------------------------------------------------------------------------------
# a training run: its state and the steps of train()
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What ``train`` returns; ``summary`` is also ``<run_dir>/summary.json``.

    ``final_top1``: the saved weights (the EMA ones with ``ema``) on the evaluation split after
    the last epoch; ``best_top1``: the best epoch of the trained weights; ``history``: one
    metrics dict per epoch (the rows of metrics.csv, see ``visionzoo.callbacks``); ``model``: the
    final weights in memory (the module passed in, trained, or its EMA copy)."""

    run_dir: Path
    status: str
    epochs: int
    final_top1: float | None
    best_top1: float | None
    best_epoch: int | None
    model_path: Path | None
    checkpoint_path: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    final: dict[str, Any] | None = None
    model: nn.Module | None = field(default=None, repr=False)


@dataclass
class _Run:
    """Everything one training run holds, filled in by the steps of ``train`` in order."""

    info: DistInfo
    run_dir: Path
    header: dict[str, Any] | None  # of the checkpoint to resume from
    model_name: str
    data: str | DataSource
    recipe: str
    cfg: dict[str, Any]
    wall_start: float = field(default_factory=time.time)
    source: DataSource | None = None
    classes: list[str] = field(default_factory=list)
    full_cfg: dict[str, Any] = field(default_factory=dict)  # cfg + model, data, recipe
    model: nn.Module | None = None
    train_model: nn.Module | None = None  # DDP / compiled wrapper of model
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: ModelEma | None = None
    mixer: Any = None
    sampler: EpochSampler | None = None
    train_loader: Any = None
    eval_loader: Any = None
    steps: int = 0  # per epoch
    start_epoch: int = 0
    start_step: int = 0
    totals: EpochTotals = field(default_factory=EpochTotals)
    history: list[dict[str, Any]] = field(default_factory=list)
    prior_time: float = 0.0  # wall time of the run before this resume
    callbacks: list[Any] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "last.safetensors"

    @property
    def per_rank(self) -> int:
        return self.cfg["batch_size"] // self.info.world

    def log(self, msg: str) -> None:
        _log(msg, self.info)


def train(model: str | nn.Module | None, data: str | DataSource | None = None, *,
          recipe: str | None = None, out: str | Path | None = None, resume: bool = False,
          callbacks: Any = (), overrides: Mapping[str, Any] | None = None,
          **recipe_overrides: Any) -> TrainResult:
    """Train ``model`` (a registered name, or a module built by ``create_model``, trained in
    place) on ``data`` (a dataset keyword or folder, or a ``DataSource``).

    ``recipe``: a packaged recipe name or YAML file (default ``small_cpu``); keyword arguments
    (or the ``overrides`` mapping) override its keys, e.g. ``epochs=2, amp="bf16"``.
    ``callbacks``: objects with ``on_epoch_end(metrics)`` (and optionally
    ``on_train_end(result)``), or functions, run on rank 0 after each epoch.

    Writes into ``out`` (default ``runs/<model>_<data>``): ``config.yaml`` (resolved recipe),
    ``last.safetensors`` (resume state, each epoch and every ``checkpoint_every`` steps),
    ``model.safetensors`` (final weights, EMA ones when ``ema``), ``metrics.csv``,
    ``summary.json`` and ``curves.png``. ``resume`` continues the run in ``out``. Raises
    ``TrainingDiverged`` on a non-finite loss and ``TrainingInterrupted`` after saving on
    Ctrl-C / SIGTERM. Under ``torchrun`` every rank calls it; only rank 0 writes.
    """
    overrides = {**(overrides or {}), **recipe_overrides}
    info = init_distributed(str(overrides.get("device") or "auto"))
    try:
        run = _resolve_run(model, data, recipe, overrides, out, resume, info)
        given = model if isinstance(model, nn.Module) else None
        _open_data(run, given)
        _build_model(run, given)
        _build_loaders(run)
        _build_optimization(run)
        _resume(run)
        _start_outputs(run, callbacks)
        _epoch_loop(run)
        return _finish(run)
    finally:
        close_distributed(info)


# --- step 1: the run directory, the checkpoint to resume from, the resolved recipe -----------


def _resolve_run(model: str | nn.Module | None, data: str | DataSource | None,
                 recipe: str | None, overrides: Mapping[str, Any], out: str | Path | None,
                 resume: bool, info: DistInfo) -> _Run:
    model_name = _model_name(model)
    if out is None:
        if model_name is None or data is None:
            raise RecipeError("--model and --data are needed (or --out of the run to resume)")
        data_name = data.name if isinstance(data, DataSource) else Path(str(data)).name
        out = _default_out(model_name, data_name, resume)
    run_dir = Path(out)
    header = _resume_header(run_dir / "last.safetensors", resume, info)
    saved = header["extra"]["train_config"] if header else None
    if saved:
        for key, given in (("model", model_name),
                           ("data", None if isinstance(data, DataSource) else data)):
            if given and str(given) != str(saved[key]):
                raise RecipeError(f"{run_dir} is a {key} {saved[key]!r} run; got {given!r}")
        model_name = saved["model"]
        data = data if data is not None else saved["data"]
    if model_name is None or data is None:
        raise RecipeError("--model and --data are needed for a new run")
    base = {k: v for k, v in upgrade_keys(saved).items() if k in RECIPE_KEYS} if saved else None
    if base and recipe and recipe != saved.get("recipe"):
        _log(f"--recipe {recipe} ignored: a resumed run keeps its resolved configuration "
             f"(override single keys instead)", info)
    cfg = resolve_config(recipe or (None if base else "small_cpu"), overrides, base=base)
    if base:
        changed = {k: (base[k], cfg[k]) for k in base if base[k] != cfg[k]}
        if changed:
            _log("resuming with changed settings: " + ", ".join(
                f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()), info)
    if cfg["batch_size"] % info.world:
        raise RecipeError(f"batch_size {cfg['batch_size']} does not split over {info.world} "
                          f"processes")
    return _Run(info=info, run_dir=run_dir, header=header, model_name=model_name, data=data,
                recipe=(saved or {}).get("recipe", recipe or "small_cpu"), cfg=cfg)


def _model_name(model: str | nn.Module | None) -> str | None:
    if not isinstance(model, nn.Module):
        return model
    name = getattr(model, "model_name", None)
    if not name:
        raise RecipeError(f"train() needs a registered model name or a module built by "
                          f"visionzoo.create_model (its checkpoints record the name and "
                          f"configuration); got a {type(model).__name__}")
    return name


def _resume_header(ckpt_path: Path, resume: bool, info: DistInfo) -> dict[str, Any] | None:
    from visionzoo.checkpoint import read_header

    if not ckpt_path.exists():
        if resume:
            _log(f"no checkpoint in {ckpt_path.parent}; starting a new run", info)
        return None
    if not resume:
        raise RecipeError(f"{ckpt_path.parent} already holds a run; pass --resume to continue it "
                          f"or choose another --out")
    header = read_header(ckpt_path)
    if not header or "train_state" not in header.get("extra", {}):
        raise RecipeError(f"{ckpt_path} is not a training checkpoint")
    return header


def _default_out(model_name: str, data_name: str, resume: bool) -> Path:
    base = Path("runs") / f"{model_name}_{data_name}".replace("/", "_")
    if resume or not (base / "last.safetensors").exists():
        if resume:  # the newest numbered run of this model and dataset
            cands = [base] + sorted(base.parent.glob(base.name + "_[0-9]*"),
                                    key=lambda p: int(p.name.rsplit("_", 1)[1]))
            existing = [c for c in cands if (c / "last.safetensors").exists()]
            return existing[-1] if existing else base
        return base
    i = 2
    while (base.parent / f"{base.name}_{i}" / "last.safetensors").exists():
        i += 1
    return base.parent / f"{base.name}_{i}"


def _log(msg: str, info: DistInfo, stream: TextIO | None = None) -> None:
    if info.is_main:
        print(msg, file=stream or sys.stdout, flush=True)


# --- step 2: the dataset ----------------------------------------------------------------------


def _open_data(run: _Run, given: nn.Module | None) -> None:
    cfg = run.cfg
    source = run.data if isinstance(run.data, DataSource) else open_dataset(str(run.data))
    if cfg["in_chans"] == "auto":  # a given module's, 3 for pretrained weights, else the data's
        cfg["in_chans"] = _module_in_chans(given) if given is not None else \
            3 if cfg["pretrained"] else source.channels
    cfg["in_chans"] = int(cfg["in_chans"])
    if source.layout == "imagefolder":
        source.set_mode("L" if cfg["in_chans"] == 1 else "RGB")
    if run.header and run.header["extra"].get("class_names") not in (None, source.classes):
        raise RecipeError(f"{run.ckpt_path} was trained on other classes than {source.name}'s")
    run.source, run.classes = source, source.classes


# --- step 3: the model --------------------------------------------------------------------------


def _build_model(run: _Run, given: nn.Module | None) -> None:
    """Build the network (or take ``given``), fill in the recipe's ``auto`` values from it, and
    record this run's evaluation preprocessing in its ``pretrained_cfg``."""
    cfg, source = run.cfg, run.source
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not cfg["deterministic"]
    if given is None:
        from visionzoo.factory import create_model

        model = create_model(run.model_name, num_classes=len(run.classes),
                             in_chans=cfg["in_chans"], pretrained=cfg["pretrained"] or False,
                             **cfg["model_args"])
    else:
        model = _adopt_module(given, cfg, len(run.classes))
    _fill_auto(cfg, source, model, run.model_name, run.info.world)
    # the checkpoint's pretrained_cfg then describes this run's evaluation preprocessing, so
    # predict and other pretrained_cfg users see the input the network was trained on
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}),
                            "input_size": (cfg["in_chans"], cfg["img_size"], cfg["img_size"]),
                            "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]),
                            "crop_pct": cfg["crop_pct"], "interpolation": cfg["interpolation"]}
    from visionzoo.data.presets import fit_mode

    if fit_mode(cfg, source.native_size) == "pad":  # small images were zero-padded, not resized
        model.pretrained_cfg.update(fit="pad", native_size=int(source.native_size))
    run.model = model
    run.full_cfg = {"model": run.model_name,
                    "data": source.root if isinstance(run.data, DataSource) else str(run.data),
                    "recipe": run.recipe, **cfg}


def _adopt_module(model: nn.Module, cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """A module given to ``train``: check it fits the data, and record its configuration in the
    recipe so that a resume by name rebuilds the same network."""
    config = dict(getattr(model, "model_config", {}) or {})
    if int(getattr(model, "num_classes", num_classes)) != num_classes:
        raise RecipeError(f"the model has {model.num_classes} classes and the data {num_classes}: "
                          f"build it with num_classes={num_classes} (create_model(..., "
                          f"pretrained=...) then loads everything but the classifier)")
    chans = _module_in_chans(model)
    if chans != cfg["in_chans"]:
        raise RecipeError(f"the model takes {chans}-channel input and the run {cfg['in_chans']} "
                          f"(set in_chans={chans}, or build the model for the data)")
    if cfg["pretrained"]:
        raise RecipeError("pretrained applies to a model name; the given module has its weights")
    cfg["model_args"] = {k: v for k, v in config.items() if k not in ("num_classes", "in_chans")}
    # complete, so that the checkpoint's configuration equals a rebuild by name (a ported
    # model's lacks in_chans)
    model.model_config = {"num_classes": num_classes, "in_chans": chans, **cfg["model_args"]}
    return model


def _module_in_chans(model: nn.Module) -> int:
    config = getattr(model, "model_config", None) or {}
    return int(config.get("in_chans", getattr(model, "in_chans", 3)))


def _fill_auto(cfg: dict[str, Any], source: DataSource, model: nn.Module, model_name: str,
               world: int) -> None:
    """Resolve ``auto`` values from the model (input size, mean/std, crop) and the data."""
    from visionzoo.registry import model_info

    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    if cfg["img_size"] == "auto":
        cfg["img_size"] = int(model_info(model_name).input_size[-1])
    if cfg["crop_pct"] == "auto":
        cfg["crop_pct"] = float(pcfg.get("crop_pct", 0.875))
    own_stats = source.stats and not cfg.get("pretrained")  # pretrained: the weights' stats
    for key in ("mean", "std"):
        if cfg[key] == "auto":
            if own_stats and cfg["in_chans"] == source.channels:
                vals = source.stats[key]
            elif own_stats and cfg["in_chans"] == 3 and source.channels == 1:
                vals = source.stats[key] * 3  # the gray channel replicated
            else:
                vals = list(pcfg.get(key, (0.485, 0.456, 0.406) if key == "mean"
                                     else (0.229, 0.224, 0.225)))
                if cfg["in_chans"] == 1 and len(vals) == 3:
                    vals = [round(sum(vals) / 3, 4)]
            cfg[key] = [float(v) for v in vals]
        if len(cfg[key]) != cfg["in_chans"]:
            raise RecipeError(f"{key} has {len(cfg[key])} values for in_chans={cfg['in_chans']}")
    if cfg["workers"] == "auto":
        cfg["workers"] = _auto_workers(world)
    if cfg["eval_batch_size"] == "auto":
        cfg["eval_batch_size"] = max(1, 2 * cfg["batch_size"] // world)


def _auto_workers(world: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 2
    return max(1, min(8, cpus // world - 1))


# --- step 4: loaders, optimizer, scaler, EMA, mixing ------------------------------------------


def _build_loaders(run: _Run) -> None:
    cfg, source, info = run.cfg, run.source, run.info
    train_split = source.split(source.train_split)
    eval_split = source.split(source.eval_split)
    run.sampler = EpochSampler(len(train_split), seed=cfg["seed"], rank=info.rank,
                               world=info.world)
    steps = run.sampler.per_rank // run.per_rank
    if cfg["max_steps_per_epoch"]:
        steps = min(steps, cfg["max_steps_per_epoch"])
    if steps < 1:
        raise RecipeError(f"the training split ({len(train_split)} images) is smaller than one "
                          f"batch of {cfg['batch_size']}")
    run.steps = steps
    if _use_tensor_pipeline(cfg, train_split, source.native_size):
        from visionzoo.data.tensor_pipeline import TensorBatches

        run.train_loader = TensorBatches(train_split, cfg, run.per_rank, sampler=run.sampler,
                                         rank=info.rank, world=info.world)
        run.eval_loader = TensorBatches(eval_split, cfg, cfg["eval_batch_size"], rank=info.rank,
                                        world=info.world)
        return
    from visionzoo.data.presets import eval_transform, train_transform

    native = source.native_size
    train_ds = TransformedSplit(train_split, train_transform(cfg, native, source.channels))
    eval_ds = TransformedSplit(eval_split, eval_transform(cfg, native, source.channels))
    pin = info.device.type == "cuda"
    run.train_loader = make_loader(train_ds, run.sampler, run.per_rank, drop_last=True,
                                   workers=cfg["workers"], pin_memory=pin)
    run.eval_loader = make_loader(eval_ds, ShardSampler(len(eval_split), info.rank, info.world),
                                  cfg["eval_batch_size"], drop_last=False,
                                  workers=cfg["workers"], pin_memory=pin)


def _use_tensor_pipeline(cfg: dict[str, Any], split: Any, native_size: int | None) -> bool:
    """``pipeline: tensor`` (an error where it cannot run), ``auto`` (where it can)."""
    from visionzoo.data.tensor_pipeline import tensor_problem

    if cfg["pipeline"] == "loader":
        return False
    problem = tensor_problem(cfg, split, native_size)
    if problem and cfg["pipeline"] == "tensor":
        raise RecipeError(f"pipeline: tensor cannot run {problem}; use pipeline: loader")
    return problem is None


def _build_optimization(run: _Run) -> None:
    from visionzoo.data.mixing import BatchMixer

    cfg, device = run.cfg, run.info.device
    model = run.model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if cfg["sync_bn"] and run.info.world > 1:
        model = convert_sync_bn(model, device)
    run.model = model
    run.optimizer = build_optimizer(model, cfg)
    run.scaler = make_scaler(device, cfg["amp"])
    run.ema = ModelEma(model, cfg["ema_decay"]) if cfg["ema"] else None
    run.mixer = BatchMixer(len(run.classes), cfg["mixup_alpha"], cfg["cutmix_alpha"],
                           cfg["mix_prob"], cfg["mix_switch_prob"])


# --- step 5: resume ------------------------------------------------------------------------------


def _resume(run: _Run) -> None:
    """Load the checkpoint's state (when resuming), then wrap the model for DDP / compile."""
    if run.header:
        st, ema_found = load_train_state(run.ckpt_path, run.model, run.optimizer, ema=run.ema,
                                         scaler=run.scaler)
        if run.ema is not None and not ema_found:  # EMA switched on at resume
            run.ema = ModelEma(run.model, run.cfg["ema_decay"])
        run.start_epoch, run.start_step = st["epoch"], st["step"]
        run.history = st["history"]
        run.totals = EpochTotals(**st["partial_epoch"]) if run.start_step else EpochTotals()
        run.prior_time = st.get("wall_time_s", 0.0)
        if run.start_step > run.steps:
            raise RecipeError(f"{run.ckpt_path} is at step {run.start_step} of an epoch of "
                              f"{run.steps}: the epoch length changed (batch_size / "
                              f"max_steps_per_epoch)")
        run.log(f"resuming {run.run_dir} at epoch {run.start_epoch + 1}, step {run.start_step} "
                f"(global step {run.start_epoch * run.steps + run.start_step})")
    train_model: nn.Module = run.model
    if run.info.world > 1:
        device = run.info.device
        train_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
    if run.cfg["compile"]:
        train_model = torch.compile(train_model)
    run.train_model = train_model


# --- step 6: run files, callbacks, the opening line -------------------------------------------


def _start_outputs(run: _Run, user_callbacks: Any) -> None:
    cfg, info = run.cfg, run.info
    user = as_callbacks(user_callbacks)
    n_params = sum(p.numel() for p in run.model.parameters())
    if info.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run.run_dir)
        _write_yaml(run.run_dir / "config.yaml", run.full_cfg)
        run.callbacks = [MetricsCSV(run.run_dir / "metrics.csv", run.history),
                         CurvesPNG(run.run_dir / "curves.png",
                                   f"{run.model_name} on {run.source.name}", run.history)]
        if cfg["log"] == "tensorboard":
            run.callbacks.append(TensorBoardLogger(
                run.run_dir / "tensorboard",
                purge_step=run.start_epoch + 1 if run.header else None))
        run.callbacks += user
    source = run.source
    run.summary = {"status": "running", "model": run.model_name, "data": run.full_cfg["data"],
                   "dataset": source.name, "eval_split": source.eval_split,
                   "num_classes": len(run.classes), "params": n_params, "world_size": info.world,
                   "device": str(info.device), "amp": cfg["amp"], "run_dir": str(run.run_dir),
                   "torch": torch.__version__}
    n_train, n_eval = len(source.split(source.train_split)), len(source.split(source.eval_split))
    run.log(f"train {run.model_name} ({n_params / 1e6:.2f} M params, in_chans {cfg['in_chans']}, "
            f"{cfg['img_size']}x{cfg['img_size']}) on {source.name}: {n_train:,} train / "
            f"{n_eval:,} {source.eval_split} images, {len(run.classes)} classes; recipe "
            f"{run.recipe}, {cfg['epochs']} epochs x {run.steps} steps, batch "
            f"{cfg['batch_size']} ({info.world} x {run.per_rank}), {cfg['opt']} lr "
            f"{cfg['lr'] * lr_scale(cfg):g}, amp {cfg['amp']}, {_pipeline_text(run)}, "
            f"device {info.device}; run dir {run.run_dir}")


def _pipeline_text(run: _Run) -> str:
    from visionzoo.data.tensor_pipeline import TensorBatches

    if isinstance(run.train_loader, TensorBatches):
        return "tensor input pipeline"
    return f"{run.cfg['workers']} loader workers"


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None))
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _save_state(run: _Run, epoch: int, step: int, totals: EpochTotals, reason: str) -> None:
    if not run.info.is_main:
        return
    gstep = epoch * run.steps + step
    state = {"epoch": epoch, "step": step, "global_step": gstep, "steps_per_epoch": run.steps,
             "reason": reason,
             "scheduler": {"kind": run.cfg["sched"], "lr": lr_at(run.cfg, gstep, run.steps)},
             "history": run.history, "partial_epoch": totals.as_json(),
             "world_size": run.info.world,
             "wall_time_s": run.prior_time + time.time() - run.wall_start}
    save_train_state(run.ckpt_path, run.model, run.optimizer, ema=run.ema, scaler=run.scaler,
                     state=state, extra={"class_names": run.classes,
                                         "train_config": run.full_cfg})


# --- step 7: the epoch loop ---------------------------------------------------------------------


def _epoch_loop(run: _Run) -> None:
    stop = _StopFlag()
    epoch = run.start_epoch
    with stop:
        try:
            for epoch in range(run.start_epoch, run.cfg["epochs"]):
                _train_epoch(run, epoch, stop)
                row = _evaluate_epoch(run, epoch)
                run.history.append(row)
                run.start_step, run.totals = 0, EpochTotals()
                _save_state(run, epoch + 1, 0, run.totals, "epoch")
                if run.info.is_main:
                    for cb in run.callbacks:
                        cb.on_epoch_end(dict(row))
                run.log(_epoch_line(row, run.cfg["epochs"], run.source.eval_split))
                flag = torch.tensor([float(stop.requested is not None)])
                if all_sum(flag, run.info).item() > 0:  # Ctrl-C during evaluation
                    raise _Stop("interrupted")  # the epoch's checkpoint is already written
        except _Stop as s:
            _stopped(run, s, epoch, stop)


def _train_epoch(run: _Run, epoch: int, stop: _StopFlag) -> None:
    cfg, steps = run.cfg, run.steps
    run.sampler.set_epoch(epoch, skip=run.start_step * run.per_rank)
    progress = Progress(steps, f"epoch {epoch + 1}/{cfg['epochs']}",
                        cfg["progress"] if run.info.is_main else "off")

    def on_step(done: int, totals: EpochTotals) -> None:
        every = cfg["checkpoint_every"]
        if every and (epoch * steps + done) % every == 0 and done < steps:
            _save_state(run, epoch, done, totals, "step")

    try:
        run.totals = train_one_epoch(
            run.train_model, run.train_loader, run.optimizer, cfg=cfg, epoch=epoch, steps=steps,
            start_step=run.start_step, totals=run.totals, device=run.info.device, info=run.info,
            mixer=run.mixer, ema=run.ema, raw_model=run.model, scaler=run.scaler, stop=stop,
            progress=progress, on_step=on_step)
    finally:
        progress.close()


def _evaluate_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """The epoch's row of the history: training totals and the evaluation split's numbers."""
    cfg, totals, steps = run.cfg, run.totals, run.steps
    kw = {"num_classes": len(run.classes), "device": run.info.device, "amp": cfg["amp"],
          "channels_last": cfg["channels_last"], "info": run.info,
          "hflip_tta": cfg["tta_hflip"]}
    val = evaluate_loader(run.model, run.eval_loader, **kw)
    ema_val = evaluate_loader(run.ema.module, run.eval_loader, **kw) if run.ema else None
    n_img = max(totals.images, 1)
    return {"epoch": epoch + 1, "global_step": (epoch + 1) * steps,
            "lr": lr_at(cfg, (epoch + 1) * steps - 1, steps),
            "train_loss": totals.loss / n_img, "train_acc": totals.correct / n_img,
            "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
            "ema_val_top1": ema_val["top1"] if ema_val else None,
            "ema_val_top5": ema_val["top5"] if ema_val else None,
            "ema_val_loss": ema_val["loss"] if ema_val else None,
            "img_per_s": totals.images / max(totals.time, 1e-9),
            "data_wait_s": totals.data_wait,
            "data_wait_frac": totals.data_wait / max(totals.time, 1e-9),
            "skipped": totals.skipped, "val_skipped": val["skipped"],
            "epoch_time_s": totals.time, "skipped_paths": totals.skipped_paths,
            "val_skipped_paths": val["skipped_paths"]}


def _epoch_line(row: Mapping[str, Any], epochs: int, split: str) -> str:
    line = (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.2%}  {split} loss {row['val_loss']:.4f} "
            f"top-1 {row['val_top1']:.2%} top-5 {row['val_top5']:.2%}")
    if row["ema_val_top1"] is not None:
        line += f"  EMA top-1 {row['ema_val_top1']:.2%}"
    line += (f"  lr {row['lr']:.4g}  {row['img_per_s']:.0f} img/s  data wait "
             f"{row['data_wait_s']:.1f}s ({row['data_wait_frac']:.0%})  "
             f"{format_duration(row['epoch_time_s'])}")
    if row["skipped"] or row["val_skipped"]:
        example = (row["skipped_paths"] or row["val_skipped_paths"])[0]
        line += (f"  skipped {row['skipped']} train / {row['val_skipped']} {split} "
                 f"undecodable images (e.g. {example})")
    return line


def _stopped(run: _Run, s: _Stop, epoch: int, stop: _StopFlag) -> None:
    """A non-finite loss or a stop request: write what resumes it, then raise."""
    ckpt = run.ckpt_path
    if s.kind == "diverged":
        _finish_summary(run, "diverged", error=s.detail)
        last = f"{ckpt} ({checkpoint_position(ckpt)})" if ckpt.exists() else \
            "none was written yet"
        hint = "--amp bf16 or none" if run.cfg["amp"] == "fp16" else "--amp none"
        raise TrainingDiverged(
            f"non-finite {s.detail}; stopped without applying it. The last good checkpoint is "
            f"{last}. Lower --lr, set --clip-grad or a warm-up, or try {hint}, then continue "
            f"with --resume.") from None
    if s.step:  # mid-epoch: the partial totals resume with it
        _save_state(run, epoch, s.step, run.totals, "interrupted")
    _finish_summary(run, "interrupted")
    raise TrainingInterrupted(
        f"interrupted ({stop.requested}): checkpoint saved to {ckpt} "
        f"({checkpoint_position(ckpt) if run.info.is_main else ''}); continue with "
        f"--resume --out {run.run_dir}") from None


# --- step 8: the final model, summary and result --------------------------------------------


def _finish_summary(run: _Run, status: str, **more: Any) -> dict[str, Any]:
    history, summary = run.history, run.summary
    summary.update(status=status, epochs_done=len(history),
                   wall_time_s=round(run.prior_time + time.time() - run.wall_start, 2), **more)
    if history:
        best = max(history, key=lambda r: r["val_top1"])
        summary["best"] = {"epoch": best["epoch"], "top1": best["val_top1"]}
        summary["data_wait_s"] = round(sum(r["data_wait_s"] for r in history), 2)
        train_time = sum(r["epoch_time_s"] for r in history)
        summary["data_wait_frac"] = round(summary["data_wait_s"] / max(train_time, 1e-9), 4)
        summary["train_img_per_s"] = round(
            sum(r["img_per_s"] * r["epoch_time_s"] for r in history) / max(train_time, 1e-9), 1)
        summary["skipped_images"] = sum(r["skipped"] for r in history)
    if run.info.is_main:
        _write_json(run.run_dir / "summary.json", summary)
    return summary


def _finish(run: _Run) -> TrainResult:
    from visionzoo.checkpoint import save_checkpoint

    last = run.history[-1] if run.history else None
    final_model = run.ema.module if run.ema is not None else run.model
    weights = "ema" if run.ema is not None else "model"
    final = None
    if last:
        key = "ema_val_" if run.ema is not None else "val_"
        final = {"top1": last[key + "top1"], "top5": last[key + "top5"],
                 "loss": last[key + "loss"], "split": run.source.eval_split, "weights": weights}
    model_path = run.run_dir / "model.safetensors"
    if run.info.is_main:
        save_checkpoint(final_model, model_path,
                        extra={"class_names": run.classes, "train_config": run.full_cfg,
                               "metrics": final, "weights": weights})
    files = {"model": model_path, "checkpoint": run.ckpt_path,
             "config": run.run_dir / "config.yaml", "metrics": run.run_dir / "metrics.csv"}
    if (run.run_dir / "curves.png").is_file():  # not without the [plots] extra
        files["curves"] = run.run_dir / "curves.png"
    summary = _finish_summary(run, "completed", final=final,
                              files={k: str(v) for k, v in files.items()})
    if final:
        run.log(f"done: {run.source.eval_split} top-1 {final['top1']:.2%} top-5 "
                f"{final['top5']:.2%} loss {final['loss']:.4f} ({weights} weights) after "
                f"{len(run.history)} epochs in {format_duration(summary['wall_time_s'])}; data "
                f"wait {summary.get('data_wait_frac', 0):.1%} of training time; "
                f"{summary.get('skipped_images', 0)} undecodable images skipped; files in "
                f"{run.run_dir}")
    best = summary.get("best") or {}
    result = TrainResult(
        run_dir=run.run_dir, status="completed", epochs=len(run.history),
        final_top1=final["top1"] if final else None, best_top1=best.get("top1"),
        best_epoch=best.get("epoch"), model_path=model_path, checkpoint_path=run.ckpt_path,
        history=[dict(r) for r in run.history], summary=summary, final=final, model=final_model)
    if run.info.is_main:
        for cb in run.callbacks:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(result)
    return result


# ---------------------------------------------------------------------------------------------
# evaluate(): a model, checkpoint or weights file on a dataset
# ---------------------------------------------------------------------------------------------


def evaluate(model: nn.Module | str | Path, data: str | DataSource, *,
             model_name: str | None = None, split: str | None = None, batch_size: int = 256,
             workers: int | str = "auto", device: str = "auto", amp: str | None = None,
             out_dir: str | Path | None = None, progress: str = "off") -> dict[str, Any]:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a model on ``data``.

    ``model``: a module built by ``create_model`` (e.g. ``train(...).model``), a visionzoo
    checkpoint (``model.safetensors`` of a run), or a torchvision / timm / efficientnet_pytorch
    weights file (``.pth`` / ``.safetensors``; ``model_name`` says which network). Preprocessing
    is the one the checkpoint was trained with (its ``train_config``), else the model's
    ``pretrained_cfg``. ``amp`` defaults to the training run's. ``split`` defaults to the
    dataset's evaluation split. With ``out_dir``, also writes ``eval_<data>_<split>.json`` and
    a confusion-matrix PNG there (their paths under ``json`` and ``confusion_png``; without
    matplotlib, the ``[plots]`` extra, the PNG is skipped with a MissingExtraWarning and
    ``confusion_png`` is None).
    """
    source = data if isinstance(data, DataSource) else open_dataset(str(data))
    net, trained, names, label = _eval_model(model, model_name, source)
    cfg = _eval_config(net, trained, source, workers, batch_size)
    num_classes = int(getattr(net, "num_classes", len(source.classes)))
    if names is not None and list(names) != list(source.classes):
        raise DataError(f"{label} was trained on classes {names[:5]}... but {source.name} "
                        f"has {source.classes[:5]}...; evaluate on the dataset it was trained on")
    if num_classes != len(source.classes):
        raise DataError(f"{label} has {num_classes} classes, {source.name} has "
                        f"{len(source.classes)}")
    dev = pick_device(device)
    split_name = split or source.eval_split
    ds = TransformedSplit(source.split(split_name), _eval_transform(net, cfg, trained, source))
    loader = make_loader(ds, ShardSampler(len(ds)), batch_size, drop_last=False,
                         workers=int(cfg["workers"]), pin_memory=dev.type == "cuda")
    net.to(dev)
    if cfg.get("channels_last"):
        net.to(memory_format=torch.channels_last)
    bar = Progress(len(loader), f"eval {source.name} {split_name}", progress)
    res = evaluate_loader(net, loader, num_classes=num_classes, device=dev,
                          amp=amp or cfg["amp"], channels_last=bool(cfg.get("channels_last")),
                          progress=bar, hflip_tta=bool(cfg.get("tta_hflip")))
    cm = res["confusion"]
    per_class = (cm.diag().double() / cm.sum(1).clamp_min(1)).tolist()
    result = {"model": getattr(net, "model_name", model_name), "checkpoint": label,
              "data": source.name, "split": split_name, "images": res["images"],
              "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
              "skipped": res["skipped"], "skipped_paths": res["skipped_paths"],
              "amp": amp or cfg["amp"], "device": str(dev),
              "img_per_s": res["images"] / max(res["seconds"], 1e-9),
              "per_class": [{"class": c, "accuracy": a, "images": int(cm[i].sum())}
                            for i, (c, a) in enumerate(zip(source.classes, per_class,
                                                           strict=True))],
              "confusion": cm.tolist()}
    if out_dir is not None:
        _write_eval_files(result, cm, source, Path(out_dir))
    return result


def _eval_model(model: nn.Module | str | Path, model_name: str | None, source: DataSource
                ) -> tuple[nn.Module, dict[str, Any], list[str] | None, str]:
    """The network to evaluate, the recipe it was trained with ({} if unknown), its class names
    (None if unknown) and a label for messages."""
    from visionzoo.checkpoint import CheckpointError, read_header
    from visionzoo.factory import load_checkpoint

    if isinstance(model, nn.Module):
        if model_name and getattr(model, "model_name", model_name) != model_name:
            raise CheckpointError(f"the model is a {model.model_name}, not {model_name}")
        return model, {}, None, getattr(model, "model_name", type(model).__name__)
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    header = read_header(path) if path.suffix == ".safetensors" else None
    if header is not None:  # a visionzoo checkpoint
        if model_name and header["model"] != model_name:
            raise CheckpointError(f"{path} holds a {header['model']} checkpoint, not "
                                  f"{model_name}")
        extra = header.get("extra", {})
        trained = upgrade_keys(extra.get("train_config") or {})
        return load_checkpoint(path), trained, extra.get("class_names"), str(path)
    if not model_name:
        raise CheckpointError(f"{path} is a plain weights file (torchvision / timm / "
                              f"efficientnet_pytorch): name its model (--model)")
    return _load_weights_file(model_name, path, len(source.classes)), {}, None, str(path)


def _load_weights_file(model_name: str, path: Path, num_classes: int) -> nn.Module:
    """A torchvision / timm / efficientnet_pytorch weights file, as ``visionzoo predict
    --weights`` loads it, for a ``num_classes``-class dataset. ``create_model`` gives a
    fine-tuning model a fresh classifier when the file's has another size; evaluating one would
    measure random weights, so that is refused here."""
    from visionzoo.factory import create_model
    from visionzoo.ports import PortError, load_state_file

    net = create_model(model_name, num_classes=num_classes, pretrained=path)
    clf = net.get_classifier() if hasattr(net, "get_classifier") else None
    weight = getattr(clf, "weight", None)
    if weight is not None:
        w = weight.detach().flatten()
        if not any(v.numel() == w.numel() and torch.equal(v.flatten().to(w.dtype), w)
                   for v in load_state_file(path).values()):
            raise PortError(f"{path}: its classifier does not have the {num_classes} outputs of "
                            f"the dataset's classes; evaluate it on the data it was trained for")
    return net


def _eval_config(net: nn.Module, trained: Mapping[str, Any], source: DataSource,
                 workers: int | str, batch_size: int) -> dict[str, Any]:
    """The preprocessing recipe: the training run's, else the model's ``pretrained_cfg``."""
    cfg = {k: copy.deepcopy(s.default) for k, s in RECIPE_KEYS.items()}
    cfg.update({k: v for k, v in trained.items() if k in RECIPE_KEYS})
    cfg["in_chans"] = _module_in_chans(net)
    if source.layout == "imagefolder":
        source.set_mode("L" if cfg["in_chans"] == 1 else "RGB")
    cfg["workers"] = workers if workers != "auto" else cfg.get("workers", "auto")
    cfg["eval_batch_size"] = batch_size
    pcfg = getattr(net, "pretrained_cfg", None) or {}
    if not trained:  # a module, or published / ported weights: what its pretrained_cfg says
        for key in ("mean", "std", "crop_pct", "interpolation", "fit"):
            if key in pcfg:
                cfg[key] = list(pcfg[key]) if key in ("mean", "std") else pcfg[key]
        if "input_size" in pcfg:
            cfg["img_size"] = int(pcfg["input_size"][-1])
    _fill_auto(cfg, source, net, getattr(net, "model_name", ""), 1)
    return cfg


def _eval_transform(net: nn.Module, cfg: Mapping[str, Any], trained: Mapping[str, Any],
                    source: DataSource) -> Callable:
    from visionzoo.data.presets import eval_transform

    pcfg = getattr(net, "pretrained_cfg", None) or {}
    if not trained and source.native_size is None and cfg["in_chans"] == 3 and pcfg:
        from visionzoo.data.transforms import PretrainedEvalTransform

        return PretrainedEvalTransform.from_cfg(pcfg)  # as `visionzoo predict`
    return eval_transform(cfg, source.native_size, source.channels)


def _write_eval_files(result: dict[str, Any], cm: torch.Tensor, source: DataSource,
                      out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{source.name}_{result['split']}".replace("/", "_")
    png = out / f"{stem}_confusion.png"
    try:
        plot_confusion(png, cm, source.classes, f"{result['model']} on {source.name} "
                       f"{result['split']}: top-1 {result['top1']:.2%}")
        result["confusion_png"] = str(png)
    except MissingExtraError as e:  # a by-product: the numbers are in the JSON
        warnings.warn(f"skipped {png.name}: {e}", MissingExtraWarning, stacklevel=3)
        result["confusion_png"] = None
    result["json"] = str(out / f"{stem}.json")
    _write_json(out / f"{stem}.json", result)


def plot_confusion(path: Path, confusion: torch.Tensor, classes: list[str],
                   title: str = "") -> None:
    """Row-normalized confusion matrix (rows: true class, columns: predicted). Raises
    MissingExtraError without matplotlib."""
    plt = require_pyplot("the confusion-matrix plot")

    c = len(classes)
    cm = confusion.double()
    norm = cm / cm.sum(1, keepdim=True).clamp_min(1)
    size = min(4 + 0.5 * c, 20)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if c <= 40:
        ax.set_xticks(range(c), labels=classes, rotation=90 if c > 10 else 45, ha="right")
        ax.set_yticks(range(c), labels=classes)
    if c <= 20:
        for i in range(c):
            for j in range(c):
                v = int(cm[i, j])
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
