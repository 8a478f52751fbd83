"""Training and evaluation: recipes, optimizers, schedules, EMA, bf16, DDP, checkpoints and resume.

The engine knows no specific model: it builds one by name through ``visionzoo.create_model``.
Everything is a plain function; ``visionzoo train`` / ``visionzoo eval`` only parse and call
``train()`` / ``evaluate_checkpoint()``.

Recipes
-------
A recipe is a YAML file of keys from ``RECIPE_KEYS`` (the packaged ones live in
``visionzoo/recipes``; ``list_recipes()`` names them). Resolution order: ``RECIPE_KEYS`` defaults
<- recipe file <- command-line overrides <- ``auto`` values filled in from the model and dataset.
The resolved configuration is written to ``<run>/config.yaml`` and into every checkpoint, so a
resumed run and ``visionzoo eval`` preprocess exactly as training did.

``lr`` is for a global batch of ``lr_base_batch`` images when that is set; the run uses
``lr * batch_size / lr_base_batch`` (the linear scaling rule of Goyal et al., arXiv 1706.02677),
and ``warmup_lr``/``min_lr`` scale the same way. Papers' recipes state their batch, so a
CPU-sized batch keeps their schedule.

Optimization
------------
SGD (optionally Nesterov), AdamW, PyTorch's RMSprop, and ``rmsprop_tf``: RMSprop as TensorFlow's
``RMSPropOptimizer`` that the Inception-v3 / MobileNet / EfficientNet papers trained with (square
average starts at 1, epsilon inside the square root, learning rate inside the momentum).
Weight decay skips one-dimensional parameters (norm scales and shifts, biases) and the names a
model lists in ``no_weight_decay()``, unless ``decay_norm_bias``. The learning rate follows a
per-step schedule: linear warm-up from ``warmup_lr``, then cosine to ``min_lr``, ``multistep``
(times ``decay_rate`` at each of ``milestones`` epochs), ``step`` (times ``decay_rate`` every
``decay_epochs``, staircase) or ``constant``.

Reproducibility and resume
--------------------------
Everything random is a function of (seed, position): the epoch permutation and the per-image
augmentation (see ``visionzoo.data.datasets``), the MixUp/CutMix draw of a step, and the global
generator, reseeded at every step for dropout and stochastic depth. A checkpoint stores the
weights, optimizer state, EMA weights and RNG states as safetensors tensors and the rest (epoch,
step, schedule position, metric history, partial-epoch totals, resolved config) as JSON, written
atomically; ``--resume`` then continues to the same final weights as a run never interrupted.

Distributed
-----------
Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group uses NCCL on GPUs and gloo on CPUs;
``batch_size`` is the global batch, split evenly over ranks; metrics are summed over ranks; only
rank 0 writes files (every rank reads the checkpoint on ``--resume``: across machines, ``--out``
must be on a shared filesystem). ``sync_bn`` computes BatchNorm statistics over the global
batch (PyTorch's ``SyncBatchNorm`` on GPUs; ``CrossRankBatchNorm2d`` here on CPUs, which
``SyncBatchNorm`` does not support), which makes N processes equal to one process with the same
global batch.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

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
from visionzoo.recipes import (
    RECIPE_KEYS,
    RecipeError,
    list_recipes,
    load_recipe,
    resolve_config,
)

__all__ = [
    "RECIPE_KEYS",
    "CrossRankBatchNorm2d",
    "ModelEma",
    "RMSpropTF",
    "RecipeError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_optimizer",
    "evaluate",
    "evaluate_checkpoint",
    "list_recipes",
    "load_recipe",
    "lr_at",
    "param_groups",
    "resolve_config",
    "train",
    "train_one_epoch",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: a checkpoint was saved; ``--resume`` continues."""


# ---------------------------------------------------------------------------------------------
# optimizers and schedules
# ---------------------------------------------------------------------------------------------


def _no_decay_match(name: str, skip: set[str]) -> bool:
    parts = name.split(".")
    return any(name == s or name.startswith(s + ".") or s in parts for s in skip)


