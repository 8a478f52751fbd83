"""Each paper's central experiment, reproduced small: ``visionzoo ablate PAPER``.

An ``Ablation`` names the paper's variants (``Arm``: a registered model and the constructor flags
that switch a mechanism on or off), the claims the paper makes about them (``Claim``: this arm
beats that one) and the small-input adaptation used. ``run_ablation`` trains every arm under one
protocol (same data subset, recipe, epochs and seeds; nothing tuned per arm) through
``visionzoo.train`` and writes, into ``out``:

* ``runs.csv``: one row per training run (arm, seed, params, MACs, final test top-1, train loss);
* ``ablation.md``: per arm the mean +- std over seeds beside the paper's own number, and one
  verdict line per claim;
* ``ablation.png``: test top-1 against epochs per arm (the papers' training-curve figures) and
  the final top-1 with its spread.

A verdict is **reproduced** when the paper's direction holds and the difference of means exceeds
twice its standard error over the seeds, **not reproduced at this scale** when the opposite
direction does, and **inconclusive** otherwise (one seed is always inconclusive).

Budgets: ``smoke`` (seconds, for tests: a few hundred images, one epoch, one seed), ``small``
(<= 25 minutes per paper on 2 CPU cores, >= 3 seeds; the committed results), ``full`` (the whole
data set and a paper-like schedule, for a GPU).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visionzoo.data.datasets import ArraySplit, DataError, DataSource, FileSplit, open_dataset
from visionzoo.extras import MissingExtraError, MissingExtraWarning, require_pyplot

__all__ = ["ABLATIONS", "Ablation", "Arm", "BUDGETS", "Claim", "list_ablations", "run_ablation",
           "verdict"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = ("reproduced", "not reproduced at this scale",
                                            "inconclusive")


@dataclass(frozen=True)
class Arm:
    """One variant of the paper: ``model`` built with ``args``; ``paper`` is the paper's own
    number for it, as printed (e.g. "8.75 % error, Table 6")."""

    label: str
    model: str
    args: Mapping[str, Any] = field(default_factory=dict)
    img_size: int | None = None  # a resolution arm (MobileNet V1, EfficientNet)
    paper: str = ""


@dataclass(frozen=True)
class Claim:
    """The paper says ``better`` reaches a higher test top-1 than ``worse``."""

    text: str
    better: str
    worse: str


@dataclass(frozen=True)
class Ablation:
    key: str
    title: str
    evidence: str  # where the paper shows it
    adaptation: str  # the small-input adaptation, the same for every arm
    arms: tuple[Arm, ...]
    claims: tuple[Claim, ...]
    small: Mapping[str, Any] = field(default_factory=dict)  # budget overrides for this paper
    # recipe keys for every arm of this paper, over the shared RECIPE (a paper whose networks
    # do not train under SGD, e.g. Swin, gets its own paper's optimiser)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    pending: str = ""  # why it cannot run yet ("" = ready)


# Budgets: train/test subset sizes (None = all), epochs, seeds and recipe keys. A paper's
# ``small`` mapping overrides the small budget (to fit 25 minutes with its networks).
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"train": 64, "test": 64, "epochs": 1, "seeds": 1, "batch_size": 32,
              "amp": "none"},
    "small": {"train": 12000, "test": 5000, "epochs": 6, "seeds": 3, "batch_size": 128,
              "amp": "bf16"},
    "full": {"train": None, "test": None, "epochs": 60, "seeds": 3, "batch_size": 128,
             "amp": "bf16"},
}
# one protocol for every arm: small_cpu's optimiser and schedule, no EMA / TTA / mixing
RECIPE = {"recipe": "small_cpu", "label_smoothing": 0.0, "workers": 0, "pipeline": "auto",
          "progress": "off", "channels_last": True, "eval_batch_size": 500}


def _resnet() -> Ablation:
    p = "Table 6, CIFAR-10 test error"
    return Ablation(
        "resnet", "Deep Residual Learning (He et al. 2015)", "Fig. 6, Table 6",
        "none: the paper's own CIFAR networks (3 stages of 16/32/64 channels, option-A "
        "shortcuts), on 28x28 Fashion-MNIST instead of 32x32 CIFAR-10",
        (Arm("plain-20", "resnet20", {"shortcut": "none"},
             paper="Fig. 6 left: lower error than plain-56"),
         Arm("plain-56", "resnet56", {"shortcut": "none"},
             paper="Fig. 6 left: higher training and test error than plain-20"),
         Arm("ResNet-20", "resnet20", {}, paper=f"8.75 % ({p})"),
         Arm("ResNet-56", "resnet56", {}, paper=f"6.97 % ({p})")),
        (Claim("a deeper plain net trains worse (degradation)", "plain-20", "plain-56"),
         Claim("the residual 56-layer net beats the plain one", "ResNet-56", "plain-56"),
         Claim("with shortcuts, depth helps", "ResNet-56", "ResNet-20")),
        small={"train": 10000, "epochs": 5})


def _senet() -> Ablation:
    return Ablation(
        "senet", "Squeeze-and-Excitation Networks (Hu et al. 2017)", "Tables 2, 10",
        "SE blocks on the CIFAR ResNet-20 (16/32/64 channels) instead of ResNet-50; the SE "
        "block itself (squeeze, two FC layers with reduction r, sigmoid gating) is unchanged",
        (Arm("ResNet-20", "resnet20", {}, paper="ResNet-50: 24.80 % top-1 err (Table 2)"),
         Arm("SE-ResNet-20 r=16", "resnet20", {"se_ratio": 1 / 16},
             paper="SE-ResNet-50 r=16: 23.29 % (Table 2); +10 % params, +0.26 % GFLOPs"),
         Arm("SE-ResNet-20 r=4", "resnet20", {"se_ratio": 1 / 4},
             paper="r=4: 22.25 % (Table 10)")),
        (Claim("SE improves accuracy (r=16)", "SE-ResNet-20 r=16", "ResNet-20"),
         Claim("SE improves accuracy (r=4)", "SE-ResNet-20 r=4", "ResNet-20")),
        small={"train": 10000, "epochs": 10})


def _mobilenet_v1() -> Ablation:
    return Ablation(
        "mobilenet_v1", "MobileNets (Howard et al. 2017)", "Tables 6, 7",
        "MobileNet V1 as published, fed 28x28 Fashion-MNIST upsampled to 64 / 48 px (the "
        "resolution arms); the width multiplier is the paper's",
        (Arm("1.0 MobileNet-64", "mobilenet_v1", {}, img_size=64, paper="1.0-224: 70.6 %"),
         Arm("0.75 MobileNet-64", "mobilenet_v1", {"width_mult": 0.75}, img_size=64,
             paper="0.75-224: 68.4 %"),
         Arm("0.5 MobileNet-64", "mobilenet_v1", {"width_mult": 0.5}, img_size=64,
             paper="0.5-224: 63.7 %"),
         Arm("1.0 MobileNet-48", "mobilenet_v1", {}, img_size=48, paper="1.0-192: 69.1 %")),
        (Claim("accuracy falls with width (1.0 vs 0.75)", "1.0 MobileNet-64",
               "0.75 MobileNet-64"),
         Claim("accuracy falls with width (0.75 vs 0.5)", "0.75 MobileNet-64",
               "0.5 MobileNet-64"),
         Claim("accuracy falls with resolution", "1.0 MobileNet-64", "1.0 MobileNet-48")),
        small={"train": 6000, "epochs": 4})


def _mobilenet_v2() -> Ablation:
    return Ablation(
        "mobilenet_v2", "MobileNetV2 (Sandler et al. 2018)", "Fig. 6",
        "MobileNet V2 as published at 0.5 width, fed 28x28 Fashion-MNIST upsampled to 64 px",
        (Arm("linear bottleneck", "mobilenet_v2_x0_5", {}, img_size=64,
             paper="Fig. 6a: the higher curve"),
         Arm("ReLU6 bottleneck", "mobilenet_v2_x0_5", {"linear_bottleneck": False}, img_size=64,
             paper="Fig. 6a: lower than linear"),
         Arm("no residual", "mobilenet_v2_x0_5", {"shortcut": "none"}, img_size=64,
             paper="Fig. 6b: lower than shortcuts between bottlenecks")),
        (Claim("the bottleneck must stay linear", "linear bottleneck", "ReLU6 bottleneck"),
         Claim("shortcuts between bottlenecks help", "linear bottleneck", "no residual")),
        small={"train": 6000, "epochs": 4})


def _shufflenet() -> Ablation:
    return Ablation(
        "shufflenet_v1", "ShuffleNet (Zhang et al. 2017)", "Tables 2, 3",
        "ShuffleNet 0.5x (g=3, g=8) as published, fed 28x28 Fashion-MNIST upsampled to 64 px",
        (Arm("g=3 shuffle", "shufflenet_v1_g3_x0_5", {}, img_size=64,
             paper="Table 3: lower error with shuffle"),
         Arm("g=3 no shuffle", "shufflenet_v1_g3_x0_5", {"shuffle": False}, img_size=64,
             paper="Table 3: higher error without"),
         Arm("g=1", "shufflenet_v1_g3_x0_5", {"groups": 1}, img_size=64,
             paper="Table 2: higher error than g=3 at 0.5x")),
        (Claim("shuffle helps for g>1", "g=3 shuffle", "g=3 no shuffle"),
         Claim("more groups help at equal MACs", "g=3 shuffle", "g=1")),
        small={"train": 6000, "epochs": 4})


def _swin() -> Ablation:
    return Ablation(
        "swin", "Swin Transformer (Liu et al. 2021)", "Table 4",
        "Swin-T as published (patch 4, window 7, stages 2-2-6-2), fed 28x28 Fashion-MNIST "
        "upsampled to 56 px so the first stage is 14x14 = 2x2 windows",
        (Arm("shifted + rel. bias", "swin_t", {}, img_size=56, paper="81.3 % (Table 4)"),
         Arm("no shift", "swin_t", {"shift": False}, img_size=56,
             paper="w/o shifting: 80.2 % (Table 4)"),
         Arm("no position bias", "swin_t", {"rel_pos_bias": False}, img_size=56,
             paper="no pos.: 80.1 % (Table 4)")),
        (Claim("shifted windows help", "shifted + rel. bias", "no shift"),
         Claim("relative position bias helps", "shifted + rel. bias", "no position bias")),
        small={"train": 4000, "epochs": 4},
        # the shared SGD lr 0.2 diverges on Swin-T (train loss 44 after one epoch): the paper's
        # AdamW, weight decay 0.05 and gradient clipping at 5, with a warm-up of half an epoch
        recipe={"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05, "clip_grad": 5.0,
                "warmup_epochs": 0.5, "warmup_lr": 1e-5, "nesterov": False})


BASE_EFFICIENTNET = (0.25, 0.5, 64)  # width, depth, resolution of the small base


def _efficientnet() -> Ablation:
    from visionzoo.models.efficientnet import compound_scaling

    # the small base: B0's blocks at a quarter of the width and half the depth, at 64 px; the
    # paper's BN momentum (0.99 in TF terms) and its regularisers (dropout 0.2, stochastic depth
    # 0.2) are for 350 epochs: the same short-schedule values go to every arm
    fit = {"bn_momentum": 0.1, "drop_rate": 0.0, "drop_path_rate": 0.0}
    w0, d0, r0 = BASE_EFFICIENTNET
    c = compound_scaling(1, base_resolution=r0)  # phi = 1: d x 1.2, w x 1.1, r x 1.15
    cw, cd = round(w0 * c.width, 4), round(d0 * c.depth, 4)
    compound = f"compound (w{cw:g} d{cd:g} r{c.resolution})"
    return Ablation(
        "efficientnet", "EfficientNet (Tan & Le 2019)", "Fig. 8",
        f"a small base, B0's seven MBConv stages at width {w0:g} and depth {d0:g} (8-80 "
        f"channels, head 320, 10 blocks) fed 28x28 Fashion-MNIST upsampled to {r0} px "
        "(2.4 M MACs); the compound arm scales it by the paper's rule at phi = 1 (alpha = "
        "1.2, beta = 1.1, gamma = 1.15: 2.3x the MACs), the others in one dimension to the "
        "same MACs (within 4 %: at such small maps the MACs grow in steps). Every arm: BN "
        "momentum 0.1 (PyTorch's; the paper's 0.01 lets the running statistics lag a short "
        "schedule, which blew the test loss up to 1e17), no dropout or stochastic depth "
        "(regularisers for 350 epochs), float32 (faster than bf16 for depthwise convs on "
        "this CPU)",
        (Arm(f"base (w{w0:g} d{d0:g} r{r0})", "efficientnet_b0",
             {"width": w0, "depth": d0, **fit}, img_size=r0,
             paper="Fig. 8: B0, where every curve starts"),
         Arm(compound, "efficientnet_b0", {"width": cw, "depth": cd, **fit},
             img_size=c.resolution, paper="Fig. 8: the highest curve at equal FLOPS"),
         Arm("depth only (d1.1)", "efficientnet_b0", {"width": w0, "depth": 1.1, **fit},
             img_size=r0, paper="Fig. 8: below compound"),
         Arm("width only (w0.47)", "efficientnet_b0", {"width": 0.47, "depth": d0, **fit},
             img_size=r0, paper="Fig. 8: below compound"),
         Arm("resolution only (r96)", "efficientnet_b0", {"width": w0, "depth": d0, **fit},
             img_size=96, paper="Fig. 8: below compound")),
        (Claim("compound beats depth-only scaling", compound, "depth only (d1.1)"),
         Claim("compound beats width-only scaling", compound, "width only (w0.47)"),
         Claim("compound beats resolution-only scaling", compound, "resolution only (r96)")),
        small={"train": 8000, "test": 2000, "epochs": 4, "amp": "none"})


def _vgg() -> Ablation:
    small = {"batch_norm": True, "width_mult": 0.25, "fc6_window": 1}
    return Ablation(
        "vgg", "Very Deep Convolutional Networks (Simonyan & Zisserman 2014)", "Table 3",
        "every conv and fc layer at a quarter of the width (width_mult=0.25: 16..128 channels, "
        "FC-1024), fc6 a plain FC layer on the 1x1 pool5 map of a 32 px input (fc6_window=1), "
        "and BatchNorm after every conv: without it none of the arms leaves chance level under "
        "the shared recipe at this scale (the paper trained A first and initialised the deeper "
        "nets from it; BN replaces that)",
        (Arm("A (11 layers)", "vgg11", small, img_size=32,
             paper="29.6 % top-1 error (Table 3, S=256)"),
         Arm("A-LRN", "vgg11", {**small, "lrn": True}, img_size=32, paper="29.7 % (Table 3)"),
         Arm("B (13 layers)", "vgg13", small, img_size=32, paper="28.7 % (Table 3)"),
         Arm("D (16 layers)", "vgg16", small, img_size=32, paper="27.0 % (Table 3, S=256)")),
        (Claim("depth helps (D vs A)", "D (16 layers)", "A (11 layers)"),
         Claim("depth helps (B vs A)", "B (13 layers)", "A (11 layers)"),
         Claim("LRN does not help (the paper finds A-LRN no better than A: 'inconclusive' or "
               "'reproduced' agree with it, 'not reproduced' would mean LRN helps)",
               "A (11 layers)", "A-LRN")),
        small={"train": 12000, "epochs": 6})


def _densenet() -> Ablation:
    cifar = {"stem": "cifar", "growth_rate": 12}
    return Ablation(
        "densenet", "Densely Connected Convolutional Networks (Huang et al. 2016)",
        "Fig. 4, Table 2",
        "none for the networks: the paper's own CIFAR DenseNets (3x3 stem with 16 or 2k maps, "
        "three dense blocks, k=12) and the CIFAR ResNet-110, on 28x28 Fashion-MNIST",
        (Arm("DenseNet L=40 (1.0 M)", "densenet121",
             {**cifar, "block_config": (12, 12, 12), "bn_size": 0, "compression": 1.0},
             paper="5.24 % C10+ error with 1.0 M params (Table 2)"),
         Arm("DenseNet-BC L=100 (0.8 M)", "densenet121", {**cifar, "block_config": (16, 16, 16)},
             paper="4.51 % C10+ error with 0.8 M params (Table 2)"),
         Arm("ResNet-110 (1.7 M)", "resnet110", {},
             paper="6.43 % C10+ error, 1.7 M (ResNet paper, Table 6)")),
        (Claim("BC is more parameter-efficient: 0.8 M BC beats the 1.0 M plain DenseNet",
               "DenseNet-BC L=100 (0.8 M)", "DenseNet L=40 (1.0 M)"),
         Claim("DenseNet beats a ResNet with more parameters", "DenseNet L=40 (1.0 M)",
               "ResNet-110 (1.7 M)")),
        small={"train": 4000, "test": 2000, "epochs": 3})


def _pending(key: str, title: str, evidence: str, why: str) -> Ablation:
    return Ablation(key, title, evidence, "", (), (), pending=why)


ABLATIONS: dict[str, Ablation] = {a.key: a for a in (
    _resnet(), _senet(), _mobilenet_v1(), _mobilenet_v2(), _shufflenet(), _swin(),
    _efficientnet(),
    _vgg(), _densenet(),
)}


def list_ablations() -> list[Ablation]:
    return list(ABLATIONS.values())


# ---------------------------------------------------------------------------------------------
# the verdict
# ---------------------------------------------------------------------------------------------


def verdict(better: Sequence[float], worse: Sequence[float]) -> tuple[str, float, float]:
    """(verdict, difference of means, its standard error) for the claim mean(better) >
    mean(worse); the standard error is Welch's (each arm's sample variance over its seeds)."""
    if not better or not worse:
        raise ValueError("a claim needs at least one run of each arm")
    diff = statistics.fmean(better) - statistics.fmean(worse)
    if len(better) < 2 or len(worse) < 2:
        return INCONCLUSIVE, diff, math.nan
    se = math.sqrt(statistics.variance(better) / len(better)
                   + statistics.variance(worse) / len(worse))
    if diff > 2 * se:
        return REPRODUCED, diff, se
    if -diff > 2 * se:
        return NOT_REPRODUCED, diff, se
    return INCONCLUSIVE, diff, se


# ---------------------------------------------------------------------------------------------
# data: one stratified subset for every arm and seed
# ---------------------------------------------------------------------------------------------


def _subset_indices(labels: Sequence[int], n: int | None) -> list[int]:
    """The first ``n`` images in a fixed shuffled order, taken class by class in turn (the same
    subset for every arm and seed)."""
    if n is None or n >= len(labels):
        return list(range(len(labels)))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist()
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(labels[i], []).append(i)
    picked: list[int] = []
    queues = [iter(v) for _, v in sorted(by_class.items())]
    while len(picked) < n and queues:
        for q in list(queues):
            nxt = next(q, None)
            if nxt is None:
                queues.remove(q)
            elif len(picked) < n:
                picked.append(nxt)
    return sorted(picked)


def _subset(split: Any, n: int | None) -> Any:
    idx = _subset_indices(split.labels, n)
    if isinstance(split, ArraySplit):
        return ArraySplit(split.images[idx], [split.labels[i] for i in idx])
    if isinstance(split, FileSplit):
        return FileSplit([split.files[i] for i in idx], split.mode)
    raise DataError(f"cannot take a subset of a {type(split).__name__}")


def ablation_data(spec: str | DataSource, train: int | None, test: int | None) -> DataSource:
    src = open_dataset(spec) if isinstance(spec, str) else spec
    splits = dict(src.splits)
    splits[src.train_split] = _subset(src.split(src.train_split), train)
    splits[src.eval_split] = _subset(src.split(src.eval_split), test)
    return DataSource(**{**src.__dict__, "splits": splits})


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _budget(ab: Ablation, budget: str, seeds: int | None) -> dict[str, Any]:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; expected one of {', '.join(BUDGETS)}")
    b = {**BUDGETS[budget], **(ab.small if budget == "small" else {})}
    if seeds is not None:
        if seeds < 1:
            raise ValueError("--seeds must be at least 1")
        b["seeds"] = seeds
    return b


def _measure(arm: Arm, num_classes: int, in_chans: int, size: int) -> tuple[int, int]:
    from visionzoo.profile import profile

    prof = profile(arm.model, input_size=(in_chans, size, size), num_classes=num_classes,
                   in_chans=in_chans, **arm.args)
    return prof.params, prof.macs


def _train_arm(arm: Arm, data: DataSource, b: Mapping[str, Any], seed: int,
               work: Path, recipe: Mapping[str, Any] = {}) -> dict[str, Any]:  # noqa: B006
    from visionzoo.engine import train

    size = arm.img_size or data.native_size or 32
    t0 = time.monotonic()
    result = train(arm.model, data, out=work / f"{_slug(arm.label)}-s{seed}", seed=seed,
                   epochs=b["epochs"], batch_size=b["batch_size"], amp=b["amp"], img_size=size,
                   model_args=dict(arm.args), **{**RECIPE, **recipe})
    hist = result.history
    return {"seconds": round(time.monotonic() - t0, 1), "img_size": size,
            "final_top1": result.final_top1, "best_top1": result.best_top1,
            "final_train_loss": hist[-1]["train_loss"] if hist else None,
            "curve": [h.get("val_top1") for h in hist]}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def run_ablation(key: str, data: str | DataSource = "fashion-mnist", budget: str = "small",
                 seeds: int | None = None, out: str | Path | None = None,
                 log: Any = print) -> dict[str, Any]:
    """Train every arm of ``key`` for every seed; write runs.csv, ablation.md, ablation.png
    into ``out`` (default ``runs/ablations/<key>-<budget>``) and return the summary."""
    if key not in ABLATIONS:
        raise ValueError(f"unknown paper {key!r}; `visionzoo ablate --list` shows "
                         f"{', '.join(ABLATIONS)}")
    ab = ABLATIONS[key]
    if ab.pending:
        raise ValueError(f"the {key} ablation cannot run yet: {ab.pending}")
    b = _budget(ab, budget, seeds)
    out = Path(out or Path("runs") / "ablations" / f"{key}-{budget}")
    out.mkdir(parents=True, exist_ok=True)
    src = ablation_data(data, b["train"], b["test"])
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vz-ablate-") as tmp:
        for seed in range(b["seeds"]):
            for arm in ab.arms:
                res = _train_arm(arm, src, b, seed, Path(tmp), ab.recipe)
                params, macs = _measure(arm, len(src.classes), src.channels, res["img_size"])
                rows.append({"paper": key, "variant": arm.label, "model": arm.model,
                             "args": json.dumps(dict(arm.args), sort_keys=True), "seed": seed,
                             "params": params, "macs": macs, "epochs": b["epochs"], **res})
                log(f"  {arm.label:24s} seed {seed}: top-1 {res['final_top1']:.4f}  "
                    f"({res['seconds']:.0f} s)")
            shutil.rmtree(tmp, ignore_errors=True)
            Path(tmp).mkdir(exist_ok=True)
    summary = summarize(ab, rows, b, budget, src, time.monotonic() - t_start)
    write_outputs(out, ab, rows, summary)
    return summary


def summarize(ab: Ablation, rows: Sequence[Mapping[str, Any]], b: Mapping[str, Any],
              budget: str, src: DataSource, seconds: float) -> dict[str, Any]:
    arms = []
    for arm in ab.arms:
        runs = [r for r in rows if r["variant"] == arm.label]
        accs = [r["final_top1"] for r in runs]
        arms.append({"label": arm.label, "model": arm.model, "args": dict(arm.args),
                     "params": runs[0]["params"], "macs": runs[0]["macs"],
                     "img_size": runs[0]["img_size"], "top1": accs,
                     "mean": statistics.fmean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else math.nan,
                     "train_loss": statistics.fmean(r["final_train_loss"] for r in runs),
                     "paper": arm.paper})
    by = {a["label"]: a for a in arms}
    claims = []
    for c in ab.claims:
        v, diff, se = verdict(by[c.better]["top1"], by[c.worse]["top1"])
        claims.append({"claim": c.text, "better": c.better, "worse": c.worse, "verdict": v,
                       "diff": diff, "se": se})
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown CPU")
    machine = (f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return {"paper": ab.key, "title": ab.title, "evidence": ab.evidence, "budget": budget,
            "recipe": dict(ab.recipe), "amp": b.get("amp"),
            "machine": machine,
            "data": src.name, "train_images": len(src.split(src.train_split)),
            "test_images": len(src.split(src.eval_split)), "epochs": b["epochs"],
            "seeds": b["seeds"], "adaptation": ab.adaptation, "minutes": round(seconds / 60, 1),
            "arms": arms, "claims": claims}


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _fmt(x: float) -> str:
    return "-" if x is None or isinstance(x, float) and math.isnan(x) else f"{100 * x:.2f}"


def write_outputs(out: Path, ab: Ablation, rows: Sequence[Mapping[str, Any]],
                  summary: Mapping[str, Any]) -> None:
    cols = ["paper", "variant", "model", "args", "seed", "params", "macs", "img_size", "epochs",
            "final_top1", "best_top1", "final_train_loss", "seconds"]
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "ablation.md").write_text(render_markdown(summary))
    try:
        plot(out / "ablation.png", rows, summary)
    except MissingExtraError as e:  # a by-product: the numbers are in the files above
        warnings.warn(f"skipped ablation.png: {e}", MissingExtraWarning, stacklevel=2)


_AMP = {"bf16": "bf16 autocast", "none": "float32", "fp16": "fp16 autocast"}


def _recipe_note(recipe: Mapping[str, Any] | None) -> str:
    if not recipe:
        return ""
    return "; for this paper " + ", ".join(f"{k}={v}" for k, v in recipe.items())


def render_markdown(s: Mapping[str, Any]) -> str:
    from visionzoo.profile import human

    lines = [f"# {s['title']}: {s['evidence']}", "",
             f"Budget `{s['budget']}`: {s['data']}, {s['train_images']} training / "
             f"{s['test_images']} test images, {s['epochs']} epochs, {s['seeds']} seeds per "
             f"arm, one recipe for every arm (`small_cpu` optimiser and schedule, no label "
             f"smoothing, EMA or TTA{_recipe_note(s.get('recipe'))}"
             f"{'; ' + _AMP.get(s['amp'], s['amp']) if s.get('amp') else ''}); "
             f"{s['minutes']} min in "
             f"all on {s['machine']}.", "",
             f"Small-input adaptation: {s['adaptation']}.", "",
             "| variant | params | MACs | input | test top-1 % (mean ± std) | final train loss "
             "| paper |", "|---|---|---|---|---|---|---|"]
    for a in s["arms"]:
        lines.append(f"| {a['label']} | {human(a['params'])} | {human(a['macs'])} | "
                     f"{a['img_size']} | {_fmt(a['mean'])} ± {_fmt(a['std'])} | "
                     f"{a['train_loss']:.4f} | {a['paper']} |")
    lines += ["", "| claim | verdict | difference (points) | 2 × standard error |",
              "|---|---|---|---|"]
    for c in s["claims"]:
        lines.append(f"| {c['claim']} ({c['better']} > {c['worse']}) | **{c['verdict']}** | "
                     f"{100 * c['diff']:+.2f} | {_fmt(2 * c['se'])} |")
    lines += ["", "A claim is *reproduced* when the paper's direction holds by more than twice "
              "the standard error of the difference (Welch, over seeds), *not reproduced at "
              "this scale* when the opposite direction does, *inconclusive* otherwise.", "",
              "![test top-1 per epoch and final](ablation.png)", ""]
    return "\n".join(lines)


def plot(path: Path, rows: Sequence[Mapping[str, Any]], s: Mapping[str, Any]) -> None:
    """Test top-1 per epoch and final, per arm. Raises MissingExtraError without matplotlib."""
    plt = require_pyplot("the ablation plot")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, a in enumerate(s["arms"]):
        curves = [r["curve"] for r in rows if r["variant"] == a["label"] and r["curve"]]
        if curves:
            n = min(len(c) for c in curves)
            mean = [statistics.fmean(c[e] for c in curves) * 100 for e in range(n)]
            ax1.plot(range(1, n + 1), mean, marker="o", label=a["label"], color=f"C{i}")
        ax2.errorbar([i], [a["mean"] * 100], yerr=[0 if math.isnan(a["std"]) else a["std"] * 100],
                     fmt="o", capsize=4, color=f"C{i}")
    ax1.set(xlabel="epoch", ylabel="test top-1 (%)", title="mean over seeds")
    ax1.legend(fontsize=8)
    ax2.set_xticks(range(len(s["arms"])), [a["label"] for a in s["arms"]], rotation=20,
                   fontsize=8)
    ax2.set(ylabel="final test top-1 (%)", title="mean ± std over seeds")
    fig.suptitle(f"{s['title']} ({s['evidence']}), budget {s['budget']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
