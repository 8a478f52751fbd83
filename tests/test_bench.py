"""bench end to end at tiny sizes: rows, ratios, memory, md/csv/json/png. Timings are never
asserted (speed lives in benchmarks/); only that every number is there and consistent."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from visionzoo import bench as bench_mod


@pytest.fixture(scope="module")
def report():
    # resnet18 has torchvision and timm references; resnet20 (CIFAR) has none
    return bench_mod.bench(["resnet20", "resnet18"], batches=(1, 2), size=32, threads=1,
                           train=True, compare=True, optimize=True, repeats=2, min_time=0.02,
                           warmup=1)


def _rows(report, **kw):
    return [r for r in report.rows if all(getattr(r, k) == v for k, v in kw.items())]


def test_candidates_are_the_same_network(report):
    infer = _rows(report, model="resnet18", mode="infer", batch=2)
    assert [r.impl for r in infer] == ["visionzoo", "visionzoo+optimize", "torchvision", "timm"]
    ours, opt, tv, timm = infer
    assert ours.params == tv.params == timm.params == 11_689_512
    assert ours.macs == tv.macs == timm.macs == opt.macs
    # ours was ported from each reference's own weights: the logits agree
    assert tv.max_diff is not None and tv.max_diff <= 1e-4
    assert timm.max_diff is not None and timm.max_diff <= 1e-4
    assert opt.max_diff is not None and opt.max_diff <= 1e-3
    assert opt.params < ours.params  # the BN parameters were folded away
    assert opt.config.startswith("BN folded 20")


def test_every_number_is_there(report):
    for r in _rows(report, mode="infer"):
        assert not r.error, r
        assert r.img_s > 0 and r.img_s_min <= r.img_s <= r.img_s_max
        assert r.peak_mem_mb is not None and r.peak_mem_mb >= 0
        if r.batch == 1:
            assert 0 < r.lat_p50_ms <= r.lat_p90_ms
        else:
            assert r.lat_p50_ms is None
    for r in _rows(report, model="resnet18", mode="infer"):
        assert r.ratio is not None and r.ratio > 0  # every row has someone to compare with
    for r in _rows(report, model="resnet20"):
        assert r.ratio is None and r.impl in ("visionzoo", "visionzoo+optimize")
    assert "VmHWM" in report.memory_method


def test_faster_reference_is_chosen_over_the_run_not_per_round():
    # torchvision 12.5, 20, 5 img/s (median 12.5), timm 5, 10, 20 (median 10): torchvision is
    # the faster; ours (10 img/s) against it round by round: 0.8, 0.5, 2 -> 0.8. The better of
    # the two in every round (12.5, 20, 20) would give 0.5: the luckier draw each time.
    C = bench_mod._Candidate
    cands = [C("visionzoo", "m", "", object(), {}), C("torchvision", "m", "", object(), {}),
             C("timm", "m", "", object(), {})]
    times = {0: [[0.1]] * 3, 1: [[0.08], [0.05], [0.2]], 2: [[0.2], [0.1], [0.05]]}
    base = {"model": "m", "size": 8, "threads": 1, "device": "cpu"}
    ours, tv, timm = bench_mod._rows_for(cands, dict(enumerate(cands)), times, {}, "infer", 1,
                                         base, {}, {})
    assert tv.img_s == pytest.approx(12.5) and timm.img_s == pytest.approx(10)
    assert ours.ratio == pytest.approx(0.8)


def test_ratio_definition_on_synthetic_rounds():
    # three rounds of per-call times: ours 0.1 s/call, torchvision 0.2 s, timm 0.1 then 0.05 s
    C = bench_mod._Candidate
    cands = [C("visionzoo", "m", "", object(), {}), C("visionzoo+optimize", "m", "", object(), {}),
             C("torchvision", "m", "", object(), {}), C("timm", "m", "", object(), {})]
    times = {0: [[0.1, 0.1]] * 3, 1: [[0.05]] * 3, 2: [[0.2]] * 3,
             3: [[0.1], [0.05], [0.05]]}
    base = {"model": "m", "size": 8, "threads": 1, "device": "cpu"}
    rows = bench_mod._rows_for(cands, dict(enumerate(cands)), times, {}, "infer", 1, base, {}, {})
    ours, opt, tv, timm = rows
    assert ours.img_s == pytest.approx(10) and tv.img_s == pytest.approx(5)
    assert tv.ratio == pytest.approx(2.0)  # ours / torchvision, every round
    assert timm.ratio == pytest.approx(0.5)  # median of 1, 0.5, 0.5
    assert ours.ratio == pytest.approx(0.5)  # ours / the faster reference (timm), per round
    assert opt.ratio == pytest.approx(1.0)
    assert ours.lat_p50_ms == pytest.approx(100)
    # a reference of another layout is compared with ours built in *its* layout only
    cands += [C("visionzoo", "m", "flag=1", object(), {}, group=1),
              C("timm", "m2", "", object(), {}, group=1)]
    times.update({4: [[0.4]] * 3, 5: [[0.1]] * 3})
    rows = bench_mod._rows_for(cands, dict(enumerate(cands)), times, {}, "infer", 1, base, {}, {})
    assert [r.ratio for r in rows[:4]] == pytest.approx([0.5, 1.0, 2.0, 0.5])  # unchanged
    assert rows[4].ratio == pytest.approx(0.25) and rows[5].ratio == pytest.approx(0.25)
    assert (timm.lat_p50_ms, timm.lat_p90_ms) == pytest.approx((50, 90))  # linear interpolation


def test_engine_rows_are_compared_with_the_faster_eager_reference():
    # the same rounds as above, plus an engine at 40 img/s: it is no reference of ours (ours'
    # ratio is unchanged) and its own ratio is against timm, the faster eager reference
    C = bench_mod._Candidate
    cands = [C("visionzoo", "m", "", object(), {}), C("torchvision", "m", "", object(), {}),
             C("timm", "m", "", object(), {}),
             C("openvino", "m", "", object(), {}, kind="engine", like=1, train=False)]
    times = {0: [[0.1, 0.1]] * 3, 1: [[0.2]] * 3, 2: [[0.1], [0.05], [0.05]],
             3: [[0.025]] * 3}
    base = {"model": "m", "size": 8, "threads": 1, "device": "cpu"}
    stats = {0: (10, 100), 1: (10, 100), 2: (10, 100)}
    mem = {"0": 1.0, "1": 1.0, "2": 1.0, "3": 5.0}
    ours, tv, timm, ov = bench_mod._rows_for(cands, dict(enumerate(cands)), times, {}, "infer",
                                             1, base, stats, mem)
    assert ours.ratio == pytest.approx(0.5) and tv.ratio == pytest.approx(2.0)
    assert ov.img_s == pytest.approx(40) and ov.ratio == pytest.approx(2.0)  # 4, 2, 2
    assert ov.img_s_rounds == pytest.approx([40, 40, 40])
    assert timm.img_s_rounds == pytest.approx([10, 20, 20])
    assert (ov.params, ov.macs) == (10, 100)  # those of the model it runs
    assert ov.peak_mem_mb is None and ours.peak_mem_mb == 1.0  # engines: no memory
    assert bench_mod._rows_for(cands, dict(enumerate(cands)), times, {}, "train", 1, base,
                               stats, mem)[-1].impl == "timm"  # inference-only


def test_median_interval_order_statistics_and_coverage():
    # n = 15: k = 4, coverage 1 - 2 * (1 + 15 + 105 + 455) / 2**15 = 0.9648 (k = 5: 0.882)
    lo, hi, cov = bench_mod.median_interval(list(range(15, 0, -1)))
    assert (lo, hi) == (4, 12) and cov == pytest.approx(1 - 2 * 576 / 2**15)
    assert bench_mod.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0,
                                                                    pytest.approx(0.9375))
    assert bench_mod.median_interval([7.0])[:2] == (7.0, 7.0)
    with pytest.raises(ValueError, match="at least one"):
        bench_mod.median_interval([])
    # it covers the true median as often as it claims: exponential draws, median ln 2
    import random

    rng = random.Random(0)
    trials = 3000
    hits = sum(lo <= math.log(2) <= hi for lo, hi, _ in (
        bench_mod.median_interval([rng.expovariate(1.0) for _ in range(15)])
        for _ in range(trials)))
    assert abs(hits / trials - cov) < 0.015  # binomial sd of the estimate: 0.0034


def test_ratio_interval_in_rows_and_markdown():
    C = bench_mod._Candidate
    cands = [C("visionzoo", "m", "", object(), {}), C("torchvision", "m", "", object(), {})]
    # per-round ratios ours / torchvision: 1.0, 0.5, 2.0, 0.8, 1.25 -> median 1.0, range 0.5-2
    times = {0: [[0.1]] * 5, 1: [[0.1], [0.05], [0.2], [0.08], [0.125]]}
    base = {"model": "m", "size": 8, "threads": 1, "device": "cpu"}
    ours, tv = bench_mod._rows_for(cands, dict(enumerate(cands)), times, {}, "infer", 1, base,
                                   {}, {})
    assert ours.ratio == pytest.approx(1.0)
    assert (ours.ratio_lo, ours.ratio_hi) == pytest.approx((0.5, 2.0))
    assert (tv.ratio_lo, tv.ratio_hi) == pytest.approx((0.5, 2.0))
    report = bench_mod.BenchReport([ours, tv], {"cpu": "x"}, {"repeats": 5}, "m")
    md = report.to_markdown()
    assert "| 1.000 [0.50, 2.00] |" in md
    assert "order statistics 1 and 5 of the 5 per-round ratios, coverage 93.8 %" in md


def test_train_rows(report):
    train = _rows(report, model="resnet18", mode="train")
    assert {r.impl for r in train} == {"visionzoo", "torchvision", "timm"}  # not the optimized
    b2 = [r for r in train if r.batch == 2]
    assert all(r.img_s and not r.error for r in b2)
    # batch 1 at 32x32 leaves a 1x1 map in conv5_x: BatchNorm cannot train on one value per
    # channel, for every implementation alike; the error is reported, the others still ran
    b1 = [r for r in train if r.batch == 1]
    assert all(r.img_s is None and "more than 1 value per channel" in r.error for r in b1)


def test_formats_and_plot(report, tmp_path):
    paths = report.save(tmp_path / "bench")
    assert set(paths) == {"md", "csv", "json", "png"}
    md = paths["md"].read_text()
    assert md.startswith("Machine: ") and "| model | impl | config |" in md
    assert "| resnet18 | torchvision:resnet18 |" in md
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(rows) == len(report.rows)
    assert {r["impl"] for r in rows} >= {"visionzoo", "timm", "torchvision"}
    data = json.loads(paths["json"].read_text())
    assert data["machine"]["torch"] and data["settings"]["threads"] == 1
    assert len(data["rows"]) == len(report.rows)
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with pytest.raises(ValueError, match="unknown format"):
        report.format("xml")


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch sizes"):
        bench_mod.bench("resnet20", batches=(0,))
    with pytest.raises(KeyError, match="did you mean"):
        bench_mod.bench("resnet21", batches=(1,))


def test_machine_info():
    m = bench_mod.machine_info()
    assert m["cpu"] and m["usable_cpus"] >= 1 and m["torch"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visionzoo.cli", "bench", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_bench_compare_has_the_engines_as_rows():
    proc = _cli("mobilenet_v1", "--batch", "1", "--size", "32", "--threads", "1", "--repeats",
                "2", "--min-time", "0.01", "--warmup", "1", "--compare", "--no-memory",
                "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    infer = {r["impl"]: r for r in rows if r["mode"] == "infer"}
    # MobileNet V1's reference is timm's (torchvision has none): the engines run timm's model
    assert {"visionzoo", "timm", "onnxruntime", "openvino", "torch.compile",
            "visionzoo+deploy"} <= set(infer)
    for impl in ("onnxruntime", "openvino", "torch.compile", "visionzoo+deploy"):
        r = infer[impl]
        assert not r["error"] and r["ratio"] > 0 and r["max_diff"] <= 1e-3, r
    assert infer["visionzoo+deploy"]["config"].startswith("auto -> ")
    proc = _cli("mobilenet_v1", "--batch", "1", "--size", "32", "--threads", "1", "--repeats",
                "1", "--min-time", "0.01", "--warmup", "1", "--compare", "--no-engines",
                "--no-memory", "--format", "json")
    assert {r["impl"] for r in json.loads(proc.stdout)["rows"]} == {"visionzoo", "timm"}


def test_cli_bench(tmp_path):
    prefix = tmp_path / "out" / "r"
    proc = _cli("resnet2?", "--batch", "1,2", "--size", "32", "--threads", "1", "--repeats", "1",
                "--min-time", "0.01", "--warmup", "1", "--optimize", "--bf16", "--no-memory",
                "--format", "json", "--out", str(prefix))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {r["model"] for r in data["rows"]} == {"resnet20"}  # the pattern matched only it
    assert {r["impl"] for r in data["rows"]} == {"visionzoo", "visionzoo+optimize",
                                                 "visionzoo+optimize+bf16"}
    bf16 = [r for r in data["rows"] if r["impl"] == "visionzoo+optimize+bf16"]
    assert all("bfloat16" in r["config"] and 0 < r["max_diff"] for r in bf16)
    assert all(r["macs"] == data["rows"][0]["macs"] for r in data["rows"])
    assert all(r["peak_mem_mb"] is None and r["img_s"] > 0 for r in data["rows"])
    assert all(math.isfinite(r["macs"]) for r in data["rows"])
    for ext in ("md", "csv", "json", "png"):
        assert (prefix.parent / f"r.{ext}").is_file()
    csv_out = _cli("resnet20", "--batch", "1", "--size", "32", "--repeats", "1",
                   "--min-time", "0.01", "--no-memory", "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout.startswith("model,impl,name,config,mode,batch,")
    bad = _cli("resnet20", "--batch", "1,x")
    assert bad.returncode == 1 and "--batch expects" in bad.stderr
    unknown = _cli("resnet21")
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def engine_report():
    return bench_mod.bench("resnet18", batches=(1,), size=32, threads=1, engines=True,
                           repeats=2, min_time=0.02, warmup=1, memory=False)


def test_engine_rows(engine_report):
    assert engine_report.settings["engines"] and engine_report.settings["compare"]
    rows = {r.impl: r for r in engine_report.rows}
    assert list(rows) == ["visionzoo", "torchvision", "timm", "onnxruntime", "openvino",
                          "torch.compile", "visionzoo+deploy"]
    for impl in (*bench_mod.ENGINES, bench_mod.OURS_DEPLOY):
        r = rows[impl]
        assert not r.error and r.img_s > 0 and r.mode == "infer", r
        assert r.ratio_lo <= r.ratio <= r.ratio_hi and r.ratio > 0
        assert len(r.img_s_rounds) == 2
        # the same weights as our eager model, run by another engine: float32 rounding only
        assert r.max_diff is not None and r.max_diff <= 1e-3
        assert r.params == rows["visionzoo"].params and r.macs == rows["torchvision"].macs
        assert r.peak_mem_mb is None
    for impl in bench_mod.ENGINES:  # the baselines run torchvision's model
        assert rows[impl].name == "resnet18" and rows[impl].config
    assert "ORT_ENABLE_ALL" in rows["onnxruntime"].config
    assert "f32" in rows["openvino"].config  # not OpenVINO's bf16 default on bf16 CPUs
    choice = rows["visionzoo+deploy"].config
    assert choice.startswith("auto -> ") and choice[8:] in ("onnxruntime", "openvino", "torch")
    md = engine_report.to_markdown()
    assert "| resnet18 | onnxruntime:resnet18 |" in md and "| visionzoo+deploy | auto -> " in md
    header = engine_report.to_csv().splitlines()[0]
    assert header.endswith(",error,img_s_rounds")


def test_missing_or_failing_engine_gives_an_error_row(monkeypatch):
    import importlib

    deploy_mod = importlib.import_module("visionzoo.deploy")  # the package re-exports deploy()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed

    def broken(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(bench_mod, "_torch_compile", broken)
    monkeypatch.setattr(deploy_mod, "available_runtimes", lambda: [])
    report = bench_mod.bench("resnet18", batches=(1,), size=32, threads=1, engines=True,
                             repeats=1, min_time=0.01, warmup=1, memory=False)
    rows = {r.impl: r for r in report.rows}
    assert rows["onnxruntime"].error.startswith("not installed")
    assert "no C++ compiler here" in rows["torch.compile"].error
    assert "no runtime is installed" in rows["visionzoo+deploy"].error
    for impl in ("onnxruntime", "torch.compile", "visionzoo+deploy"):
        assert rows[impl].img_s is None and rows[impl].ratio is None
    # the others still ran
    assert rows["openvino"].img_s > 0 and rows["visionzoo"].img_s > 0
    assert "error:" in report.to_markdown()


def test_summary_verdicts_use_the_interval(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "run_all", Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)

    def r(model, batch, impl, rounds, mode="infer", ratio=None, lo=None, hi=None, **kw):
        return {"model": model, "impl": impl, "mode": mode, "batch": batch, "ratio": ratio,
                "ratio_lo": lo, "ratio_hi": hi, "img_s": sorted(rounds)[len(rounds) // 2],
                "img_s_rounds": rounds, "macs": 4e9, "config": "", "max_diff": None, **kw}

    five = [10.0] * 5
    rows = [r("resnet50", 8, "visionzoo", five, ratio=0.93, lo=0.85, hi=1.02),  # short, noise
            r("resnet50", 8, "visionzoo", five, "train", 1.01, 0.97, 1.05),
            r("resnet50", 8, "torchvision", five), r("resnet50", 8, "timm", [9.0] * 5),
            r("resnet50", 8, "onnxruntime", [20.0] * 5),
            r("resnet50", 8, "openvino", [25.0] * 5),  # the fastest engine
            r("resnet50", 8, "torch.compile", [12.0] * 5),
            # deploy / openvino per round: 0.96, 1.04, 0.98, 0.96, 1.02 -> 0.98 [0.96, 1.04]
            r("resnet50", 8, "visionzoo+deploy", [24.0, 26.0, 24.5, 24.0, 25.5],
              config="auto -> openvino"),
            r("resnet50", 8, "visionzoo+deploy+bf16", [50.0] * 5,
              config="auto -> openvino, bfloat16", max_diff=0.01),
            r("swin_t", 1, "visionzoo", five, ratio=1.0, lo=0.98, hi=1.02),
            r("swin_t", 1, "visionzoo", five, "train", 0.96, 0.95, 0.97),
            r("swin_t", 1, "torchvision", five), r("swin_t", 1, "openvino", five),
            r("swin_t", 1, "visionzoo+deploy", [8.0] * 5, config="auto -> torch")]
    data = {"machine": {"cpu": "x", "usable_cpus": 2, "torch": "t", "torchvision": "v",
                        "timm": "m", "date": "d"}, "settings": {"threads": 1}, "rows": rows}
    (tmp_path / "compare.json").write_text(json.dumps(data))
    int8 = {"models": [{"model": "efficientnet_lite0", "weights": "w", "photos": 96,
                        "agreement": [{"runtime": "onnxruntime", "dtype": "int8", "top1": 0.875,
                                       "top1_confident": 1.0}],
                        "speed": [{"batch": 8, "runtime": "onnxruntime", "dtype": "int8",
                                   "vs_float32": [1.9, 1.8, 2.0]}]}]}
    (tmp_path / "int8.json").write_text(json.dumps(int8))
    run_all.write_summary(tmp_path)
    md = (tmp_path / "SUMMARY.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| resnet50 | 8 |"))
    assert line.startswith("| resnet50 | 8 | 0.93 [0.85, 1.02] | 1.01 [0.97, 1.05] | "
                           "torchvision | 2.00 | 2.50 | 1.20 | 2.45 (openvino) | "
                           "0.98 [0.96, 1.04] vs openvino |")
    assert line.endswith("| eager met (within noise); deploy >= fastest engine met (within "
                         "noise); deploy >= 1.8x eager met |")
    swin = next(ln for ln in md.splitlines() if ln.startswith("| swin_t | 1 |"))
    assert "deploy >= fastest engine missed" in swin and "1.8x" not in swin  # not a CNN
    assert "Target *eager*: 3 of 4 met, 1 of 4 met (within noise)." in md
    assert "Target *deploy >= fastest engine*: 1 of 2 met (within noise), 1 of 2 missed." in md
    assert "Target *deploy >= 1.8x eager*: 1 of 1 met." in md
    bf16 = next(ln for ln in md.splitlines() if ln.startswith("| resnet50 | 8 | - |"))
    assert bf16 == "| resnet50 | 8 | - | 5.00 (openvino, bfloat16) | 2.04 [1.92, 2.08] | 0.010 |"
    assert "onnxruntime int8 87.5 % (100.0 % confident)" in md
    assert "onnxruntime int8 / float32 on the same engine: batch 8 1.90x." in md


def test_training_is_timed_without_stochastic_depth():
    import torch

    import visionzoo as vz

    tv = bench_mod.build_reference("torchvision", "efficientnet_b0")
    ours = vz.create_model("efficientnet_b0")  # the paper's 0.2, as torchvision's default

    def rates(m):
        return [getattr(x, "drop_prob", getattr(x, "p", 0.0)) for x in m.modules()
                if type(x).__name__ in ("DropPath", "StochasticDepth")]

    x = torch.randn(2, 3, 32, 32)
    for m in (tv, ours):
        assert max(rates(m)) > 0
        bench_mod._step_fn(m, x, "infer", 1000)
        assert max(rates(m)) > 0  # inference does not touch them
        bench_mod._step_fn(m, x, "train", 1000)()
        assert rates(m) and max(rates(m)) == 0.0