def param_groups(model: nn.Module, weight_decay: float,
                 decay_norm_bias: bool = False) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and the parameters that must not decay (1-d parameters: norm
    scales/shifts and biases; and the names in ``model.no_weight_decay()``)."""
    fn = getattr(model, "no_weight_decay", None)
    skip = set(fn()) if callable(fn) else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_norm_bias and (p.ndim <= 1 or _no_decay_match(name, skip)):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop with TensorFlow 1's update, as the Inception-v3, MobileNet and EfficientNet papers
    trained:

        ms  <- decay * ms + (1 - decay) * g^2          (ms starts at 1, not 0)
        mom <- momentum * mom + lr * g / sqrt(ms + eps)
        w   <- w - mom

    Weight decay is added to the gradient (an L2 loss, as their code does). PyTorch's RMSprop
    puts eps outside the root and starts ms at 0, which with the papers' eps = 1.0 is another
    optimizer.
    """

    def __init__(self, params: Any, lr: float, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1.0, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                ms, mom = state["square_avg"], state["momentum_buffer"]
                ms.mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
                mom.mul_(group["momentum"]).addcdiv_(g, (ms + group["eps"]).sqrt_(),
                                                     value=group["lr"])
                p.sub_(mom)
        return loss


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg["weight_decay"], cfg["decay_norm_bias"])
    lr, opt = lr_at(cfg, 0, 1), cfg["opt"]
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg["momentum"],
                               nesterov=cfg["nesterov"] and cfg["momentum"] > 0)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg["betas"]), eps=cfg["opt_eps"])
    if opt == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=cfg["rmsprop_decay"], eps=cfg["opt_eps"],
                                   momentum=cfg["momentum"])
    if opt == "rmsprop_tf":
        return RMSpropTF(groups, lr=lr, decay=cfg["rmsprop_decay"], momentum=cfg["momentum"],
                         eps=cfg["opt_eps"])
    raise RecipeError(f"unknown optimizer {opt!r}")


def lr_scale(cfg: Mapping[str, Any]) -> float:
    base = cfg.get("lr_base_batch")
    return cfg["batch_size"] / base if base else 1.0


def lr_at(cfg: Mapping[str, Any], step: int, steps_per_epoch: int) -> float:
    """The learning rate of a global step: warm-up, then the schedule (all per step)."""
    s = lr_scale(cfg)
    peak, start, floor = cfg["lr"] * s, cfg["warmup_lr"] * s, cfg["min_lr"] * s
    epoch = step / max(steps_per_epoch, 1)  # fractional epochs
    warm = cfg["warmup_epochs"]
    if warm > 0 and epoch < warm:
        return start + (peak - start) * epoch / warm
    sched = cfg["sched"]
    if sched == "cosine":
        t = (epoch - warm) / max(cfg["epochs"] - warm, 1e-12)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    if sched == "multistep":
        return peak * cfg["decay_rate"] ** sum(epoch >= m for m in cfg["milestones"])
    if sched == "step":
        return peak * cfg["decay_rate"] ** math.floor(epoch / cfg["decay_epochs"])
    return peak


