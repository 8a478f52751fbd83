"""Time to accuracy on Fashion-MNIST: minutes of training to 93 % test top-1 on 2 CPU cores.

    python benchmarks/fashion_mnist_tta.py                        # resnet20, the default recipe
    python benchmarks/fashion_mnist_tta.py --model mobilenet_v2 --epochs 12
    python benchmarks/fashion_mnist_tta.py --quick --out /tmp/tta  # a smoke run (minutes)

Trains with ``visionzoo.engine.train`` (the same code path as ``visionzoo train``) on Debian's
``dataset-fashion-mnist`` (60k train / 10k test, /usr/share/datasets/fashion-mnist), evaluating
on the 10k test images after every epoch. Records, into ``OUT.md`` / ``OUT.json`` / ``OUT.png``:

* **time to target**: training time (the sum of the epochs' ``epoch_time_s``: forward, backward,
  optimizer and the input pipeline's wait; evaluation excluded) up to the end of the first epoch
  whose test top-1 reaches ``--target`` (0.93), in minutes; the run's whole wall time too;
* the final and best test top-1, and the curve (test top-1 against training minutes);
* the published Fashion-MNIST benchmark table for comparison (zalandoresearch/fashion-mnist
  README, "Benchmark" section: ResNet18 0.949, MobileNet 0.950; their preprocessing and
  schedules, not a time budget), drawn as reference lines;
* the machine (CPU, usable cores, threads, torch version, load average at start).

Choices that make it fast on two cores (all overridable): the CIFAR ResNet-20 of the ResNet
paper's §4.2 (0.27 M parameters, 1-channel stem) at the images' native 28 x 28 (no padding to
32: 23 % fewer pixels), the packaged ``small_cpu`` recipe (SGD + Nesterov, short warm-up, cosine
to zero, label smoothing 0.1, pad-and-crop + flip), batch 128, bf16 autocast with channels_last
activations (on this project's benchmark CPU, a Xeon with AMX, an idle interleaved check of the
training step gave 551 img/s float32, 621 float32 + channels_last, 912 bf16, 1027 bf16 +
channels_last; ``--fp32`` / ``--no-channels-last`` turn them off: use ``--fp32`` on a CPU
without AMX / AVX-512 BF16, where bf16 is emulated), one loader worker (the decode is trivial;
a second worker would take a core from the math).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"ResNet18": 0.949, "MobileNet": 0.950}  # zalandoresearch/fashion-mnist benchmark
PUBLISHED_SOURCE = ("zalandoresearch/fashion-mnist README, Benchmark table "
                    "(test accuracy, no time budget)")


def time_to_target(history: list[dict], target: float) -> tuple[float | None, int | None]:
    """(training minutes, epoch) at the end of the first epoch with val_top1 >= target."""
    minutes = 0.0
    for row in history:
        minutes += float(row["epoch_time_s"]) / 60
        if float(row["val_top1"]) >= target:
            return minutes, int(row["epoch"])
    return None, None


def _read_history(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _plot(path: Path, history: list[dict], target: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes, xs, ys = 0.0, [], []
    for row in history:
        minutes += float(row["epoch_time_s"]) / 60
        xs.append(minutes)
        ys.append(float(row["val_top1"]))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(xs, ys, "o-", label="visionzoo (test top-1 after each epoch)")
    ax.axhline(target, color="tab:green", ls="--", lw=1, label=f"target {target:.0%}")
    for i, (name, acc) in enumerate(PUBLISHED.items()):
        ax.axhline(acc, color=("tab:red", "tab:purple")[i % 2], ls=":", lw=1,
                   label=f"published {name} {acc:.3f}")
    ax.set_xlabel("training minutes (evaluation excluded)")
    ax.set_ylabel("Fashion-MNIST test top-1")
    ax.set_ylim(max(0.0, min(ys + [target]) - 0.05), 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--recipe", default="small_cpu")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--img-size", type=int, default=28, help="network input (28: native)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--fp32", dest="bf16", action="store_false",
                   help="train in float32 (default: bf16 autocast)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--target", type=float, default=0.93)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other recipe key (repeatable)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 epochs of 20 steps (numbers meaningless)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fashion_mnist_tta"),
                   help="output prefix (OUT.md, OUT.json, OUT.png; the run in OUT_run/)")
    args = p.parse_args(argv)

    import torch

    from visionzoo.bench import machine_info
    from visionzoo.cli import parse_overrides
    from visionzoo.engine import train

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "img_size": args.img_size,
                 "workers": args.workers, "amp": "bf16" if args.bf16 else "none",
                 "channels_last": args.channels_last, "device": "cpu", "progress": "off",
                 **parse_overrides(args.set)}
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.quick:
        overrides.update(epochs=2, max_steps_per_epoch=20)
    out = Path(args.out)
    run_dir = out.with_name(out.name + "_run")
    machine = machine_info("cpu")
    t0 = time.time()
    summary = train(args.model, args.data, recipe=args.recipe, overrides=overrides,
                    out=run_dir).summary
    wall = time.time() - t0
    history = _read_history(Path(summary["files"]["metrics"]))
    minutes, epoch = time_to_target(history, args.target)
    final = float(history[-1]["val_top1"])
    best = max(float(r["val_top1"]) for r in history)
    result = {
        "model": args.model, "recipe": args.recipe, "overrides": overrides,
        "target": args.target, "minutes_to_target": minutes, "epoch_reaching_target": epoch,
        "final_top1": final, "best_top1": best, "epochs": len(history),
        "train_minutes": sum(float(r["epoch_time_s"]) for r in history) / 60,
        "wall_minutes": wall / 60, "params": summary.get("params"),
        "published": PUBLISHED, "published_source": PUBLISHED_SOURCE,
        "machine": machine, "threads": args.threads, "quick": args.quick,
        "engine": "visionzoo.engine.train",
        "curve": [{"epoch": int(r["epoch"]), "val_top1": float(r["val_top1"]),
                   "epoch_time_s": float(r["epoch_time_s"]),
                   "img_per_s": float(r["img_per_s"])} for r in history],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    tta = (f"{minutes:.1f} min (epoch {epoch})" if minutes is not None
           else f"not reached in {len(history)} epochs")
    title = (f"{args.model} on Fashion-MNIST, {args.threads} threads, {machine['cpu']}"
             + (" (QUICK SMOKE RUN)" if args.quick else ""))
    _plot(out.with_suffix(".png"), history, args.target, title)
    lines = [
        f"# Fashion-MNIST time to {args.target:.0%} test top-1"
        + (" (quick smoke run: numbers meaningless)" if args.quick else ""),
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPU(s), "
        f"{args.threads} threads; torch {machine['torch']}; {machine['date']}; load average at "
        f"start {machine.get('loadavg', '?')}.",
        f"Run: `python benchmarks/fashion_mnist_tta.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"(visionzoo.engine.train, recipe `{args.recipe}`, overrides "
        f"{json.dumps(overrides)}).",
        "",
        "| model | params | epochs | time to target | final top-1 | best top-1 | train min | "
        "wall min |",
        "|---|---|---|---|---|---|---|---|",
        f"| {args.model} | {summary.get('params', 0):,} | {len(history)} | {tta} | {final:.4f} "
        f"| {best:.4f} | {result['train_minutes']:.1f} | {result['wall_minutes']:.1f} |",
        "",
        f"Published ({PUBLISHED_SOURCE}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in PUBLISHED.items()) + ".",
        "",
        "| epoch | test top-1 | epoch s | train img/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c['epoch']} | {c['val_top1']:.4f} | {c['epoch_time_s']:.0f} | "
              f"{c['img_per_s']:.0f} |" for c in result["curve"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
