"""Speed per MAC: CPU latency and throughput of the mobile networks, with ResNet-18 as contrast.

MobileNet and ShuffleNet argue in multiply-adds; on a CPU, depthwise and grouped convolutions
run far below the arithmetic rate of dense convolutions, so MACs are not speed. This script
measures, for every registered MobileNet V1 / V2 and ShuffleNet V1 and for resnet18:

* batch-1 latency (p50 and p90 over every timed call, milliseconds),
* batch-32 throughput (images/s, median over rounds),

on the CPU, in float32, under ``torch.inference_mode``, after warm-up, with the thread count
pinned (``torch.set_num_threads``), and with the models *interleaved*: each round times every
model once, in a shuffled order, so that drift in the machine's load (turbo, other processes)
spreads over all models instead of biasing whichever ran last.

Writes ``<out-dir>/mobile_latency.csv``, ``.md`` (with the machine description) and ``.png``
(latency against MACs). Run on an otherwise idle machine:

    python benchmarks/mobile_latency.py                  # full run (~30-60 min on 2 cores)
    python benchmarks/mobile_latency.py --quick          # smoke test: seconds per model
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import visionzoo as vz

PATTERNS = ("mobilenet_v1*", "mobilenet_v2*", "shufflenet_v1*")
CONTRAST = "resnet18"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    model: str
    family: str
    params: int
    macs: int
    input: int
    batch1_p50_ms: float = float("nan")
    batch1_p90_ms: float = float("nan")
    batch32_img_s: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    throughputs: list[float] = field(default_factory=list, repr=False)

    @property
    def ms_per_gmac(self) -> float:
        """Batch-1 p50 latency per G MACs: what a MAC costs in time on this machine."""
        return self.batch1_p50_ms / (self.macs / 1e9)

    @property
    def gmacs_per_s(self) -> float:
        """Achieved arithmetic rate at batch 32 (G MACs per second)."""
        return self.batch32_img_s * self.macs / 1e9


def machine_description(threads: int) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    return {
        "cpu": cpu,
        "logical cores": str(os.cpu_count()),
        "torch threads (pinned)": f"{threads} intra-op, 1 inter-op",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "oneDNN (mkldnn)": str(torch.backends.mkldnn.is_available()),
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{v:.2f}" if isinstance(v, float) else v for v in load),
    }


def build(name: str) -> torch.nn.Module:
    model = vz.create_model(name).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def time_calls(model: torch.nn.Module, x: torch.Tensor, iters: int) -> list[float]:
    """Wall time of each of ``iters`` forward calls, in seconds."""
    out = []
    with torch.inference_mode():
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            out.append(time.perf_counter() - t0)
    return out


def run(names: list[str], size: int, threads: int, rounds: int, warmup: int, iters1: int,
        iters32: int, batch: int, seed: int) -> list[Row]:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    models, rows = {}, {}
    for name in names:
        info = vz.model_info(name)
        prof = vz.profile(name, (3, size, size))
        rows[name] = Row(name, info.family, prof.params, prof.macs, size)
        models[name] = build(name)
    x1 = torch.randn(1, 3, size, size)
    xb = torch.randn(batch, 3, size, size)
    print(f"warm-up: {warmup} calls at batch 1 and {max(1, warmup // 4)} at batch {batch}",
          file=sys.stderr)
    for model in models.values():
        time_calls(model, x1, warmup)
        time_calls(model, xb, max(1, warmup // 4))
    order = list(names)
    rng = random.Random(seed)
    for r in range(rounds):
        rng.shuffle(order)  # interleave: every model once per round, in a new order
        for name in order:
            row = rows[name]
            row.latencies_ms += [t * 1e3 for t in time_calls(models[name], x1, iters1)]
            elapsed = sum(time_calls(models[name], xb, iters32))
            row.throughputs.append(batch * iters32 / elapsed)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    for row in rows.values():
        q = statistics.quantiles(row.latencies_ms, n=10, method="inclusive")
        row.batch1_p50_ms = statistics.median(row.latencies_ms)
        row.batch1_p90_ms = q[8]
        row.batch32_img_s = statistics.median(row.throughputs)
    return sorted(rows.values(), key=lambda r: r.macs)


def write_csv(rows: list[Row], path: Path) -> None:
    fields = ["model", "family", "params", "macs", "input", "batch1_p50_ms", "batch1_p90_ms",
              "batch32_img_s", "ms_per_gmac", "gmacs_per_s"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in rows:
            d = {**asdict(r), "ms_per_gmac": r.ms_per_gmac, "gmacs_per_s": r.gmacs_per_s}
            w.writerow([f"{d[k]:.4g}" if isinstance(d[k], float) else d[k] for k in fields])


def write_markdown(rows: list[Row], path: Path, machine: dict[str, str], settings: dict[str, str],
                   quick: bool, png: Path | None) -> None:
    lines = ["# Speed per MAC: mobile networks on CPU", ""]
    if quick:
        lines += ["**`--quick` smoke run: too few repeats to compare anything.**", ""]
    lines += ["MACs are multiply-accumulates at the input size (FLOPs = 2 x MACs). Latency is "
              "batch 1 (p50/p90 over every timed call); throughput is batch "
              f"{settings['batch']} (median over rounds). ms/GMAC = p50 latency per G MACs; "
              "GMAC/s = MACs actually executed per second at the throughput batch.", "",
              "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## Settings", ""]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    lines += ["", "## Results", "",
              "| model | params | MACs | batch-1 p50 (ms) | batch-1 p90 (ms) | "
              f"batch-{settings['batch']} (img/s) | ms / GMAC | GMAC/s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.params / 1e6:.2f} M | {r.macs / 1e6:.0f} M | "
                     f"{r.batch1_p50_ms:.2f} | {r.batch1_p90_ms:.2f} | {r.batch32_img_s:.1f} | "
                     f"{r.ms_per_gmac:.1f} | {r.gmacs_per_s:.1f} |")
    contrast = next((r for r in rows if r.model == CONTRAST), None)
    if contrast is not None:
        rate = contrast.gmacs_per_s
        lines += ["", f"Arithmetic rate relative to {CONTRAST} (GMAC/s at batch "
                  f"{settings['batch']}; below 1 = each MAC is slower than a dense conv's):", ""]
        lines += [f"- {r.model}: {r.gmacs_per_s / rate:.2f}" for r in rows if r is not contrast]
    if png is not None:
        lines += ["", f"![batch-1 latency against MACs]({png.name})"]
    path.write_text("\n".join(lines) + "\n")


def write_png(rows: list[Row], path: Path, machine: dict[str, str]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {"mobilenet_v1": "o", "mobilenet_v2": "s", "shufflenet_v1": "^"}
    for family, marker in markers.items():
        sel = [r for r in rows if r.family == family]
        ax.scatter([r.macs / 1e6 for r in sel], [r.batch1_p50_ms for r in sel], marker=marker,
                   label=family.replace("_", " "))
    for r in rows:
        if r.family not in markers:
            ax.scatter([r.macs / 1e6], [r.batch1_p50_ms], marker="*", s=160, color="black",
                       label=r.model)
        ax.annotate(r.model.replace("mobilenet_", "mn").replace("shufflenet_v1_", "sn_"),
                    (r.macs / 1e6, r.batch1_p50_ms), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("multiply-accumulates (M)")
    ax.set_ylabel("batch-1 latency, p50 (ms)")
    ax.set_title(f"MACs are not speed: {machine['cpu']}, {machine['torch threads (pinned)']}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round, few calls (numbers are not comparable)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (pinned)")
    parser.add_argument("--size", type=int, default=224, help="input H = W")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--batch", type=int, default=32, help="throughput batch size")
    parser.add_argument("--models", nargs="*", default=None,
                        help="fnmatch patterns (default: every mobile model and resnet18)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.quick:
        rounds, warmup, iters1, iters32 = args.rounds or 1, 2, 3, 1
    else:
        rounds, warmup, iters1, iters32 = args.rounds or 10, 20, 10, 2
    names = vz.list_models(args.models) if args.models else [*vz.list_models(PATTERNS), CONTRAST]
    if not names:
        print(f"no model matches {args.models}", file=sys.stderr)
        return 1
    machine = machine_description(args.threads)
    settings = {
        "input": f"3x{args.size}x{args.size}, float32, NCHW, torch.inference_mode",
        "batch": str(args.batch),
        "rounds": f"{rounds} interleaved rounds (shuffled model order each round, seed "
                  f"{args.seed})",
        "per round": f"{iters1} batch-1 calls, {iters32} batch-{args.batch} calls per model",
        "warm-up": f"{warmup} batch-1 and {max(1, warmup // 4)} batch-{args.batch} calls per "
                   "model before timing",
        "command": "python benchmarks/mobile_latency.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
    }
    t0 = time.perf_counter()
    rows = run(names, args.size, args.threads, rounds, warmup, iters1, iters32, args.batch,
               args.seed)
    machine["load average at end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    settings["wall time"] = f"{time.perf_counter() - t0:.0f} s"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / "mobile_latency"
    write_csv(rows, stem.with_suffix(".csv"))
    png = stem.with_suffix(".png")
    has_png = write_png(rows, png, machine)
    write_markdown(rows, stem.with_suffix(".md"), machine, settings, args.quick,
                   png if has_png else None)
    print(f"wrote {stem}.csv, .md{', .png' if has_png else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
