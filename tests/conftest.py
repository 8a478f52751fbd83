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


def assert_one_sgd_step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                        num_classes: int) -> None:
    """Finite logits of the right shape, finite non-zero gradients, and one SGD step that changes
    the weights and keeps the logits finite (``model`` in train mode)."""
    import torch.nn.functional as F

    logits = model(x)
    assert logits.shape == (len(x), num_classes) and torch.isfinite(logits).all()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    F.cross_entropy(logits, target).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()


def run_cli(*args: str, ok: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """``visionzoo ARGS`` in a subprocess (one thread); ``ok`` asserts exit status 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "visionzoo.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


# --- where an xdist worker died --------------------------------------------------------------
# A worker killed from outside (a signal, the kernel's OOM killer) leaves no traceback. Each worker
# appends the test it starts, its RSS and the machine's available memory to a file; when a worker
# crashed, the controller prints the tail of every worker's file and of the kernel log.

def _mem_line() -> str:
    try:
        rss = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS"))
        avail = next(int(x.split()[1]) for x in open("/proc/meminfo")
                     if x.startswith("MemAvailable"))
        return f"rss {rss // 1024} MiB, available {avail // 1024} MiB"
    except (OSError, StopIteration):
        return "memory unknown"


_FAULT_FILES: list = []


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and "VZ_TESTLOG_DIR" not in os.environ:
        import tempfile

        os.environ["VZ_TESTLOG_DIR"] = tempfile.mkdtemp(prefix="vz-testlog-")
    worker, folder = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("VZ_TESTLOG_DIR")
    if worker and folder:
        # a worker that dies in native code (or from a signal) leaves no Python traceback in
        # the report: its threads' stacks go to <worker>.fault, which the summary prints
        import faulthandler

        f = open(os.path.join(folder, f"{worker}.fault"), "a")  # noqa: SIM115 (process-long)
        _FAULT_FILES.append(f)
        faulthandler.enable(file=f, all_threads=True)
        _watch_signals()


def _watch_signals() -> None:
    """faulthandler's stacks on the signals that end a process quietly; again before each test,
    since a training run restores the Python-level handlers it replaced, dropping these."""
    import faulthandler
    import signal

    if _FAULT_FILES:
        # and the fatal signals, in case a native library installed its own SIGSEGV handler
        # (this did not capture the segfaults seen so far: their .fault files stayed empty)
        faulthandler.enable(file=_FAULT_FILES[0], all_threads=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                    signal.SIGALRM):
            faulthandler.register(sig, file=_FAULT_FILES[0], all_threads=True, chain=True)


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    worker, folder = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("VZ_TESTLOG_DIR")
    if worker and folder:
        import time

        _watch_signals()
        with open(os.path.join(folder, f"{worker}.log"), "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {nodeid} ({_mem_line()})\n")


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent under -p no:xdist
def pytest_testnodedown(node, error) -> None:
    """In the controller: how a worker ended (exit status, or the signal that killed it, or
    still running with its channel broken), for the crash section of the summary."""
    folder = os.environ.get("VZ_TESTLOG_DIR")
    if not error or not folder:
        return
    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    status = "unknown (no process handle)"
    if popen is not None:
        try:
            rc = popen.wait(timeout=5)
            status = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
        except subprocess.TimeoutExpired:
            status = "still running: its channel to the controller broke"
    worker = getattr(node, "gateway", None) and node.gateway.id
    with open(os.path.join(folder, "nodedown.txt"), "a") as f:
        f.write(f"{worker}: {status} ({error})\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    folder = os.environ.get("VZ_TESTLOG_DIR")
    crashed = any("crashed while running" in str(getattr(r, "longrepr", ""))
                  for key in ("failed", "rerun") for r in terminalreporter.stats.get(key, []))
    if hasattr(config, "workerinput") or not folder or not crashed:
        return
    tr = terminalreporter
    tr.section("where the crashed worker was (tests/conftest.py)")
    for name in sorted(os.listdir(folder)):
        lines = open(os.path.join(folder, name)).read().splitlines()
        if name == "nodedown.txt":
            for line in lines:
                tr.write_line(f"worker ended: {line}")
            continue
        if name.endswith(".fault"):
            if lines:
                tr.write_line(f"{name}: the stacks faulthandler wrote (last 40 lines)")
                for line in lines[-40:]:
                    tr.write_line("  " + line)
            continue
        tr.write_line(f"{name}: last {min(len(lines), 6)} of {len(lines)} tests started")
        for line in lines[-6:]:
            tr.write_line("  " + line)
    tr.write_line(f"now: {_mem_line()}")
    try:
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        tr.write_line("kernel log, last lines:\n" + "\n".join(kernel.splitlines()[-8:]))
    except (OSError, subprocess.SubprocessError) as e:
        tr.write_line(f"kernel log not readable: {e}")