class ModelEma:
    """Exponential moving average of the weights (buffers are copied). The decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, as TensorFlow's
    ExponentialMovingAverage with ``num_updates`` (used by the EfficientNet authors), so early
    averages are not dominated by the random initialization."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ours, theirs = self.module.state_dict(), model.state_dict()
        for k, v in ours.items():
            if v.is_floating_point():
                v.lerp_(theirs[k].to(v.dtype), 1.0 - d)
            else:
                v.copy_(theirs[k])


# ---------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError("device cuda requested but no GPU is available")
        return torch.device(f"cuda:{local_rank}")
    return torch.device(pref)


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world <= 1:
        return DistInfo(device=device)
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                    device=device, owns_group=owns)


def all_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world > 1:
        dist.all_reduce(t)
    return t


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed over the batch of every rank.

    PyTorch's SyncBatchNorm refuses CPU tensors; this one uses differentiable all-reduces, which
    gloo supports: two passes (mean, then the centered second moment) to keep float32
    cancellation small. Outside distributed training it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply

        xf = x.float()
        c = xf.shape[1]
        count = xf.new_tensor([xf.numel() / c])
        sums = all_reduce(torch.cat([xf.sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centered = xf - mean.view(1, c, 1, 1)
        var = all_reduce((centered * centered).sum((0, 2, 3))) / n  # biased, as BN normalizes
        y = centered * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), f)
                self.running_var.lerp_((var * n / (n - 1)).detach(), f)  # unbiased, as BN
        return y.to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(child.num_features, child.eps, child.momentum,
                                       child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(next(iter(child.state_dict().values())).device)
            setattr(model, name, new)
        else:
            convert_sync_bn(child, device)
    return model


# ---------------------------------------------------------------------------------------------
# checkpoint state (tensors -> safetensors, everything else -> JSON; no pickle)
# ---------------------------------------------------------------------------------------------


def _pack_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"__optimizer__.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in sd["param_groups"]]
    return {"param_groups": groups, "scalars": scalars}, tensors


def _unpack_optimizer(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
                      ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("__optimizer__."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"__rng__.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"__rng__.cuda.{i}"] = s
    return out


def _restore_rng(tensors: Mapping[str, torch.Tensor], py_state: Any) -> None:
    if "__rng__.torch" in tensors:
        torch.set_rng_state(tensors["__rng__.torch"])
    cuda = sorted((k for k in tensors if k.startswith("__rng__.cuda.")),
                  key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][:torch.cuda.device_count()])
    if py_state:
        random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))


def _clean_stale(run_dir: Path) -> None:
    """Temporary files left by a process killed while writing (the rename never happened)."""
    for p in run_dir.glob("*.safetensors.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


# ---------------------------------------------------------------------------------------------
# progress display
# ---------------------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress bar on stderr (``\\r`` updates on a terminal; a line every 25 % or 30 s
    otherwise)."""

    def __init__(self, total: int, desc: str, mode: str = "auto", stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.mode = ("bar" if tty else "lines") if mode == "auto" else mode
        self.total, self.desc = total, desc
        self.last_draw, self.last_line, self.last_quarter = 0.0, time.monotonic(), 0
        self.drawn = False

    def update(self, done: int, elapsed: float, text: str) -> None:
        if self.mode == "off" or self.total <= 0:
            return
        now = time.monotonic()
        frac = done / self.total
        eta = elapsed / max(done, 1) * (self.total - done) if done else 0.0
        line = f"{self.desc} {frac:4.0%} {done}/{self.total}  {text}  ETA {_fmt_time(eta)}"
        if self.mode == "bar":
            if now - self.last_draw < 0.2 and done < self.total:
                return
            width = 20
            filled = int(width * frac)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.desc} [{bar}] {frac:4.0%} {done}/{self.total}  {text}  "
                              f"ETA {_fmt_time(eta)} \x1b[K")
            self.stream.flush()
            self.last_draw, self.drawn = now, True
        else:
            quarter = int(frac * 4)
            if quarter > self.last_quarter or now - self.last_line >= 30:
                self.stream.write(line + "\n")
                self.stream.flush()
                self.last_quarter, self.last_line = quarter, now

    def close(self) -> None:
        if self.mode == "bar" and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, *, num_classes: int,
             device: torch.device | str = "cpu", bf16: bool = False,
             channels_last: bool = False, info: DistInfo | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Top-1, top-5, mean cross-entropy and the confusion matrix (rows: true class) of ``model``
    on ``loader``, summed over ranks. Undecodable images are counted in ``skipped``."""
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
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            logits = logits.float()
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
    n_skip = all_sum(torch.tensor([len(skipped)], dtype=torch.float64), info)
    all_sum(sums, info)
    all_sum(confusion, info)
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "top1": sums[1].item() / n, "top5": sums[2].item() / n,
            "images": int(sums[3].item()), "skipped": int(n_skip.item()),
            "skipped_paths": skipped[:20],
            "confusion": confusion.view(num_classes, num_classes)}


# ---------------------------------------------------------------------------------------------
# training
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


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, *,
                    cfg: Mapping[str, Any], epoch: int, steps: int, start_step: int = 0,
                    totals: EpochTotals | None = None, device: torch.device | str = "cpu",
                    info: DistInfo | None = None, mixer: Any = None, ema: ModelEma | None = None,
                    raw_model: nn.Module | None = None, stop: _StopFlag | None = None,
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
    seed = cfg["seed"]
    params = [p for p in raw_model.parameters() if p.requires_grad]
    it: Iterator = iter(loader)
    t_epoch = time.monotonic() - totals.time
    for step in range(start_step, steps):
        t0 = time.monotonic()
        x, y, skipped = next(it)
        totals.data_wait += time.monotonic() - t0
        totals.skipped_paths += [s.path for s in skipped][: max(0, 20 - len(totals.skipped_paths))]
        gstep = epoch * steps + step
        lr = lr_at(cfg, gstep, steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        torch.manual_seed(mix_seed(seed, "step", gstep, info.rank))  # dropout, drop-path
        if len(y) == 0 and info.world == 1:  # every image of the batch was undecodable
            totals.skipped += len(skipped)
            continue
        if len(y) == 0:
            raise DataError("a whole per-rank batch was undecodable; distributed steps need "
                            "at least one image per rank")
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        target: torch.Tensor = y
        if mixer is not None and mixer.enabled:
            x, target = mixer(x, y, mix_seed(seed, "mix", gstep, info.rank))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["bf16"]):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg["label_smoothing"])
        hard = y if target.ndim == 1 else target.argmax(1)
        stats = torch.tensor([loss.item() * len(y), (logits.argmax(1) == hard).sum().item(),
                              len(y), len(skipped), float(not math.isfinite(loss.item())),
                              float(stop is not None and stop.requested is not None)],
                             dtype=torch.float64)
        all_sum(stats, info)
        if stats[4] > 0:
            raise _Stop("diverged", f"loss {loss.item()} at epoch {epoch + 1}, step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["clip_grad"]:
            nn.utils.clip_grad_norm_(params, cfg["clip_grad"])
        optimizer.step()
        if ema is not None:
            ema.update(raw_model)
        totals.loss += stats[0].item()
        totals.correct += stats[1].item()
        totals.images += int(stats[2].item())
        totals.skipped += int(stats[3].item())
        totals.time = time.monotonic() - t_epoch
        if progress is not None:
            ips = totals.images / max(totals.time, 1e-9)
            wait = totals.data_wait / max(totals.time, 1e-9)
            progress.update(step + 1, totals.time,
                            f"loss {totals.loss / max(totals.images, 1):.4f} "
                            f"acc {totals.correct / max(totals.images, 1):.2%} "
                            f"{ips:.0f} img/s  data {wait:.0%}")
        if on_step is not None:
            on_step(step + 1, totals)
        if stats[5] > 0:
            raise _Stop("interrupted", step=step + 1)
    totals.time = time.monotonic() - t_epoch
    return totals


def _auto_workers(world: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 2
    return max(1, min(8, cpus // world - 1))


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


def _in_chans(cfg: Mapping[str, Any], source: DataSource) -> int:
    if cfg["in_chans"] != "auto":
        return int(cfg["in_chans"])
    return 3 if cfg["pretrained"] else source.channels


def build_model(model_name: str, cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    from visionzoo.registry import create_model

    pretrained = cfg["pretrained"] or False
    return create_model(model_name, num_classes=num_classes, in_chans=int(cfg["in_chans"]),
                        pretrained=pretrained, **cfg["model_args"])


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


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None))
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


METRIC_COLUMNS = ["epoch", "global_step", "lr", "train_loss", "train_acc", "val_loss",
                  "val_top1", "val_top5", "ema_val_top1", "img_per_s", "data_wait_s",
                  "data_wait_frac", "skipped", "epoch_time_s"]


def _write_metrics(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else
                            f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                        for k in METRIC_COLUMNS})
    os.replace(tmp, path)


def plot_curves(path: Path, history: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """Loss and top-1 accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    a1.plot(ep, [r["val_loss"] for r in history], "o-", label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.set_title("loss (train includes label smoothing / mixing)", fontsize=9)
    a2.plot(ep, [100 * r["train_acc"] for r in history], "o-", label="train")
    a2.plot(ep, [100 * r["val_top1"] for r in history], "o-", label="val top-1")
    if any(r.get("ema_val_top1") is not None for r in history):
        a2.plot(ep, [100 * (r.get("ema_val_top1") or float("nan")) for r in history], "o--",
                label="val top-1 (EMA)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    from matplotlib.ticker import MaxNLocator

    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        a.grid(alpha=0.3)
        a.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def plot_confusion(path: Path, confusion: torch.Tensor, classes: Sequence[str],
                   title: str = "") -> None:
    """Row-normalized confusion matrix (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _log(msg: str, info: DistInfo, stream: TextIO | None = None) -> None:
    if info.is_main:
        print(msg, file=stream or sys.stdout, flush=True)


def train(model_name: str | None, data: str | DataSource | None, *, recipe: str | None = None,
          overrides: Mapping[str, Any] | None = None, out: str | Path | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Train ``model_name`` on ``data`` and return the run summary (also ``summary.json``).

    Writes into ``out`` (default ``runs/<model>_<data>``): ``config.yaml`` (resolved recipe),
    ``last.safetensors`` (resume state, each epoch and every ``checkpoint_every`` steps),
    ``model.safetensors`` (final weights, EMA ones when ``ema``), ``metrics.csv``,
    ``summary.json`` and ``curves.png``. Raises ``TrainingDiverged`` on a non-finite loss and
    ``TrainingInterrupted`` after saving on Ctrl-C / SIGTERM.
    """
    pref = (overrides or {}).get("device", "auto")
    info = init_distributed(str(pref) if pref else "auto")
    try:
        return _train(model_name, data, recipe, overrides or {}, out, resume, info)
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(model_name: str | None, data: str | DataSource | None, recipe: str | None,
           overrides: Mapping[str, Any], out: str | Path | None, resume: bool,
           info: DistInfo) -> dict[str, Any]:
    from visionzoo.checkpoint import load_checkpoint, read_header, save_checkpoint
    from visionzoo.data.mixing import BatchMixer
    from visionzoo.data.presets import eval_transform, fit_mode, train_transform

    wall_start = time.time()
    # --- run directory and resume state ------------------------------------------------------
    data_name = data.name if isinstance(data, DataSource) else Path(str(data or "")).name
    if out is None:
        if model_name is None or (data is None):
            raise RecipeError("--model and --data are needed (or --out of the run to resume)")
        out = _default_out(model_name, data_name, resume)
    run_dir = Path(out)
    ckpt_path = run_dir / "last.safetensors"
    header = None
    if ckpt_path.exists():
        if not resume:
            raise RecipeError(f"{run_dir} already holds a run; pass --resume to continue it or "
                              f"choose another --out")
        header = read_header(ckpt_path)
        if not header or "train_state" not in header.get("extra", {}):
            raise RecipeError(f"{ckpt_path} is not a training checkpoint")
    elif resume:
        _log(f"no checkpoint in {run_dir}; starting a new run", info)
    saved_cfg = header["extra"]["train_config"] if header else None
    if saved_cfg:
        for key, given in (("model", model_name), ("data", None if isinstance(data, DataSource)
                                                   else data)):
            if given and str(given) != str(saved_cfg[key]):
                raise RecipeError(f"{run_dir} is a {key} {saved_cfg[key]!r} run; got {given!r}")
        model_name = saved_cfg["model"]
        if data is None:
            data = saved_cfg["data"]
    if model_name is None or data is None:
        raise RecipeError("--model and --data are needed for a new run")

    base = {k: v for k, v in saved_cfg.items() if k in RECIPE_KEYS} if saved_cfg else None
    if base and recipe and recipe != saved_cfg.get("recipe"):
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
    per_rank = cfg["batch_size"] // info.world

    # --- data and model ----------------------------------------------------------------------
    source = data if isinstance(data, DataSource) else open_dataset(str(data))
    cfg["in_chans"] = _in_chans(cfg, source)
    if source.layout == "imagefolder":
        source.set_mode("L" if cfg["in_chans"] == 1 else "RGB")
    classes = source.classes
    if header and header["extra"].get("class_names") not in (None, classes):
        raise RecipeError(f"{ckpt_path} was trained on other classes than {source.name}'s")
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not cfg["deterministic"]
    model = build_model(model_name, cfg, len(classes))
    _fill_auto(cfg, source, model, model_name, info.world)
    # the checkpoint's pretrained_cfg then describes this run's evaluation preprocessing, so
    # predict and other pretrained_cfg users see the input the network was trained on
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}),
                            "input_size": (cfg["in_chans"], cfg["img_size"], cfg["img_size"]),
                            "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]),
                            "crop_pct": cfg["crop_pct"], "interpolation": cfg["interpolation"]}
    if fit_mode(cfg, source.native_size) == "pad":  # small images were zero-padded, not resized
        model.pretrained_cfg.update(fit="pad", native_size=int(source.native_size))
    device = info.device
    full_cfg = {"model": model_name, "data": source.root if isinstance(data, DataSource)
                else str(data), "recipe": (saved_cfg or {}).get("recipe", recipe or "small_cpu"),
                **cfg}

    train_split = source.split(source.train_split)
    eval_split = source.split(source.eval_split)
    native = source.native_size
    train_ds = TransformedSplit(train_split, train_transform(cfg, native, source.channels))
    eval_ds = TransformedSplit(eval_split, eval_transform(cfg, native, source.channels))
    sampler = EpochSampler(len(train_split), seed=cfg["seed"], rank=info.rank, world=info.world)
    steps = sampler.per_rank // per_rank
    if cfg["max_steps_per_epoch"]:
        steps = min(steps, cfg["max_steps_per_epoch"])
    if steps < 1:
        raise RecipeError(f"the training split ({len(train_split)} images) is smaller than one "
                          f"batch of {cfg['batch_size']}")
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, sampler, per_rank, drop_last=True,
                               workers=cfg["workers"], pin_memory=pin)
    eval_loader = make_loader(eval_ds, ShardSampler(len(eval_split), info.rank, info.world),
                              cfg["eval_batch_size"], drop_last=False, workers=cfg["workers"],
                              pin_memory=pin)

    model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if cfg["sync_bn"] and info.world > 1:
        model = convert_sync_bn(model, device)
    optimizer = build_optimizer(model, cfg)
    ema = ModelEma(model, cfg["ema_decay"]) if cfg["ema"] else None
    mixer = BatchMixer(len(classes), cfg["mixup_alpha"], cfg["cutmix_alpha"], cfg["mix_prob"],
                       cfg["mix_switch_prob"])

    # --- restore -----------------------------------------------------------------------------
    start_epoch, start_step, history = 0, 0, []
    totals = EpochTotals()
    prior_time = 0.0
    if header:
        _, header, extra_t = load_checkpoint(ckpt_path, model=model, return_extra=True)
        st = header["extra"]["train_state"]
        optimizer.load_state_dict(_unpack_optimizer(st["optimizer"], extra_t))
        if ema is not None:
            ema_sd = {k[len("__ema__."):]: v for k, v in extra_t.items()
                      if k.startswith("__ema__.")}
            if ema_sd:
                ema.module.load_state_dict(ema_sd)
                ema.updates = st.get("ema_updates", 0)
            else:  # EMA switched on at resume
                ema = ModelEma(model, cfg["ema_decay"])
        _restore_rng(extra_t, st.get("python_rng"))
        start_epoch, start_step = st["epoch"], st["step"]
        history = st["history"]
        totals = EpochTotals(**st["partial_epoch"]) if start_step else EpochTotals()
        prior_time = st.get("wall_time_s", 0.0)
        if start_step > steps:
            raise RecipeError(f"{ckpt_path} is at step {start_step} of an epoch of {steps}: the "
                              f"epoch length changed (batch_size / max_steps_per_epoch)")
        _log(f"resuming {run_dir} at epoch {start_epoch + 1}, step {start_step} "
             f"(global step {start_epoch * steps + start_step})", info)

    train_model: nn.Module = model
    if info.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg["compile"]:
        train_model = torch.compile(train_model)

    n_params = sum(p.numel() for p in model.parameters())
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _clean_stale(run_dir)
        _write_yaml(run_dir / "config.yaml", full_cfg)
    eff_lr = cfg["lr"] * lr_scale(cfg)
    _log(f"train {model_name} ({n_params / 1e6:.2f} M params, in_chans {cfg['in_chans']}, "
         f"{cfg['img_size']}x{cfg['img_size']}) on {source.name}: {len(train_split):,} train / "
         f"{len(eval_split):,} {source.eval_split} images, {len(classes)} classes; recipe "
         f"{full_cfg['recipe']}, {cfg['epochs']} epochs x {steps} steps, batch "
         f"{cfg['batch_size']} ({info.world} x {per_rank}), {cfg['opt']} lr {eff_lr:g}, "
         f"{cfg['workers']} loader workers, device {device}; run dir {run_dir}", info)

    def save_state(epoch: int, step: int, tot: EpochTotals, reason: str) -> None:
        if not info.is_main:
            return
        opt_meta, opt_t = _pack_optimizer(optimizer)
        tensors = {**opt_t, **_rng_tensors()}
        if ema is not None:
            tensors.update({f"__ema__.{k}": v for k, v in ema.module.state_dict().items()})
        py = random.getstate()
        state = {"epoch": epoch, "step": step, "global_step": epoch * steps + step,
                 "steps_per_epoch": steps, "reason": reason, "optimizer": opt_meta,
                 "scheduler": {"kind": cfg["sched"], "lr": lr_at(cfg, epoch * steps + step,
                                                                 steps)},
                 "ema_updates": ema.updates if ema is not None else 0,
                 "python_rng": [py[0], list(py[1]), py[2]], "history": history,
                 "partial_epoch": tot.as_json(), "world_size": info.world,
                 "wall_time_s": prior_time + time.time() - wall_start}
        save_checkpoint(model, ckpt_path, tensors=tensors,
                        extra={"class_names": classes, "train_config": full_cfg,
                               "train_state": state})

    summary: dict[str, Any] = {"status": "running", "model": model_name, "data": full_cfg["data"],
                               "dataset": source.name, "eval_split": source.eval_split,
                               "num_classes": len(classes), "params": n_params,
                               "world_size": info.world, "device": str(device),
                               "run_dir": str(run_dir), "torch": torch.__version__}

    def finish_summary(status: str, **more: Any) -> dict[str, Any]:
        summary.update(status=status, epochs_done=len(history),
                       wall_time_s=round(prior_time + time.time() - wall_start, 2), **more)
        if history:
            best = max(history, key=lambda r: r["val_top1"])
            summary["best"] = {"epoch": best["epoch"], "top1": best["val_top1"]}
            summary["data_wait_s"] = round(sum(r["data_wait_s"] for r in history), 2)
            train_time = sum(r["epoch_time_s"] for r in history)
            summary["data_wait_frac"] = round(summary["data_wait_s"] / max(train_time, 1e-9), 4)
            summary["train_img_per_s"] = round(
                sum(r["img_per_s"] * r["epoch_time_s"] for r in history) / max(train_time, 1e-9),
                1)
            summary["skipped_images"] = sum(r["skipped"] for r in history)
        if info.is_main:
            _write_json(run_dir / "summary.json", summary)
        return summary

    checkpoint_every = cfg["checkpoint_every"]
    stop = _StopFlag()
    epoch = start_epoch
    with stop:
        try:
            for epoch in range(start_epoch, cfg["epochs"]):
                sampler.set_epoch(epoch, skip=start_step * per_rank)
                progress = Progress(steps, f"epoch {epoch + 1}/{cfg['epochs']}",
                                    cfg["progress"] if info.is_main else "off")

                def on_step(done: int, tot: EpochTotals, _epoch: int = epoch) -> None:
                    gstep = _epoch * steps + done
                    if checkpoint_every and gstep % checkpoint_every == 0 and done < steps:
                        save_state(_epoch, done, tot, "step")

                try:
                    totals = train_one_epoch(
                        train_model, train_loader, optimizer, cfg=cfg, epoch=epoch, steps=steps,
                        start_step=start_step, totals=totals, device=device, info=info,
                        mixer=mixer, ema=ema, raw_model=model, stop=stop, progress=progress,
                        on_step=on_step)
                finally:
                    progress.close()
                val = evaluate(model, eval_loader, num_classes=len(classes), device=device,
                               bf16=cfg["bf16"], channels_last=cfg["channels_last"], info=info)
                ema_val = evaluate(ema.module, eval_loader, num_classes=len(classes),
                                   device=device, bf16=cfg["bf16"],
                                   channels_last=cfg["channels_last"],
                                   info=info) if ema is not None else None
                n_img = max(totals.images, 1)
                row = {"epoch": epoch + 1, "global_step": (epoch + 1) * steps,
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
                       "epoch_time_s": totals.time, "skipped_paths": totals.skipped_paths}
                history.append(row)
                start_step, totals = 0, EpochTotals()
                save_state(epoch + 1, 0, totals, "epoch")
                if info.is_main:
                    _write_metrics(run_dir / "metrics.csv", history)
                    plot_curves(run_dir / "curves.png", history,
                                f"{model_name} on {source.name}")
                split = source.eval_split
                line = (f"epoch {epoch + 1}/{cfg['epochs']}  train loss {row['train_loss']:.4f} "
                        f"acc {row['train_acc']:.2%}  {split} loss {val['loss']:.4f} "
                        f"top-1 {val['top1']:.2%} top-5 {val['top5']:.2%}")
                if ema_val:
                    line += f"  EMA top-1 {ema_val['top1']:.2%}"
                line += (f"  lr {row['lr']:.4g}  {row['img_per_s']:.0f} img/s  data wait "
                         f"{row['data_wait_s']:.1f}s ({row['data_wait_frac']:.0%})  "
                         f"{_fmt_time(row['epoch_time_s'])}")
                if row["skipped"] or val["skipped"]:
                    line += (f"  skipped {row['skipped']} train / {val['skipped']} {split} "
                             f"undecodable images (e.g. "
                             f"{(row['skipped_paths'] or val['skipped_paths'])[0]})")
                _log(line, info)
                flag = torch.tensor([float(stop.requested is not None)])
                if all_sum(flag, info).item() > 0:  # Ctrl-C during evaluation
                    raise _Stop("interrupted")  # the epoch's checkpoint is already written
        except _Stop as s:
            if s.kind == "diverged":
                finish_summary("diverged", error=s.detail)
                last = (f"{ckpt_path} ({_ckpt_position(ckpt_path)})" if ckpt_path.exists()
                        else "none was written yet")
                raise TrainingDiverged(
                    f"non-finite {s.detail}; stopped without applying it. The last good "
                    f"checkpoint is {last}. Lower --lr, set --clip-grad or a warm-up, or "
                    f"turn off --bf16, then continue with --resume.") from None
            if s.step:  # mid-epoch: the partial totals resume with it
                save_state(epoch, s.step, totals, "interrupted")
            finish_summary("interrupted")
            raise TrainingInterrupted(
                f"interrupted ({stop.requested}): checkpoint saved to {ckpt_path} "
                f"({_ckpt_position(ckpt_path) if info.is_main else ''}); continue with "
                f"--resume --out {run_dir}") from None

    # --- final model -------------------------------------------------------------------------
    last = history[-1] if history else None
    final_model = ema.module if ema is not None else model
    final = None
    if last:
        key = "ema_val_" if ema is not None else "val_"
        final = {"top1": last[key + "top1"], "top5": last[key + "top5"],
                 "loss": last[key + "loss"], "split": source.eval_split,
                 "weights": "ema" if ema is not None else "model"}
    if info.is_main:
        save_checkpoint(final_model, run_dir / "model.safetensors",
                        extra={"class_names": classes, "train_config": full_cfg,
                               "metrics": final, "weights": "ema" if ema is not None else "model"})
    out_summary = finish_summary("completed", final=final, files={
        "model": str(run_dir / "model.safetensors"), "checkpoint": str(ckpt_path),
        "config": str(run_dir / "config.yaml"), "metrics": str(run_dir / "metrics.csv"),
        "curves": str(run_dir / "curves.png")})
    if final:
        _log(f"done: {source.eval_split} top-1 {final['top1']:.2%} top-5 {final['top5']:.2%} "
             f"loss {final['loss']:.4f} ({final['weights']} weights) after {len(history)} "
             f"epochs in {_fmt_time(out_summary['wall_time_s'])}; data wait "
             f"{out_summary.get('data_wait_frac', 0):.1%} of training time; "
             f"{out_summary.get('skipped_images', 0)} undecodable images skipped; "
             f"files in {run_dir}", info)
    return out_summary


