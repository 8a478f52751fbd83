"""port(): weights from torchvision, timm, efficientnet_pytorch and OpenMMLab (mmpretrain)
into our models.

Each supported source network is a ``PortSpec``: which of our models it is, with which flags (its
layout: the v1.5 stride, TF "same" padding, ...), how its state-dict keys map onto ours, and where
its published weights live. ``port(source, name, state_dict)`` builds our model configured as the
source's variant and loads the converted weights strictly: every source tensor must land on one of
ours with the same shape, and every one of ours must be filled, or a ``PortError`` names the keys.

One module per family (``ports/resnet.py``, ...) registers its specs; this module has the
machinery: key renaming, strict loading, and download with hash check. The pretrained tags and
``create_model`` sit above it (``pretrained.py``, ``factory.py``).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from visionzoo.registry import builder

__all__ = ["PortError", "PortSpec", "build_ported", "cache_dir", "check_layout", "download",
           "list_ports", "load_converted", "load_state_file", "port", "register_port",
           "rename_keys"]

SOURCES = ("torchvision", "timm", "efficientnet_pytorch", "openmmlab")
# ports/<family>.py, imported on first use
_FAMILY_MODULES = ("resnet", "senet", "classic", "mobile", "efficientnet", "swin",
                   "shufflenet")

StateDict = dict[str, torch.Tensor]


class PortError(ValueError):
    """Weights that do not fit: unknown source/name, unmatched keys, shapes, or layout flags."""


@dataclass(frozen=True)
class PortSpec:
    source: str
    name: str  # the source library's model name
    model: str  # our registered name
    convert: Callable[[StateDict], StateDict]
    overrides: Mapping[str, Any] = field(default_factory=dict)  # our flags for its layout
    pretrained_cfg: Mapping[str, Any] | None = None
    url: str | None = None  # published weights (hash prefix in the file name, torch.hub style)
    num_classes: int = 1000
    # one source name for several of our networks (torchvision's mobilenet_v2(width_mult=w)):
    # (converted state dict) -> (our registered name, extra flags), read from the tensor shapes
    resolve: Callable[[StateDict], tuple[str, Mapping[str, Any]]] | None = None


_PORTS: dict[tuple[str, str], PortSpec] = {}


def register_port(source: str, name: str, model: str, convert: Callable[[StateDict], StateDict],
                  overrides: Mapping[str, Any] | None = None,
                  pretrained_cfg: Mapping[str, Any] | None = None, url: str | None = None,
                  num_classes: int = 1000,
                  resolve: Callable[[StateDict], tuple[str, Mapping[str, Any]]] | None = None,
                  ) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if (source, name) in _PORTS:
        raise ValueError(f"port {source}:{name} is already registered")
    _PORTS[(source, name)] = PortSpec(source, name, model, convert, dict(overrides or {}),
                                      pretrained_cfg, url, num_classes, resolve)


def _ensure_loaded() -> None:
    for fam in _FAMILY_MODULES:
        importlib.import_module(f"visionzoo.ports.{fam}")


def list_ports(source: str | None = None) -> list[tuple[str, str]]:
    _ensure_loaded()
    return sorted(k for k in _PORTS if source is None or k[0] == source)


def get_port(source: str, name: str) -> PortSpec:
    _ensure_loaded()
    if source not in SOURCES:
        raise PortError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    try:
        return _PORTS[(source, name)]
    except KeyError:
        known = [n for s, n in _PORTS if s == source]
        import difflib

        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PortError(f"no port for {source} model {name!r}{hint}") from None


# ---------------------------------------------------------------------------------------------
# key conversion helpers used by the family modules
# ---------------------------------------------------------------------------------------------


def rename_keys(sd: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]],
                drop: Iterable[str] = ()) -> StateDict:
    """Rename every key by the first regex rule that matches it (``re.fullmatch``).

    A key that no rule matches and no ``drop`` pattern covers is an error: a port never ignores a
    tensor silently.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    dropped = [re.compile(p) for p in drop]
    out: StateDict = {}
    unmatched = []
    for key, value in sd.items():
        if any(d.fullmatch(key) for d in dropped):
            continue
        for pat, repl in compiled:
            if pat.fullmatch(key):
                out[pat.sub(repl, key)] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise PortError(f"{len(unmatched)} source keys have no counterpart, e.g. "
                        f"{', '.join(unmatched[:5])}")
    return out


def strip_prefix(sd: Mapping[str, torch.Tensor],
                 prefixes: Iterable[str] = ("module.",)) -> StateDict:
    """Remove DataParallel/DDP-style prefixes."""
    out = dict(sd)
    for prefix in prefixes:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str = "weights",
                skip: Iterable[str] = ()) -> None:
    """Load with a clear error listing missing keys, unexpected keys and shape mismatches.

    BatchNorm ``num_batches_tracked`` counters absent from old checkpoints are filled with zeros.
    ``skip``: key prefixes of ours to leave as initialised (e.g. the classifier when fine-tuning).
    """
    skip = tuple(skip)
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith(skip) or not skip}
    missing = [k for k in own if k not in sd and not (skip and k.startswith(skip))
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: {tuple(sd[k].shape)} vs ours {tuple(own[k].shape)}" for k in sd
              if k in own and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:3])})")
    if problems:
        name = getattr(model, "model_name", type(model).__name__)
        raise PortError(f"{what} do not fit {name}: " + "; ".join(problems))
    full = {k: sd.get(k, own[k]) for k in own}
    model.load_state_dict(full, strict=True)


