"""Time to accuracy on Fashion-MNIST: wall minutes to 90/92/93/94 % test top-1 on 2 CPU cores.

    python benchmarks/fashion_mnist_tta.py                   # the packaged fmnist_fast recipe
    python benchmarks/fashion_mnist_tta.py --epochs 10 --set lr=0.3
    python benchmarks/fashion_mnist_tta.py --candidates      # training img/s of a few models
    python benchmarks/fashion_mnist_tta.py --quick --out /tmp/tta   # a smoke run (a minute)

Trains with ``visionzoo.engine.train`` (the same code path as ``visionzoo train --recipe
fmnist_fast``) on Debian's ``dataset-fashion-mnist`` (60k train / 10k test,
/usr/share/datasets/fashion-mnist), evaluating on the 10k test images after every epoch.
Records, into ``OUT.md`` / ``OUT.json`` / ``OUT.png``:

* **wall minutes to 90 / 92 / 93 / 94 % test top-1**: from the start of ``train()`` (dataset
  decode, model build, everything) to the end of the evaluation of the first epoch that
  reaches the threshold; the accuracy is that of the weights the run delivers (the EMA weights
  when the recipe keeps an EMA), with the recipe's evaluation (flip test-time augmentation in
  ``fmnist_fast``);
* the final test top-1 and the whole run's wall time, and the curve (top-1 against wall
  minutes);
* the published Fashion-MNIST benchmark table (zalandoresearch/fashion-mnist README,
  "Benchmark" section: ResNet18 0.949, MobileNet 0.950; no time budget) and this benchmark's
  previous run (resnet20, ``small_cpu``, 1 loader worker: 93 % after 19.5 training minutes,
  94.20 % final after 15 epochs; its minutes excluded evaluation, about 5 s an epoch);
* the machine (CPU, usable cores, threads, torch version, load average at start).

``--candidates`` measures the training throughput (forward + backward + SGD step, bf16 autocast,
channels_last, batch 256, 28 x 28) of the models considered for the recipe, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.90, 0.92, 0.93, 0.94)
PUBLISHED = {"ResNet18": 0.949, "MobileNet": 0.950}  # zalandoresearch/fashion-mnist benchmark
PUBLISHED_SOURCE = ("zalandoresearch/fashion-mnist README, Benchmark table "
                    "(test accuracy, no time budget)")
# the previous committed run (git f101f6c): resnet20, small_cpu, batch 128, 1 loader worker;
# (training minutes at the end of the epoch, eval excluded; test top-1)
PREVIOUS = {"label": "previous run: resnet20, small_cpu, loader worker (training minutes)",
            "curve": [(1.36, 0.8046), (2.83, 0.6545), (4.53, 0.8626), (6.12, 0.8911),
                      (7.74, 0.8880), (9.49, 0.8704), (11.34, 0.9029), (12.95, 0.9139),
                      (14.61, 0.9115), (16.25, 0.9234), (17.91, 0.9281), (19.48, 0.9337),
                      (21.26, 0.9370), (22.90, 0.9412), (24.77, 0.9420)],
            "final": 0.9420, "wall_minutes": 25.96}
# models measured by --candidates: (label, registered name, create_model arguments)
CANDIDATES = [
    ("resnet20", "resnet20", {}),
    ("resnet32", "resnet32", {}),
    ("resnet56", "resnet56", {}),
    ("resnet18, CIFAR stem, widths 32-256", "resnet18",
     {"stem": "cifar", "widths": (32, 64, 128, 256)}),
    ("resnet18, CIFAR stem, widths 48-384", "resnet18",
     {"stem": "cifar", "widths": (48, 96, 192, 384)}),
    ("resnet18, CIFAR stem", "resnet18", {"stem": "cifar"}),
]


def minutes_to(curve: list[dict[str, float]], threshold: float) -> tuple[float | None, int | None]:
    """(wall minutes, epoch) at the end of the first epoch whose top-1 reaches ``threshold``."""
    for row in curve:
        if row["top1"] >= threshold:
            return row["wall_min"], int(row["epoch"])
    return None, None


def previous_minutes(threshold: float) -> float | None:
    return next((m for m, acc in PREVIOUS["curve"] if acc >= threshold), None)


class WallClock:
    """Per-epoch callback: the wall time since ``t0`` when the epoch's evaluation ended."""

    def __init__(self, t0: float) -> None:
        self.t0, self.curve = t0, []

    def on_epoch_end(self, m: dict[str, Any]) -> None:
        top1 = m["ema_val_top1"] if m.get("ema_val_top1") is not None else m["val_top1"]
        self.curve.append({"epoch": int(m["epoch"]), "top1": float(top1),
                           "model_top1": float(m["val_top1"]),
                           "wall_min": (time.time() - self.t0) / 60,
                           "epoch_time_s": float(m["epoch_time_s"]),
                           "img_per_s": float(m["img_per_s"]), "lr": float(m["lr"])})
        print(f"  [tta] epoch {m['epoch']}: top-1 {top1:.4f} at {self.curve[-1]['wall_min']:.2f} "
              f"wall min", flush=True)


