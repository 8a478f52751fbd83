"""The per-epoch hook of ``visionzoo.train`` and the callbacks that write a run's files on it.

A callback is an object with ``on_epoch_end(metrics)`` and, optionally, ``on_train_end(result)``
(a ``visionzoo.engine.TrainResult``); a plain function is called as ``on_epoch_end``. Callbacks
run on rank 0 only, after the epoch's checkpoint is written. ``metrics`` is one row of the run's
history: the columns of ``METRIC_COLUMNS`` (``epoch``, ``train_loss``, ``val_top1``, ...) plus
``ema_val_top5``, ``ema_val_loss``, ``val_skipped`` and ``skipped_paths``.

The run's own files are written the same way: ``MetricsCSV`` (``metrics.csv``), ``CurvesPNG``
(``curves.png``) and, with ``log: tensorboard``, ``TensorBoardLogger`` (``<run>/tensorboard``; the
``[tensorboard]`` extra).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from visionzoo.extras import MissingExtraError, MissingExtraWarning, require_pyplot

__all__ = ["METRIC_COLUMNS", "Callback", "CurvesPNG", "MetricsCSV", "TensorBoardLogger",
           "as_callbacks", "plot_curves"]

METRIC_COLUMNS = ["epoch", "global_step", "lr", "train_loss", "train_acc", "val_loss",
                  "val_top1", "val_top5", "ema_val_top1", "img_per_s", "data_wait_s",
                  "data_wait_frac", "skipped", "epoch_time_s"]


class Callback(Protocol):
    def on_epoch_end(self, metrics: dict[str, Any]) -> None: ...


class _FunctionCallback:
    def __init__(self, fn: Callable[[dict[str, Any]], Any]):
        self.fn = fn

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.fn(metrics)


def as_callbacks(items: Iterable[Any] | Any) -> list[Any]:
    """Callback objects from objects with ``on_epoch_end`` and plain functions."""
    if items is None:
        return []
    if hasattr(items, "on_epoch_end") or callable(items):
        items = [items]
    out = []
    for c in items:
        if hasattr(c, "on_epoch_end"):
            out.append(c)
        elif callable(c):
            out.append(_FunctionCallback(c))
        else:
            raise TypeError(f"a callback needs on_epoch_end(metrics) or must be callable; got "
                            f"{type(c).__name__}")
    return out


class MetricsCSV:
    """``metrics.csv``: one row per epoch, rewritten atomically after each (so it never holds a
    half-written line); ``history`` holds the rows of a resumed run's earlier epochs."""

    def __init__(self, path: str | Path, history: Sequence[Mapping[str, Any]] = ()):
        self.path, self.rows = Path(path), [dict(r) for r in history]

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.rows.append(dict(metrics))
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in self.rows:
                w.writerow({k: ("" if row.get(k) is None else
                                f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                            for k in METRIC_COLUMNS})
        os.replace(tmp, self.path)


class CurvesPNG:
    """``curves.png``: loss and top-1 per epoch, train and validation, redrawn each epoch.

    Without matplotlib (the ``[plots]`` extra) the plot is a by-product training can do
    without: one MissingExtraWarning at the first epoch, then nothing."""

    def __init__(self, path: str | Path, title: str = "",
                 history: Sequence[Mapping[str, Any]] = ()):
        self.path, self.title, self.rows = Path(path), title, [dict(r) for r in history]
        self.skipped = False

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.rows.append(dict(metrics))
        if self.skipped:
            return
        try:
            plot_curves(self.path, self.rows, self.title)
        except MissingExtraError as e:
            self.skipped = True
            warnings.warn(f"skipped {self.path.name}: {e}", MissingExtraWarning, stacklevel=2)


# TensorBoard tag -> metrics key
TENSORBOARD_SCALARS = {
    "train/loss": "train_loss", "train/acc": "train_acc", "val/loss": "val_loss",
    "val/top1": "val_top1", "val/top5": "val_top5", "val_ema/loss": "ema_val_loss",
    "val_ema/top1": "ema_val_top1", "val_ema/top5": "ema_val_top5", "opt/lr": "lr",
    "speed/img_per_s": "img_per_s", "speed/data_wait_frac": "data_wait_frac",
    "data/skipped": "skipped",
}


class TensorBoardLogger:
    """The epoch's metrics as TensorBoard scalars (x axis: epoch), in ``log_dir``.

    ``purge_step``: on resume, the first epoch to come; events a crashed run wrote from there on
    are dropped, so the curves do not fork."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MissingExtraError("log: tensorboard needs the tensorboard package: pip install "
                                    "'visionzoo[tensorboard]'") from None
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        for tag, key in TENSORBOARD_SCALARS.items():
            if metrics.get(key) is not None:
                self.writer.add_scalar(tag, float(metrics[key]), global_step=metrics["epoch"])
        self.writer.flush()

    def on_train_end(self, result: Any) -> None:
        self.writer.close()


def plot_curves(path: Path, history: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """Loss and top-1 accuracy per epoch, train and validation. Raises MissingExtraError
    without matplotlib."""
    plt = require_pyplot("the training-curves plot")

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
    from matplotlib.ticker import MaxNLocator  # importable: require_pyplot succeeded

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