# ---------------------------------------------------------------------------------------------
# files: reading, download, cache
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$VISIONZOO_CACHE`` or ``~/.cache/visionzoo``."""
    return Path(os.environ.get("VISIONZOO_CACHE", Path.home() / ".cache" / "visionzoo"))


def _hash_prefix(url: str) -> str | None:
    m = re.search(r"-([a-f0-9]{6,})\.[a-z]+$", url.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, directory: str | Path | None = None, sha256: str | None = None) -> Path:
    """Fetch ``url`` into the cache once; check the SHA-256 (a prefix is enough, as in the
    torch.hub file names ``resnet50-0676ba61.pth``). A cached file is re-checked on every use and
    a corrupt one is refused, not silently used. ``file://`` URLs work (offline mirrors, tests).
    """
    directory = Path(directory) if directory is not None else cache_dir()
    expected = sha256 or _hash_prefix(url)
    target = directory / url.rsplit("/", 1)[-1]
    if not target.exists():
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as resp:  # noqa: S310
                shutil.copyfileobj(resp, out)
            if expected and not sha256_file(tmp).startswith(expected):
                raise PortError(f"download of {url} does not match its published hash {expected}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    elif expected and not sha256_file(target).startswith(expected):
        raise PortError(f"cached file {target} does not match the published hash {expected} "
                        f"(corrupt or truncated); delete it to download again")
    return target


def load_state_file(path: str | Path) -> StateDict:
    """A state dict from a ``.safetensors`` file or a torch ``.pth``/``.pt``/``.bin`` file.

    Torch files are read with ``weights_only=True`` (no arbitrary unpickling). Checkpoints that
    wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader error means an unreadable file
        raise PortError(f"cannot read weights from {path}: truncated or not a weights file "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model", "model_state", "ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PortError(f"{path} does not hold a state dict of tensors")
    return strip_prefix(sd)


# ---------------------------------------------------------------------------------------------
# port() and the pretrained path of create_model()
# ---------------------------------------------------------------------------------------------


def check_layout(spec: PortSpec, config: Mapping[str, Any], what: str) -> None:
    clashes = [f"{k}={config[k]!r} (its weights need {k}={v!r})"
               for k, v in spec.overrides.items() if k in config and config[k] != v]
    if clashes:
        raise PortError(f"{spec.source} {spec.name} weights cannot go into {what} built with "
                        + ", ".join(clashes))


def port(source: str, name: str, state_dict: Mapping[str, torch.Tensor] | str | Path | None = None,
         *, model: nn.Module | None = None, num_classes: int | None = None) -> nn.Module:
    """Our model, configured as ``source``'s ``name``, with its weights (see module docstring).

    ``state_dict``: the source model's state dict, or a path to its file; ``None`` downloads the
    published weights (network). ``model``: load into this existing model instead, after checking
    that its layout flags agree with the source's. ``num_classes``: keep all but the classifier
    when it differs from the source's.
    """
    spec = get_port(source, name)
    if state_dict is None:
        if spec.url is None:
            raise PortError(f"{source} {name}: no published weights URL known; pass state_dict")
        state_dict = download(spec.url)
    if isinstance(state_dict, (str, Path)):
        state_dict = load_state_file(state_dict)
    converted = spec.convert(strip_prefix(dict(state_dict)))
    if spec.resolve is not None:  # which of our networks these tensors are (e.g. the width)
        ours, extra = spec.resolve(converted)
        spec = replace(spec, model=ours, overrides={**spec.overrides, **extra})
    if model is None:
        model = build_ported(spec, num_classes if num_classes is not None else spec.num_classes)
    else:
        check_layout(spec, _flags_of(model, spec), f"this {getattr(model, 'model_name', 'model')}")
    load_converted(model, converted, spec)
    return model


def _flags_of(model: nn.Module, spec: PortSpec) -> dict[str, Any]:
    """The model's values of the flags the source layout sets (models keep each layout flag as an
    attribute named like its constructor argument)."""
    missing = object()
    flags = {k: getattr(model, k, missing) for k in spec.overrides}
    return {k: v for k, v in flags.items() if v is not missing}


def build_ported(spec: PortSpec, num_classes: int, **extra: Any) -> nn.Module:
    config = {"num_classes": num_classes, **spec.overrides, **extra}
    model = builder(spec.model)(**config)
    model.model_name = spec.model
    model.model_config = config
    if spec.pretrained_cfg:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **spec.pretrained_cfg}
    return model


def load_converted(model: nn.Module, converted: StateDict, spec: PortSpec) -> None:
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):  # a model's own resizing on load (e.g. Swin's bias tables to its window)
        converted = adapt(converted)
    head = _head_prefix(model)
    own = model.state_dict()
    skip = ()
    if head and any(k.startswith(head) and k in own and own[k].shape != v.shape
                    for k, v in converted.items()):
        skip = (head,)  # another num_classes: fine-tuning, keep the fresh classifier
    if getattr(model, "num_classes", 1) == 0 and head:
        converted = {k: v for k, v in converted.items() if not k.startswith(head)}
    load_strict(model, converted, f"{spec.source} {spec.name} weights", skip=skip)


def _head_prefix(model: nn.Module) -> str | None:
    clf = model.get_classifier() if hasattr(model, "get_classifier") else None
    if clf is None:
        return None
    for name, mod in model.named_modules():
        if mod is clf:
            return name + "."
    return None
