"""ImageNet-style validation of a model and its weights: top-1 / top-5 over a folder of images.

``validate(model, root)`` classifies every image under ``root`` with the model's own
preprocessing (``create_transform(resolve_data_config(model, **overrides))``, the transform
``predict`` and ``evaluate`` use; images decoded by ``load_image``, the project's one decoder) and
returns top-1 / top-5 in percent, as timm's ``validate.py`` prints them. Three layouts
(``find_samples``):

* class folders named by WordNet id (``n01440764`` ...): each folder is its ImageNet-1k index,
  the position of the id in the sorted list of the 1000 ILSVRC-2012 synsets, whether all 1000
  folders are present or a few (``visionzoo/data/imagenet_synsets.txt``: the ILSVRC-2012 class
  ids, as listed in timm's ``timm/data/_info/imagenet_synsets.txt``);
* class folders with other names: their sorted order is the class index (torchvision's
  ``ImageFolder``; an empty folder keeps its index and is warned about);
* a flat folder of images with a labels file: csv rows ``filename,label``, the label an integer
  index or a WordNet id (a header row is skipped; ImageNet's ``LOC_val_solution.csv``, whose
  rows are ``ImageId,<wnid> <box>...`` with file names without suffix, works as is).

Anything wrong with the data (a missing folder, no images, an unreadable image, a label the model
cannot have) is a ``DataError`` whose message is one line; the CLI prints it that way.
``write_results`` writes the result as csv (timm's results columns, one row) or json, atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from visionzoo.data.config import create_transform, resolve_data_config
from visionzoo.data.datasets import IMG_EXTENSIONS, DataError, DataWarning, _list_images
from visionzoo.data.transforms import ImageError, load_image

__all__ = ["CSV_COLUMNS", "Samples", "find_samples", "format_results", "imagenet_synsets",
           "results_path", "validate", "write_results"]

WNID = re.compile(r"n\d{8}")
# timm validate.py's results columns (one row per model)
CSV_COLUMNS = ("model", "top1", "top1_err", "top5", "top5_err", "param_count", "img_size",
               "crop_pct", "interpolation")
RESULT_SUFFIXES = (".csv", ".json")


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 WordNet ids, sorted: position = ImageNet-1k class index."""
    text = resources.files("visionzoo.data").joinpath("imagenet_synsets.txt").read_text("utf-8")
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(ids) != 1000 or list(ids) != sorted(set(ids)):
        raise RuntimeError("imagenet_synsets.txt must hold 1000 sorted, unique WordNet ids")
    return ids


@lru_cache(maxsize=1)
def _synset_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_synsets())}


def _wnid_index(wnid: str, where: str) -> int:
    index = _synset_index().get(wnid)
    if index is None:
        raise DataError(f"{where}: {wnid} looks like a WordNet id but is not one of the 1000 "
                        f"ImageNet-1k classes")
    return index


