"""Dataset layouts, deterministic samplers and the loaders built from them.

Three on-disk layouts are recognised by ``open_dataset(spec)``:

* **ImageFolder**: ``D/train/<class>/*.jpg`` and ``D/val/<class>/...`` (``validation/`` or
  ``test/`` also name the evaluation split). Classes are the sorted names of the folders of
  ``train/`` that hold images; a folder without any is left out with a ``DataWarning``.
* **IDX** (Fashion-MNIST, MNIST): ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``. The keyword ``fashion-mnist`` looks in
  ``$VISIONZOO_DATA/fashion-mnist``, the user cache ``~/.cache/visionzoo/fashion-mnist`` (where
  ``visionzoo download fashion-mnist`` puts it; ``$XDG_CACHE_HOME/visionzoo`` when that is set)
  and Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).
* **CIFAR-10 / CIFAR-100** in their "python version" layout (``data_batch_1..5``/``test_batch``/
  ``batches.meta``, or ``train``/``test``/``meta``), or the folder that holds
  ``cifar-10-batches-py`` / ``cifar-100-python``. Those files are Python pickles; they are read
  with an unpickler that only rebuilds plain containers and numpy arrays, so a hostile file
  cannot run code.

IDX and CIFAR images are held in memory as one uint8 tensor (N, C, H, W); ImageFolder images are
decoded on demand in the loader's worker processes. An image that cannot be decoded is *skipped*:
the dataset returns a ``Skipped`` marker, ``collate`` drops it from the batch and reports it, and
the engine counts and reports it; it is never fatal.

Determinism: ``EpochSampler`` shards a per-epoch permutation across ranks exactly as
``torch.utils.data.DistributedSampler`` does (pad to a multiple of the world size, rank ``r``
takes positions ``r::world``), so rank ``r``'s step ``k`` with per-rank batch ``B/W`` holds the
same images as step ``k`` of one process with batch ``B``. It also hands every sample a seed
derived from (seed, epoch, index), and the dataset seeds the random transforms with it, so the
augmentation of an image does not depend on which worker or rank loads it, and a run resumed in
the middle of an epoch (``skip``) sees exactly the batches it would have seen.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import signal
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

__all__ = [
    "DataError",
    "DataSource",
    "DataWarning",
    "EpochSampler",
    "ShardSampler",
    "Skipped",
    "Split",
    "collate",
    "default_download_root",
    "make_loader",
    "mix_seed",
    "open_dataset",
    "user_cache_root",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pbm")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
# keyword -> folder name searched under each data root
KEYWORDS = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
            "mnist": "mnist", "cifar10": "cifar-10", "cifar-10": "cifar-10",
            "cifar100": "cifar-100", "cifar-100": "cifar-100"}
# keyword folders that `visionzoo download` (visionzoo.data.download) can fetch
DOWNLOADABLE = ("fashion-mnist",)
# searched after $VISIONZOO_DATA and the user cache (``user_cache_root()``)
DATA_ROOTS = ("/usr/share/datasets",)


class DataError(ValueError):
    """A dataset that cannot be found or read (reported in one line by the CLI)."""


class DataWarning(UserWarning):
    """Something in a dataset that is left out (an empty class folder); the CLI prints it in
    one line."""


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from several integers (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """Marker for an image that could not be decoded."""

    path: str
    reason: str


class CorruptImage(Exception):
    pass


class Split:
    """One split of a dataset: ``len()``, ``labels`` and ``load(i) -> (image, label)``.

    The image is a uint8 tensor (C, H, W) for in-memory splits and a PIL image for files.
    """

    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> tuple[Any, int]:
        raise NotImplementedError


class ArraySplit(Split):
    def __init__(self, images: torch.Tensor, labels: Sequence[int]):
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise DataError(f"expected uint8 images (N, C, H, W), got {images.dtype} "
                            f"{tuple(images.shape)}")
        if len(labels) != images.shape[0]:
            raise DataError(f"{images.shape[0]} images but {len(labels)} labels")
        self.images = images
        self.labels = [int(v) for v in labels]

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


class FileSplit(Split):
    def __init__(self, files: Sequence[tuple[str, int]], mode: str = "RGB"):
        self.files = list(files)
        self.labels = [label for _, label in self.files]
        self.mode = mode  # PIL mode the images are converted to ("RGB" or "L")

    def load(self, index: int) -> tuple[Any, int]:
        # the one decoder predict uses too: EXIF rotation, alpha on white, 16-bit, palette, CMYK
        from visionzoo.data.transforms import ImageError, load_image

        path, label = self.files[index]
        try:
            img = load_image(path)  # decoded now: a truncated file fails here, not in a transform
        except ImageError as e:
            raise CorruptImage(str(e)) from None
        except Exception as e:  # noqa: BLE001 - any other decoder failure also means "skip it"
            msg = str(e).splitlines()[0][:120] if str(e) else ""
            raise CorruptImage(f"{path}: {type(e).__name__}: {msg}" if msg else
                               f"{path}: {type(e).__name__}") from None
        return (img if self.mode == "RGB" else img.convert(self.mode)), label


@dataclass
class DataSource:
    """A dataset on disk: its splits, class names and what the transforms need to know."""

    name: str  # "fashion-mnist", "cifar-10", or the folder name
    root: str
    layout: str  # "imagefolder" | "idx" | "cifar"
    classes: list[str]
    splits: dict[str, Split]
    train_split: str = "train"
    eval_split: str = "val"
    channels: int = 3
    native_size: int | None = None  # H = W of in-memory images; None for files of any size
    stats: dict[str, list[float]] = field(default_factory=dict)  # per-channel mean/std (0..1)

    def split(self, name: str | None) -> Split:
        name = name or self.eval_split
        if name not in self.splits:
            raise DataError(f"{self.name} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def set_mode(self, mode: str) -> None:
        """Decode files as "RGB" or "L" (grayscale)."""
        for s in self.splits.values():
            if isinstance(s, FileSplit):
                s.mode = mode


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> dict[str, list[float]]:
    """Per-channel mean and std (in 0..1) of uint8 images (N, C, H, W)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        total += x.sum((0, 2, 3))
        total_sq += (x * x).sum((0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    return {"mean": [round(v, 4) for v in mean.tolist()],
            "std": [round(v, 4) for v in std.tolist()]}


# ---------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST / MNIST)
# ---------------------------------------------------------------------------------------------

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{path}: only unsigned-byte IDX data is supported (type {data[2]:#x})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    count = 1
    for d in dims:
        count *= d
    if len(body) != count:
        raise DataError(f"{path} is truncated: {len(body)} bytes of data, header says {count}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _open_idx(root: Path, name: str) -> DataSource:
    splits: dict[str, Split] = {}
    for split, (img_stem, lbl_stem) in _IDX_FILES.items():
        img, lbl = _find_file(root, img_stem), _find_file(root, lbl_stem)
        if img is None or lbl is None:
            hint = (f" (`visionzoo download {name} --root {root.parent}` fetches what is "
                    f"missing)" if name in DOWNLOADABLE else "")
            raise DataError(f"{root}: missing {img_stem}[.gz] or {lbl_stem}[.gz]{hint}")
        images = read_idx(img)
        if images.ndim != 3:
            raise DataError(f"{img}: expected (N, H, W) images, got shape {tuple(images.shape)}")
        splits[split] = ArraySplit(images.unsqueeze(1), read_idx(lbl).tolist())  # (N, 1, H, W)
    classes_txt = root / "classes.txt"
    if classes_txt.is_file():
        classes = [ln.strip() for ln in classes_txt.read_text().splitlines() if ln.strip()]
    elif "fashion" in name.lower() or "fashion" in str(root).lower():
        classes = list(FASHION_MNIST_CLASSES)
    else:
        classes = [str(i) for i in range(max(max(s.labels) for s in splits.values()) + 1)]
    train = splits["train"]
    assert isinstance(train, ArraySplit)
    return DataSource(name=name, root=str(root), layout="idx", classes=classes, splits=splits,
                      train_split="train", eval_split="test", channels=1,
                      native_size=train.images.shape[-1], stats=channel_stats(train.images))


# ---------------------------------------------------------------------------------------------
# CIFAR python-pickle layout
# ---------------------------------------------------------------------------------------------

# Only what a CIFAR batch needs: numpy arrays and their dtypes (numpy 1.x and 2.x module names).
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as e:
        raise DataError(f"{path} is not a CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch (a {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_images(batch: dict[str, Any], path: Path) -> torch.Tensor:
    import numpy as np

    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    return torch.from_numpy(data.copy()).reshape(-1, 3, 32, 32)  # rows are R, G, B planes


def _open_cifar(root: Path, name: str) -> DataSource:
    if (root / "data_batch_1").is_file():  # CIFAR-10
        meta = _load_cifar_pickle(root / "batches.meta") if (root / "batches.meta").is_file() \
            else {}
        label_key, names_key = "labels", "label_names"
        files = {"train": sorted(root.glob("data_batch_[0-9]*"), key=lambda p: int(p.name[11:])),
                 "test": [root / "test_batch"]}
        default_name = "cifar-10"
    else:  # CIFAR-100
        meta = _load_cifar_pickle(root / "meta") if (root / "meta").is_file() else {}
        label_key, names_key = "fine_labels", "fine_label_names"
        files = {"train": [root / "train"], "test": [root / "test"]}
        default_name = "cifar-100"
    splits: dict[str, Split] = {}
    for split, paths in files.items():
        images, labels = [], []
        for p in paths:
            if not p.is_file():
                raise DataError(f"{root}: missing {p.name}")
            batch = _load_cifar_pickle(p)
            if label_key not in batch:
                raise DataError(f"{p}: no {label_key!r} in the batch")
            images.append(_cifar_images(batch, p))
            labels.extend(int(v) for v in batch[label_key])
        splits[split] = ArraySplit(torch.cat(images), labels)
    num = max(max(s.labels) for s in splits.values()) + 1
    classes = [str(c.decode() if isinstance(c, bytes) else c) for c in meta.get(names_key, [])]
    if len(classes) < num:
        classes = [str(i) for i in range(num)]
    train = splits["train"]
    assert isinstance(train, ArraySplit)
    return DataSource(name=default_name if name in (root.name, root.parent.name) else name,
                      root=str(root),
                      layout="cifar", classes=classes, splits=splits, train_split="train",
                      eval_split="test", channels=3, native_size=32,
                      stats=channel_stats(train.images))


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def _list_images(folder: Path) -> list[str]:
    """The image files under ``folder`` (any depth, symlinks followed), sorted."""
    files = []
    for dirpath, _, names in sorted(os.walk(folder, followlinks=True)):
        files += [os.path.join(dirpath, n) for n in sorted(names)
                  if n.lower().endswith(IMG_EXTENSIONS)]
    return files


def _scan_classes(split_dir: Path) -> tuple[dict[str, list[str]], list[Path]]:
    """Class folder name -> its image files, and the folders that hold no image."""
    found: dict[str, list[str]] = {}
    empty: list[Path] = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = _list_images(folder)
        if files:
            found[folder.name] = files
        else:
            empty.append(folder)
    return found, empty


def _warn_empty(folders: Sequence[Path], what: str) -> None:
    for folder in folders:
        warnings.warn(f"{folder} holds no images: {what}", DataWarning, stacklevel=3)


def _scan_folder(split_dir: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(file, label) of every image of an evaluation split; its classes must be training
    classes (a folder without images is skipped with a ``DataWarning``)."""
    by_class, empty = _scan_classes(split_dir)
    _warn_empty(empty, "skipped")
    files = []
    for cls, paths in by_class.items():
        if cls not in class_to_idx:
            raise DataError(f"{split_dir / cls}: class {cls!r} is not among the training classes "
                            f"({', '.join(class_to_idx)})")
        files += [(p, class_to_idx[cls]) for p in paths]
    return files


def _open_imagefolder(root: Path, name: str) -> DataSource:
    # the layout is checked before the (possibly millions of) files are listed
    train_dir = root / "train"
    eval_names = [c for c in ("val", "validation", "test") if (root / c).is_dir()]
    if not eval_names:
        raise DataError(f"{root} has train/ but no val/ (or validation/, test/) folder")
    by_class, empty = _scan_classes(train_dir)
    if not by_class:
        names = f"; {', '.join(p.name for p in empty)} hold none" if empty else ""
        raise DataError(f"{train_dir} has no class folders with images "
                        f"({', '.join(IMG_EXTENSIONS)}){names}")
    # an empty folder would be a class no image teaches, shifting the labels of the others
    _warn_empty(empty, "it is not a class")
    classes = list(by_class)  # sorted folder names
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {"train": FileSplit(
        [(p, class_to_idx[c]) for c, paths in by_class.items() for p in paths])}
    for cand in eval_names:
        splits[cand] = FileSplit(_scan_folder(root / cand, class_to_idx))
    return DataSource(name=name, root=str(root), layout="imagefolder", classes=classes,
                      splits=splits, train_split="train", eval_split=eval_names[0], channels=3)


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------


def user_cache_root() -> Path | None:
    """``$XDG_CACHE_HOME/visionzoo``, else ``~/.cache/visionzoo``: a place every user can write
    without root, where ``visionzoo download`` puts datasets by default. None when there is no
    home directory to expand (a service account without one): then only $VISIONZOO_DATA and
    the system roots are searched."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    try:
        base = Path(xdg) if os.path.isabs(xdg) else Path("~/.cache").expanduser()
    except RuntimeError:  # no HOME and no passwd entry
        return None
    return base / "visionzoo"


def _env_roots() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get("VISIONZOO_DATA", "").split(os.pathsep)
            if p]


def _data_roots() -> list[Path]:
    """Where a keyword's folder is searched, in order: each $VISIONZOO_DATA entry, the user
    cache, then the system roots (Debian's /usr/share/datasets)."""
    cache = user_cache_root()
    return _env_roots() + ([cache] if cache else []) + [Path(p) for p in DATA_ROOTS]


def default_download_root() -> Path:
    """Where ``visionzoo download`` writes when given no --root: the first $VISIONZOO_DATA
    entry, else the user cache (so the keyword then finds what was downloaded)."""
    env = _env_roots()
    if env:
        return env[0]
    cache = user_cache_root()
    if cache is None:
        raise DataError("no home directory for the default cache ~/.cache/visionzoo: set "
                        "VISIONZOO_DATA or pass --root DIR")
    return cache


def _holds_something(folder: Path) -> bool:
    """A keyword's candidate folder: skipped when empty (what a failed first download leaves
    behind), kept when it cannot be listed, so that reading it reports why."""
    if not folder.is_dir():
        return False
    try:
        return any(folder.iterdir())
    except OSError:
        return True


def find_dataset(spec: str) -> tuple[Path, str]:
    """Resolve a keyword (``fashion-mnist``, ``cifar10`` ...) or a path to (folder, name)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{spec} is a file; --data takes a dataset folder or a keyword")
        return path, path.resolve().name
    key = spec.lower()
    if key in KEYWORDS:
        folder = KEYWORDS[key]
        tried = [r / folder for r in _data_roots()]
        for cand in tried:
            if _holds_something(cand):
                return cand, folder
        if folder in DOWNLOADABLE:
            how = (f"get it with `visionzoo download {folder}` (no root needed; Debian: apt "
                   f"install dataset-{folder}), or pass a folder")
        else:
            how = (f"put its files in {tried[0]} (or set VISIONZOO_DATA to the folder above "
                   f"{folder}/), or pass a folder")
        raise DataError(f"dataset {spec!r} not found in {', '.join(map(str, tried))}; {how}")
    raise DataError(f"no such dataset folder: {spec} (keywords: fashion-mnist, mnist, cifar10, "
                    f"cifar100; or a path)")


def open_dataset(spec: str) -> DataSource:
    """Open a dataset by keyword or path, detecting its layout (see the module docstring)."""
    root, name = find_dataset(spec)
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if (root / sub).is_dir():
            return _open_cifar(root / sub, name)
    if (root / "train").is_dir():
        return _open_imagefolder(root, name)
    if _find_file(root, _IDX_FILES["train"][0]) is not None:
        return _open_idx(root, name)
    if (root / "data_batch_1").is_file() or ((root / "train").is_file()
                                              and (root / "test").is_file()):
        return _open_cifar(root, name)
    raise DataError(f"{root}: unrecognised layout; expected train/ and val/ class folders, "
                    f"Fashion-MNIST IDX files, or CIFAR python batches")


# ---------------------------------------------------------------------------------------------
# dataset, samplers, loader
# ---------------------------------------------------------------------------------------------


class TransformedSplit(Dataset):
    """A split with its transform. Keys are an index, or (index, seed) from ``EpochSampler``:
    the random transforms then draw from a generator seeded with that seed."""

    def __init__(self, split: Split, transform: Callable[[Any], torch.Tensor]):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | Skipped:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            image, label = self.split.load(index)
        except CorruptImage as e:
            path = self.split.files[index][0] if isinstance(self.split, FileSplit) else str(index)
            return Skipped(path, str(e))
        if seed is not None:
            # torchvision's random transforms draw from the global CPU generator. (Without
            # workers this reseeds the main process's generator too: harmless, the engine
            # reseeds it at every step; forking it would cost more than the transforms.)
            torch.default_generator.manual_seed(seed)
        return self.transform(image), label


def collate(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
    """Stack the decodable samples; return the skipped ones beside the batch."""
    good = [b for b in batch if not isinstance(b, Skipped)]
    skipped = [b for b in batch if isinstance(b, Skipped)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    x = torch.stack([b[0] for b in good])
    y = torch.tensor([b[1] for b in good], dtype=torch.long)
    return x, y, skipped


class EpochSampler(Sampler):
    """Deterministic, resumable, distributed sampler (see the module docstring).

    Yields ``(index, sample_seed)``. ``set_epoch(epoch, skip)`` selects the epoch's permutation
    and drops this rank's first ``skip`` samples (to resume in the middle of an epoch).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world: int = 1):
        if n <= 0:
            raise DataError("the training split is empty")
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.per_rank = -(-n // world)  # ceil: the last positions repeat the first (padding)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, "perm", self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order += (order * (total // self.n + 1))[: total - self.n]
        return order[self.rank::self.world][self.skip:]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices():
            yield i, mix_seed(self.seed, "aug", self.epoch, i)

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)


class ShardSampler(Sampler):
    """Evaluation sharding: rank ``r`` takes ``r::world``, no padding, so sums over ranks count
    every image exactly once."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group: the workers leave it to the main process, which
    # finishes its step, saves a checkpoint and shuts them down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, *, drop_last: bool,
                workers: int, pin_memory: bool = False) -> DataLoader:
    """A loader over explicit batches (the sampler decides the order)."""
    batches = BatchSampler(sampler, batch_size, drop_last=drop_last)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_worker_init)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0),
                      **kwargs)