def _ckpt_position(path: Path) -> str:
    from visionzoo.checkpoint import read_header

    try:
        st = (read_header(path) or {})["extra"]["train_state"]
        return f"epoch {st['epoch'] + 1}, step {st['step']}" if st["step"] else \
            f"end of epoch {st['epoch']}"
    except Exception:  # noqa: BLE001
        return "unreadable"


# ---------------------------------------------------------------------------------------------
# evaluating a checkpoint
# ---------------------------------------------------------------------------------------------


def evaluate_checkpoint(model_name: str, checkpoint: str | Path, data: str | DataSource, *,
                        split: str | None = None, batch_size: int = 256,
                        workers: int | str = "auto", device: str = "auto",
                        out_dir: str | Path | None = None,
                        progress: str = "auto") -> dict[str, Any]:
    """Top-1, top-5, loss, per-class accuracy and a confusion-matrix PNG for a checkpoint.

    Preprocessing is the one the checkpoint was trained with (its ``train_config``); for
    weights without one (ported or published), the model's ``pretrained_cfg``.
    """
    from visionzoo.checkpoint import CheckpointError, load_checkpoint, read_header
    from visionzoo.data.presets import eval_transform
    from visionzoo.registry import create_model

    checkpoint = Path(checkpoint)
    source = data if isinstance(data, DataSource) else open_dataset(str(data))
    header = read_header(checkpoint)
    cfg = {k: copy.deepcopy(s.default) for k, s in RECIPE_KEYS.items()}
    if header is not None:
        if header["model"] != model_name:
            raise CheckpointError(f"{checkpoint} holds a {header['model']} checkpoint, not "
                                  f"{model_name}")
        model = load_checkpoint(checkpoint)
        extra = header.get("extra", {})
        trained = extra.get("train_config") or {}
        cfg.update({k: v for k, v in trained.items() if k in RECIPE_KEYS})
        names = extra.get("class_names")
    else:  # a plain weights file (torchvision / timm / efficientnet_pytorch)
        model = create_model(model_name, num_classes=len(source.classes), pretrained=checkpoint)
        names = None
    num_classes = int(getattr(model, "num_classes", len(source.classes)))
    if names is not None and list(names) != list(source.classes):
        raise DataError(f"{checkpoint} was trained on classes {names[:5]}... but {source.name} "
                        f"has {source.classes[:5]}...; evaluate on the dataset it was trained on")
    if num_classes != len(source.classes):
        raise DataError(f"{checkpoint} has {num_classes} classes, {source.name} has "
                        f"{len(source.classes)}")
    cfg["in_chans"] = int(getattr(model, "in_chans", 3))
    if source.layout == "imagefolder":
        source.set_mode("L" if cfg["in_chans"] == 1 else "RGB")
    cfg["workers"] = workers if workers != "auto" else cfg.get("workers", "auto")
    cfg["eval_batch_size"] = batch_size
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    if not trained:  # published / ported weights: the preprocessing they were trained with
        for key in ("mean", "std", "crop_pct", "interpolation"):
            if key in pcfg:
                cfg[key] = list(pcfg[key]) if key in ("mean", "std") else pcfg[key]
        if "input_size" in pcfg:
            cfg["img_size"] = int(pcfg["input_size"][-1])
    _fill_auto(cfg, source, model, model_name, 1)
    dev = pick_device(device)
    split_name = split or source.eval_split
    if not trained and source.native_size is None and cfg["in_chans"] == 3 and pcfg:
        from visionzoo.data.transforms import PretrainedEvalTransform

        transform: Callable = PretrainedEvalTransform.from_cfg(pcfg)  # as `visionzoo predict`
    else:
        transform = eval_transform(cfg, source.native_size, source.channels)
    ds = TransformedSplit(source.split(split_name), transform)
    loader = make_loader(ds, ShardSampler(len(ds)), batch_size, drop_last=False,
                         workers=int(cfg["workers"]), pin_memory=dev.type == "cuda")
    model.to(dev)
    if cfg.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    bar = Progress(len(loader), f"eval {source.name} {split_name}", progress)
    res = evaluate(model, loader, num_classes=num_classes, device=dev,
                   bf16=bool(cfg.get("bf16")), channels_last=bool(cfg.get("channels_last")),
                   progress=bar)
    cm = res["confusion"]
    per_class = (cm.diag().double() / cm.sum(1).clamp_min(1)).tolist()
    out = Path(out_dir) if out_dir else checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{source.name}_{split_name}".replace("/", "_")
    png = out / f"{stem}_confusion.png"
    plot_confusion(png, cm, source.classes,
                   f"{model_name} on {source.name} {split_name}: top-1 {res['top1']:.2%}")
    result = {"model": model_name, "checkpoint": str(checkpoint), "data": source.name,
              "split": split_name, "images": res["images"], "top1": res["top1"],
              "top5": res["top5"], "loss": res["loss"], "skipped": res["skipped"],
              "skipped_paths": res["skipped_paths"],
              "per_class": [{"class": c, "accuracy": a, "images": int(cm[i].sum())}
                            for i, (c, a) in enumerate(zip(source.classes, per_class,
                                                           strict=True))],
              "confusion": cm.tolist(), "confusion_png": str(png)}
    _write_json(out / f"{stem}.json", result)
    result["json"] = str(out / f"{stem}.json")
    return result