@dataclass
class Samples:
    """The images to validate on, their class indices, and how they were found.

    ``layout``: "wnid", "folders" or "labels"; ``classes``: class index -> name (the folder name,
    WordNet id or label text) for the classes that occur; ``imagenet``: labels are ImageNet-1k
    indices (the model must have 1000 classes); ``num_labels``: the smallest class count the
    labels need.
    """

    root: Path
    files: list[Path]
    labels: list[int]
    layout: str
    classes: dict[int, str]
    imagenet: bool = False
    num_labels: int = 0

    def subset(self, limit: int | None) -> Samples:
        """``limit`` images spread evenly over the sorted list (every class folder gets some)."""
        n = len(self.files)
        if limit is None or limit >= n:
            return self
        keep = [i * n // limit for i in range(limit)]
        return Samples(self.root, [self.files[i] for i in keep], [self.labels[i] for i in keep],
                       self.layout, self.classes, self.imagenet, self.num_labels)


def find_samples(root: str | Path, labels: str | Path | None = None) -> Samples:
    """The images under ``root`` and their labels (see the module docstring for the layouts)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a directory of images")
    if labels is not None:
        return _from_labels_file(root, Path(labels).expanduser())
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and _is_image(p)]
    by_folder = {p.name: [Path(f) for f in _list_images(p)] for p in folders}
    if not any(by_folder.values()):
        if loose:
            raise DataError(f"{root} holds {len(loose)} images but no class folders: give a labels "
                            f"file (--labels FILE, csv rows filename,label) to say their classes")
        raise DataError(f"{root} holds no images ({', '.join(IMG_EXTENSIONS)})")
    if loose:
        warnings.warn(f"{root}: {len(loose)} images beside the class folders are left out, "
                      f"e.g. {loose[0].name}", DataWarning, stacklevel=2)
    return _from_folders(root, by_folder)


def _is_image(path: Path) -> bool:
    return path.name.lower().endswith(IMG_EXTENSIONS)


def _from_folders(root: Path, by_folder: dict[str, list[Path]]) -> Samples:
    names = list(by_folder)  # sorted
    wnids = [n for n in names if WNID.fullmatch(n)]
    if wnids and len(wnids) < len(names):
        other = next(n for n in names if not WNID.fullmatch(n))
        raise DataError(f"{root} mixes class folders named by WordNet id ({wnids[0]}) with "
                        f"others ({other}); name them all one way")
    imagenet = bool(wnids)
    index = {n: _wnid_index(n, str(root / n)) for n in names} if imagenet else {
        n: i for i, n in enumerate(names)}
    files: list[Path] = []
    labels: list[int] = []
    for name, paths in by_folder.items():
        if not paths:
            warnings.warn(f"{root / name} holds no images (it keeps its class index "
                          f"{index[name]})", DataWarning, stacklevel=3)
        files += paths
        labels += [index[name]] * len(paths)
    classes = {index[n]: n for n in names if by_folder[n]}
    return Samples(root, files, labels, "wnid" if imagenet else "folders", classes,
                   imagenet=imagenet, num_labels=1000 if imagenet else len(names))


def _parse_label(text: str, where: str) -> tuple[int, bool]:
    """(index, is a WordNet id) of a label's text."""
    if WNID.fullmatch(text):
        return _wnid_index(text, where), True
    try:
        value = int(text)
    except ValueError:
        raise DataError(f"{where}: label {text!r} is neither a class index nor a WordNet "
                        f"id") from None
    if value < 0:
        raise DataError(f"{where}: negative class index {value}")
    return value, False


def _read_labels(path: Path) -> dict[str, tuple[int, bool, str]]:
    """File name -> (index, is a WordNet id, label text) of a csv labels file."""
    if not path.is_file():
        raise DataError(f"{path}: no such labels file")
    out: dict[str, tuple[int, bool, str]] = {}
    rows = csv.reader(io.StringIO(path.read_text("utf-8-sig")))
    for line, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        where = f"{path}:{line}"
        if len(row) < 2 or not row[1]:
            raise DataError(f"{where}: expected filename,label; got {','.join(row)!r}")
        text = row[1].split()[0]  # LOC_val_solution.csv: "<wnid> x0 y0 x1 y1 ..."
        if not out and not WNID.fullmatch(text) and not text.lstrip("-").isdigit():
            continue  # a header row
        if row[0] in out:
            raise DataError(f"{where}: {row[0]} is labelled twice")
        out[row[0]] = (*_parse_label(text, where), text)
    if not out:
        raise DataError(f"{path} holds no filename,label rows")
    return out


def _from_labels_file(root: Path, path: Path) -> Samples:
    table = _read_labels(path)
    files = [Path(f) for f in _list_images(root)]
    if not files:
        raise DataError(f"{root} holds no images ({', '.join(IMG_EXTENSIONS)})")
    labels: list[int] = []
    classes: dict[int, str] = {}
    missing: list[Path] = []
    kinds: set[bool] = set()
    for f in files:
        rel = f.relative_to(root).as_posix()
        entry = table.get(rel) or table.get(f.name) or table.get(f.stem)
        if entry is None:
            missing.append(f)
            continue
        index, is_wnid, text = entry
        kinds.add(is_wnid)
        labels.append(index)
        classes.setdefault(index, text)
    if missing:
        raise DataError(f"{len(missing)} of the {len(files)} images under {root} have no label "
                        f"in {path}, e.g. {missing[0].relative_to(root).as_posix()}")
    imagenet = True in kinds
    return Samples(root, files, labels, "labels", dict(sorted(classes.items())),
                   imagenet=imagenet, num_labels=1000 if imagenet else max(labels) + 1)


class _Images(Dataset):
    """(image tensor, label, error message or "") of each file; an unreadable file's error is
    returned, not raised, so it reaches the main process as one line from any worker."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], transform: Any):
        self.files, self.labels, self.transform = list(files), list(labels), transform
        self.min_size = getattr(transform, "min_size", None)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            image = load_image(self.files[i], min_size=self.min_size)
        except ImageError as e:
            return None, self.labels[i], str(e)
        return self.transform(image), self.labels[i], ""


def _collate(items: list[tuple[torch.Tensor | None, int, str]]
             ) -> tuple[torch.Tensor | None, torch.Tensor, str]:
    """A batch, or the first unreadable file's error (raised by the main process: an exception
    raised in a worker would come back wrapped in the worker's traceback)."""
    error = next((e for _, _, e in items if e), "")
    images = None if error else torch.stack([x for x, _, _ in items])  # type: ignore[misc]
    return images, torch.tensor([y for _, y, _ in items]), error


def _check_classes(samples: Samples, num_classes: int, name: str) -> None:
    if samples.imagenet and num_classes != 1000:
        raise DataError(f"WordNet-id labels are ImageNet-1k class indices; {name} has "
                        f"{num_classes} classes, not 1000")
    if samples.num_labels > num_classes:
        what = "class folders" if samples.layout == "folders" else "classes (largest label + 1)"
        raise DataError(f"{samples.root} has {samples.num_labels} {what}; {name} has only "
                        f"{num_classes}")


def _data_config(model: nn.Module, img_size: int | None, crop_pct: float | None,
                 interpolation: str | None, mean: Sequence[float] | None,
                 std: Sequence[float] | None) -> dict[str, Any]:
    overrides = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation,
                 "mean": mean, "std": std}
    return resolve_data_config(model, **{k: v for k, v in overrides.items() if v is not None})


