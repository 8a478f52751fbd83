"""The training state a run keeps in ``last.safetensors`` beside its weights (see
``visionzoo.checkpoint`` for the file format), so that ``--resume`` continues to the same final
weights as a run never interrupted.

Tensors are safetensors entries next to the model's: the optimizer state (``__optimizer__.*``),
the EMA weights (``__ema__.*``) and the RNG states (``__rng__.*``). Everything else is JSON in the
header's ``extra["train_state"]``: epoch, step, schedule position, metric history, the totals of a
partial epoch, the gradient scaler of float16 training, the Python RNG state. No pickle.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["checkpoint_position", "load_train_state", "pack_optimizer", "remove_stale_temps",
           "save_train_state", "unpack_optimizer"]


def pack_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``opt.state_dict()`` split into JSON (hyper-parameters, scalar state) and tensors."""
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


def unpack_optimizer(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
                     ) -> dict[str, Any]:
    """The optimizer state dict ``pack_optimizer`` split (for ``load_state_dict``)."""
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


def save_train_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                     ema: Any = None, scaler: torch.amp.GradScaler | None = None,
                     state: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Write ``model``'s weights with the optimizer, EMA, scaler and RNG states (atomically).

    ``state``: the loop's position and history (JSON); ``extra``: more header JSON (class names,
    the resolved configuration)."""
    from visionzoo.checkpoint import save_checkpoint

    opt_meta, opt_t = pack_optimizer(optimizer)
    tensors = {**opt_t, **_rng_tensors()}
    if ema is not None:
        tensors.update({f"__ema__.{k}": v for k, v in ema.module.state_dict().items()})
    py = random.getstate()
    full = {**state, "optimizer": opt_meta,
            "ema_updates": ema.updates if ema is not None else 0,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "python_rng": [py[0], list(py[1]), py[2]]}
    save_checkpoint(model, path, tensors=tensors, extra={**extra, "train_state": full})


def load_train_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                     ema: Any = None, scaler: torch.amp.GradScaler | None = None
                     ) -> tuple[dict[str, Any], bool]:
    """Load what ``save_train_state`` wrote into ``model``, ``optimizer``, ``ema`` and ``scaler``
    and restore the RNGs. Returns the JSON state and whether EMA weights were found (a run that
    switches EMA on at resume starts its average from the loaded weights)."""
    from visionzoo.factory import load_checkpoint

    _, header, extra_t = load_checkpoint(path, model=model, return_extra=True)
    st = header["extra"]["train_state"]
    optimizer.load_state_dict(unpack_optimizer(st["optimizer"], extra_t))
    ema_found = False
    if ema is not None:
        ema_sd = {k[len("__ema__."):]: v for k, v in extra_t.items() if k.startswith("__ema__.")}
        if ema_sd:
            ema.module.load_state_dict(ema_sd)
            ema.updates = st.get("ema_updates", 0)
            ema_found = True
    if scaler is not None and st.get("scaler"):
        scaler.load_state_dict(st["scaler"])
    _restore_rng(extra_t, st.get("python_rng"))
    return st, ema_found


def remove_stale_temps(run_dir: Path) -> None:
    """Temporary files left by a process killed while writing (the rename never happened)."""
    for p in run_dir.glob("*.safetensors.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


def checkpoint_position(path: Path) -> str:
    """Where the training checkpoint ``path`` stands, in words ("epoch 3, step 5")."""
    from visionzoo.checkpoint import read_header

    try:
        st = (read_header(path) or {})["extra"]["train_state"]
        return f"epoch {st['epoch'] + 1}, step {st['step']}" if st["step"] else \
            f"end of epoch {st['epoch']}"
    except Exception:  # noqa: BLE001
        return "unreadable"
