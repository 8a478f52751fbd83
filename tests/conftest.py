"""Shared test helpers. Tests never touch the network."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep each worker single-threaded so pytest-xdist workers do not oversubscribe.
torch.set_num_threads(int(os.environ.get("VZ_TEST_THREADS", "1")))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and buffer random values (BN statistics included), so that a port
    that mixes up any two tensors shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # state_dict(): parameters and *persistent* buffers only; derived buffers (index tables,
        # attention masks) keep the values their module computed
        for name, t in model.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(("norm.weight", "bn.weight")) or ".bn" in name and name.endswith(
                    "weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                # fan-in scaled so deep nets neither explode nor vanish
                fan_in = t[0].numel() if t.ndim > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / max(fan_in, 1) ** 0.5)
    return model


def max_logit_diff(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> float:
    ours.eval()
    ref.eval()
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture
def rng_input():
    def make(size: int, batch: int = 2, chans: int = 3) -> torch.Tensor:
        return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(1))

    return make