def _count(model: nn.Module, loader: DataLoader, num_classes: int, progress: Any
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class (images, top-1 hits, top-5 hits) over the loader."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    images, hits1, hits5 = (torch.zeros(num_classes, dtype=torch.long) for _ in range(3))
    start, done = time.monotonic(), 0
    with torch.inference_mode():
        for x, y, error in loader:
            if error or x is None:
                raise DataError(error)
            logits = model(x.to(device=device, dtype=dtype)).float().cpu()
            top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
            correct = top == y[:, None]
            images += torch.bincount(y, minlength=num_classes)
            hits1 += torch.bincount(y, weights=correct[:, 0].double(), minlength=num_classes).long()
            hits5 += torch.bincount(y, weights=correct.any(1).double(),
                                    minlength=num_classes).long()
            done += len(y)
            if progress is not None:
                progress.update(done, time.monotonic() - start, f"top-1 {hits1.sum() / done:.1%}")
    return images, hits1, hits5


def validate(model: nn.Module, root: str | Path | Samples, *, batch_size: int = 64,
             workers: int = 0, img_size: int | None = None, crop_pct: float | None = None,
             interpolation: str | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, labels: str | Path | None = None,
             limit: int | None = None, pretrained: Any = None, progress: str = "off"
             ) -> dict[str, Any]:
    """Top-1 / top-5 (percent) of ``model`` over the images under ``root`` (a folder, or the
    ``Samples`` of ``find_samples``); see the module docstring for the layouts.

    The data config is the model's ``pretrained_cfg`` with the given overrides; ``limit`` keeps
    that many images spread over the set; ``pretrained`` is recorded as what was asked for;
    ``progress``: "off", "auto", "bar" or "lines" (stderr). The model runs in eval mode under
    ``torch.inference_mode`` on its own device. Returns a dict: model, pretrained, data, layout,
    n, top1, top1_err, top5, top5_err, param_count (millions), img_size, input_size, crop_pct,
    interpolation, mean, std, crop_mode, batch_size, seconds, per_class.
    """
    from visionzoo.progress import Progress

    if batch_size < 1 or workers < 0 or (limit is not None and limit < 1):
        raise ValueError("batch_size and limit must be at least 1, workers at least 0")
    samples = root if isinstance(root, Samples) else find_samples(root, labels)
    samples = samples.subset(limit)
    name = str(getattr(model, "model_name", type(model).__name__))
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes <= 0:
        raise DataError(f"{name} has no classifier (num_classes=0); nothing to validate")
    _check_classes(samples, num_classes, name)
    cfg = _data_config(model, img_size, crop_pct, interpolation, mean, std)
    transform = create_transform(cfg, is_training=False)
    loader = DataLoader(_Images(samples.files, samples.labels, transform), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    bar = Progress(len(samples.files), f"validate {name}", progress)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        images, hits1, hits5 = _count(model, loader, num_classes, bar)
    finally:
        bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - start
    return _results(model, name, samples, cfg, images, hits1, hits5, pretrained=pretrained,
                    batch_size=batch_size, seconds=seconds)


def _pct(hits: torch.Tensor | int, n: torch.Tensor | int) -> float:
    return round(100.0 * float(hits) / max(float(n), 1.0), 4)


def _results(model: nn.Module, name: str, samples: Samples, cfg: dict[str, Any],
             images: torch.Tensor, hits1: torch.Tensor, hits5: torch.Tensor, *, pretrained: Any,
             batch_size: int, seconds: float) -> dict[str, Any]:
    n = int(images.sum())
    top1, top5 = _pct(hits1.sum(), n), _pct(hits5.sum(), n)
    per_class = [{"index": i, "class": samples.classes.get(i, str(i)), "images": int(images[i]),
                  "top1": _pct(hits1[i], images[i]), "top5": _pct(hits5[i], images[i])}
                 for i in torch.nonzero(images).flatten().tolist()]
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": name,
        "pretrained": pretrained if pretrained is None or isinstance(pretrained, bool)
        else str(pretrained),
        "data": str(samples.root), "layout": samples.layout, "n": n,
        "top1": top1, "top1_err": round(100.0 - top1, 4),
        "top5": top5, "top5_err": round(100.0 - top5, 4),
        "param_count": round(params / 1e6, 2),
        "img_size": int(cfg["input_size"][-1]), "input_size": list(cfg["input_size"]),
        "crop_pct": cfg["crop_pct"], "interpolation": cfg["interpolation"],
        "mean": list(cfg["mean"]), "std": list(cfg["std"]), "crop_mode": cfg["crop_mode"],
        "batch_size": batch_size, "seconds": round(seconds, 3), "per_class": per_class,
    }


def results_path(path: str | Path) -> Path:
    """``path`` checked to end in .csv or .json (call it before validating, to fail early)."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in RESULT_SUFFIXES:
        raise ValueError(f"results file {path} must end in .csv or .json, not "
                         f"{path.suffix or 'no suffix'}")
    if path.is_dir():
        raise ValueError(f"results file {path} is a directory")
    return path


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write ``results`` as csv (a header of ``CSV_COLUMNS`` and one row) or json (the whole
    dict), by the suffix. Atomic: a temporary file in the same folder, then ``os.replace``; an
    existing file is untouched when anything fails."""
    path = results_path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(results, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow([results[k] for k in CSV_COLUMNS])
        text = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def format_results(r: dict[str, Any]) -> str:
    """A few aligned lines: model, weights, data, data config, top-1, top-5, time."""
    per_sec = r["n"] / r["seconds"] if r["seconds"] > 0 else math.inf
    size = "x".join(map(str, r["input_size"][1:]))
    stats = ", ".join(f"{k} ({', '.join(f'{v:g}' for v in r[k])})" for k in ("mean", "std"))
    rows = [
        ("model", r["model"]),
        ("weights", "random" if r["pretrained"] is False else
         "default" if r["pretrained"] in (True, None) else str(r["pretrained"])),
        ("data", f"{r['data']} ({r['layout']}, {len(r['per_class'])} classes)"),
        ("data config", f"{size}, crop_pct {r['crop_pct']:g}, {r['interpolation']}, "
                        f"{r['crop_mode']} crop, {stats}"),
        ("images", f"{r['n']:,}"),
        ("top-1", f"{r['top1']:.3f} % (err {r['top1_err']:.3f})"),
        ("top-5", f"{r['top5']:.3f} % (err {r['top5_err']:.3f})"),
        ("time", f"{r['seconds']:.1f} s ({per_sec:.1f} images/s)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
