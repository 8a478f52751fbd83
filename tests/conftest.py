"""Shared test helpers. Tests never touch the network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from visionzoo.layers import randomize_weights_ as randomize_  # noqa: F401 - tests import it

# Two cores: keep each worker single-threaded so pytest-xdist workers do not oversubscribe.
torch.set_num_threads(int(os.environ.get("VZ_TEST_THREADS", "1")))


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


def run_cli(*args: str, ok: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """``visionzoo ARGS`` in a subprocess (one thread); ``ok`` asserts exit status 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "visionzoo.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc
