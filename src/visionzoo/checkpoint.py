"""Checkpoints: safetensors tensors plus a JSON header naming the model and its configuration.

No pickle anywhere: a checkpoint can be opened from an untrusted source without running code.
The header (safetensors metadata key ``visionzoo``) holds the registered name, the constructor
configuration, the ``pretrained_cfg`` and any extra JSON (class names, training state summary), so
``visionzoo.load_checkpoint(path)`` (in ``factory.py``, which can build models) rebuilds the exact
model, and loading into a model of another architecture or layout is refused. This module is the
file format only and imports nothing of visionzoo.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "read_header", "read_tensors", "save_checkpoint"]

FORMAT_VERSION = 1
HEADER_KEY = "visionzoo"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, or for another model."""


def jsonable(value: Any) -> Any:
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
        "config": {k: jsonable(v) for k, v in getattr(model, "model_config", {}).items()},
        "pretrained_cfg": {k: jsonable(v) for k, v in
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


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is truncated or corrupt "
                              f"({str(e).splitlines()[0][:160]})") from None
