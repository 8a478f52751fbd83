"""Checkpoints: safetensors tensors plus a JSON header naming the model and its configuration.

No pickle anywhere: a checkpoint can be opened from an untrusted source without running code.
The header (safetensors metadata key ``visionzoo``) holds the registered name, the constructor
configuration, the ``pretrained_cfg`` and any extra JSON (class names, training state summary), so
``load_checkpoint(path)`` rebuilds the exact model, and loading into a model of another
architecture or layout is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "load_checkpoint", "read_header", "save_checkpoint"]

FORMAT_VERSION = 1
HEADER_KEY = "visionzoo"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, or for another model."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def save_checkpoint(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None,
                    tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model``'s weights and header atomically (temporary file, then rename).

    ``tensors``: more tensors to store beside the weights (keys must not clash with the model's).
    """
    from safetensors.torch import save_file

    name = getattr(model, "model_name", "")
    if not name:
        raise CheckpointError("save_checkpoint needs a model built by visionzoo.create_model "
                              "(it records the model name and configuration)")
    header = {
        "format": FORMAT_VERSION,
        "model": name,
        "config": {k: _jsonable(v) for k, v in getattr(model, "model_config", {}).items()},
        "pretrained_cfg": {k: _jsonable(v) for k, v in
                           getattr(model, "pretrained_cfg", {}).items()},
        "extra": extra or {},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for k, v in (tensors or {}).items():
        if k in state:
            raise CheckpointError(f"extra tensor {k!r} clashes with a model key")
        state[k] = v.detach().contiguous().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={HEADER_KEY: json.dumps(header)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_header(path: str | Path) -> dict[str, Any] | None:
    """The visionzoo header of a safetensors file (None for a plain safetensors file)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is truncated or not a safetensors checkpoint "
                              f"({str(e).splitlines()[0][:160]})") from None
    raw = meta.get(HEADER_KEY)
    return json.loads(raw) if raw else None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is truncated or corrupt "
                              f"({str(e).splitlines()[0][:160]})") from None


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    return_extra: bool = False) -> Any:
    """Rebuild the model a checkpoint was saved from (or load into ``model`` after checking that
    it is the same architecture and configuration). ``return_extra`` also returns
    ``(header, extra_tensors)``."""
    from visionzoo.ports import PortError, load_strict
    from visionzoo.registry import create_model

    path = Path(path)
    header = read_header(path)
    if header is None:
        raise CheckpointError(f"{path} has no visionzoo header: it is a plain weights file; use "
                              f"visionzoo.port() or create_model(..., pretrained=PATH)")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {header.get('format')!r}")
    state = _read_tensors(path)
    name, config = header["model"], header.get("config", {})
    if model is None:
        model = create_model(name, **config)
    else:
        own_name = getattr(model, "model_name", type(model).__name__)
        own_cfg = {k: _jsonable(v) for k, v in getattr(model, "model_config", {}).items()}
        if own_name != name:
            raise CheckpointError(f"{path} holds a {name} checkpoint; it cannot load into "
                                  f"{own_name}")
        diff = {k for k in set(config) | set(own_cfg) if config.get(k) != own_cfg.get(k)}
        if diff:
            pairs = ", ".join(f"{k}: checkpoint {config.get(k)!r} vs model {own_cfg.get(k)!r}"
                              for k in sorted(diff))
            raise CheckpointError(f"{path} was saved from {name} with another configuration "
                                  f"({pairs})")
    own_keys = set(model.state_dict())
    weights = {k: v for k, v in state.items() if k in own_keys}
    extra_tensors = {k: v for k, v in state.items() if k not in own_keys}
    try:
        load_strict(model, weights, f"checkpoint {path}")
    except PortError as e:
        raise CheckpointError(str(e)) from None
    if header.get("pretrained_cfg"):
        model.pretrained_cfg = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in header["pretrained_cfg"].items()}
    if return_extra:
        return model, header, extra_tensors
    return model
