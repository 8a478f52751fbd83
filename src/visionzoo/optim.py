"""Parameter groups, optimizers, learning-rate schedules and the weight EMA of ``visionzoo train``.

SGD (optionally Nesterov), AdamW, PyTorch's RMSprop, and ``rmsprop_tf``: RMSprop as TensorFlow's
``RMSPropOptimizer`` that the Inception-v3 / MobileNet / EfficientNet papers trained with (square
average starts at 1, epsilon inside the square root, learning rate inside the momentum).
Weight decay skips one-dimensional parameters (norm scales and shifts, biases) and the names a
model lists in ``no_weight_decay()``, unless ``decay_norm_bias``.

The learning rate follows a per-step schedule (``lr_at``): linear warm-up from ``warmup_lr``, then
cosine to ``min_lr``, ``multistep`` (times ``decay_rate`` at each of ``milestones`` epochs),
``step`` (times ``decay_rate`` every ``decay_epochs``, staircase) or ``constant``. ``lr`` is for a
global batch of ``lr_base_batch`` images when that is set; the run uses
``lr * batch_size / lr_base_batch`` (the linear scaling rule of Goyal et al., arXiv 1706.02677),
and ``warmup_lr``/``min_lr`` scale the same way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from visionzoo.recipes import RecipeError

__all__ = ["ModelEma", "RMSpropTF", "build_optimizer", "lr_at", "lr_scale", "param_groups"]


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
    """The recipe's optimizer (``opt``) over ``param_groups``, at the schedule's first lr."""
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