def _train_img_per_s(model: Any, batch: int, seconds: float) -> float:
    """Training steps (bf16 autocast, channels_last, SGD) of random 28 x 28 batches per second,
    after three warm-up steps, times the batch."""
    import torch
    import torch.nn.functional as F

    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    n, t0 = -3, 0.0
    while n < 0 or time.perf_counter() - t0 < seconds:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
        if n == 0:
            t0 = time.perf_counter()
    return n * batch / (time.perf_counter() - t0)


def candidates(seconds: float = 20.0, batch: int = 256) -> list[dict[str, Any]]:
    """Training img/s of each candidate (bf16 autocast, channels_last, 28 x 28, 1 channel)."""
    import torch

    from visionzoo import create_model

    rows = []
    for label, name, kw in CANDIDATES:
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=1, **kw)
        ips = _train_img_per_s(model, batch, seconds)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"label": label, "model": name,
                     "args": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                     "params": params, "img_per_s": round(ips, 1),
                     "epoch_s": round(60000 / ips, 1)})
        print(f"{label:40s} {params / 1e6:6.2f} M params  {ips:7.0f} img/s  "
              f"{60000 / ips:6.1f} s/epoch", flush=True)
    return rows


def _plot(path: Path, curve: list[dict[str, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    ax.plot([r["wall_min"] for r in curve], [r["top1"] for r in curve], "o-", ms=3,
            label="this run (test top-1 after each epoch, wall minutes)")
    ax.plot([m for m, _ in PREVIOUS["curve"]], [a for _, a in PREVIOUS["curve"]], "s--", ms=3,
            color="tab:gray", alpha=0.7, label=PREVIOUS["label"])
    for i, (name, acc) in enumerate(PUBLISHED.items()):
        ax.axhline(acc, color=("tab:red", "tab:purple")[i % 2], ls=":", lw=1,
                   label=f"published {name} {acc:.3f}")
    ax.axhline(0.93, color="tab:green", ls="--", lw=0.8, label="93 %")
    ax.axvline(8, color="tab:green", ls="--", lw=0.8, label="8 minutes")
    ax.set_xlabel("wall minutes since the start of train()")
    ax.set_ylabel("Fashion-MNIST test top-1")
    ax.set_ylim(0.85, 0.96)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(m: float | None, epoch: int | None = None) -> str:
    if m is None:
        return "not reached"
    return f"{m:.1f}" + (f" (ep {epoch})" if epoch is not None else "")


def _markdown(res: dict[str, Any], argv: list[str]) -> list[str]:
    machine, curve = res["machine"], res["curve"]
    cols = " | ".join(f"min to {t:.0%}" for t in THRESHOLDS)
    ours = " | ".join(_fmt(*minutes_to(curve, t)) for t in THRESHOLDS)
    prev = " | ".join(_fmt(previous_minutes(t)) for t in THRESHOLDS)
    pub = " | ".join("—" for _ in THRESHOLDS)
    lines = [
        "# Fashion-MNIST time to accuracy" + (" (quick smoke run: numbers meaningless)"
                                              if res["quick"] else ""),
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPU(s), {res['threads']} "
        f"threads; torch {machine['torch']}; {machine['date']}; load average at start "
        f"{machine.get('loadavg', '?')}.",
        f"Run: `python benchmarks/fashion_mnist_tta.py {' '.join(argv)}` (visionzoo.engine.train,"
        f" model `{res['model']}` {json.dumps(res['model_args'])}, recipe `{res['recipe']}`, "
        f"overrides {json.dumps(res['overrides'])}).",
        "",
        "Minutes are wall time from the start of `train()` (data decode and model build "
        "included) to the end of the evaluation of the first epoch at or above the threshold "
        f"({res['weights']} weights, flip TTA {'on' if res['tta_hflip'] else 'off'}).",
        "",
        f"| run | params | epochs | {cols} | final top-1 | wall min |",
        "|---|---|---|" + "---|" * len(THRESHOLDS) + "---|---|",
        f"| this run: {res['model']} {res['model_label']}, `{res['recipe']}` | "
        f"{res['params']:,} | {res['epochs']} | {ours} | **{res['final_top1']:.4f}** | "
        f"{res['wall_minutes']:.1f} |",
        f"| previous run: resnet20, `small_cpu` (training minutes, eval excluded) | 269,434 | "
        f"15 | {prev} | {PREVIOUS['final']:.4f} | {PREVIOUS['wall_minutes']:.1f} |",
    ]
    lines += [f"| published {k} | | | {pub} | {v:.3f} | |" for k, v in PUBLISHED.items()]
    lines += ["", f"Published: {PUBLISHED_SOURCE}.", "",
              "| epoch | test top-1 | trained-weights top-1 | wall min | epoch train s | "
              "train img/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['epoch']} | {c['top1']:.4f} | {c['model_top1']:.4f} | {c['wall_min']:.2f} "
              f"| {c['epoch_time_s']:.0f} | {c['img_per_s']:.0f} |" for c in curve]
    if res.get("candidates"):
        lines += ["", "Candidates (`--candidates`: training img/s, bf16 autocast, channels_last, "
                  "batch 256, 28 x 28):", "", "| model | params | img/s | s/epoch |",
                  "|---|---|---|---|"]
        lines += [f"| {c['label']} | {c['params']:,} | {c['img_per_s']:.0f} | {c['epoch_s']:.0f} "
                  f"|" for c in res["candidates"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--model-args", default="",
                   help="create_model arguments as JSON (model_args of the recipe)")
    p.add_argument("--recipe", default="fmnist_fast")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other recipe key (repeatable)")
    p.add_argument("--candidates", action="store_true",
                   help="only measure the candidate models' training img/s")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 epochs of 20 steps (numbers meaningless)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fashion_mnist_tta"),
                   help="output prefix (OUT.md, OUT.json, OUT.png; the run in OUT_run/)")
    args = p.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.candidates:
        rows = candidates(seconds=3.0 if args.quick else 20.0)
        out.with_name(out.name + "_candidates.json").write_text(json.dumps(rows, indent=2))
        return 0
    res = run(args, out)
    lines = _markdown(res, argv)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import shutil

    import yaml

    from visionzoo.bench import machine_info
    from visionzoo.cli import parse_overrides
    from visionzoo.engine import train

    model_args = json.loads(args.model_args) if args.model_args else {}
    overrides: dict[str, Any] = {"device": "cpu", "progress": "off", "model_args": model_args,
                                 **parse_overrides(args.set)}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.quick:
        overrides.update(epochs=2, max_steps_per_epoch=20)
    run_dir = out.with_name(out.name + "_run")
    if run_dir.exists():  # one committed result set: a rerun replaces the last one's run
        shutil.rmtree(run_dir)
    machine = machine_info("cpu")
    t0 = time.time()
    clock = WallClock(t0)
    result = train(args.model, args.data, recipe=args.recipe, overrides=overrides, out=run_dir,
                   callbacks=[clock])
    wall = time.time() - t0
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    res = {
        "model": args.model, "model_args": model_args,
        "model_label": " ".join(f"{k}={v}" for k, v in model_args.items()),
        "recipe": args.recipe, "overrides": overrides, "config": cfg,
        "weights": "EMA" if cfg.get("ema") else "trained", "tta_hflip": bool(cfg["tta_hflip"]),
        "final_top1": float(result.final_top1), "epochs": result.epochs,
        "wall_minutes": wall / 60, "params": result.summary.get("params"),
        "minutes_to": {f"{t:.2f}": minutes_to(clock.curve, t)[0] for t in THRESHOLDS},
        "previous": PREVIOUS, "published": PUBLISHED, "published_source": PUBLISHED_SOURCE,
        "machine": machine, "threads": args.threads, "quick": args.quick,
        "engine": "visionzoo.engine.train", "curve": clock.curve,
    }
    cand = out.with_name(out.name + "_candidates.json")
    if cand.exists():
        res["candidates"] = json.loads(cand.read_text())
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    title = (f"{args.model} {res['model_label']} on Fashion-MNIST, recipe {args.recipe}, "
             f"{args.threads} threads, {machine['cpu']}" + (" (QUICK SMOKE RUN)"
                                                              if args.quick else ""))
    _plot(out.with_suffix(".png"), clock.curve, title)
    return res


if __name__ == "__main__":
    sys.exit(main())
