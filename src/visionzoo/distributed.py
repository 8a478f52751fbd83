"""Distributed training under ``torchrun``: the process group, the device of each rank, sums
over ranks, and BatchNorm statistics over the global batch.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group uses NCCL on GPUs and gloo on CPUs;
``batch_size`` is the global batch, split evenly over ranks (the samplers that split it are
``visionzoo.data.datasets.EpochSampler`` / ``ShardSampler``); metrics are summed over ranks; only
rank 0 writes files (every rank reads the checkpoint on ``--resume``: across machines, ``--out``
must be on a shared filesystem). ``sync_bn`` computes BatchNorm statistics over the global
batch (PyTorch's ``SyncBatchNorm`` on GPUs; ``CrossRankBatchNorm2d`` here on CPUs, which
``SyncBatchNorm`` does not support), which makes N processes equal to one process with the same
global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from visionzoo.recipes import RecipeError

__all__ = ["CrossRankBatchNorm2d", "DistInfo", "all_sum", "close_distributed", "convert_sync_bn",
           "init_distributed", "pick_device"]


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


def close_distributed(info: DistInfo) -> None:
    """Leave the process group ``init_distributed`` created (a caller's own group stays)."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
