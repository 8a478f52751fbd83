"""Parameters and multiply-accumulates, per stage, and verification against the papers.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (conv, linear, matmul and
attention); FLOPs = 2 x MACs. Most papers print MACs and call them "FLOPs", so every table says
which one it shows. Counting runs on the ``meta`` device when a model is built by name: shapes
propagate, nothing is computed, and even EfficientNet-B7 at 600x600 costs no time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from visionzoo.registry import ModelInfo, Published, builder, list_models, model_info


# scaled_dot_product_attention on CPU tensors runs the fused "flash attention for CPU" kernel,
# which torch.utils.flop_counter does not count (it counts the CUDA kernels and, on meta, the math
# path's bmm); without these a real CPU model would lose its attention matmuls (Swin-T: 4.35 G
# instead of 4.49 G).
def _sdpa_cpu_flops(query, key, value, *_args, out_shape=None, **_kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *_args, out_shape=None,
                             **_kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


_EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
}

__all__ = ["Profile", "StageProfile", "VerifyRow", "count_params", "format_info", "format_verify",
           "profile", "verify"]


@dataclass
class StageProfile:
    name: str
    layers: str
    output: tuple[int, ...]  # (C, H, W) for maps, (C,) for vectors
    blocks: int | None
    params: int
    macs: int
    part_of: str | None = None  # a breakdown of that row (StageSpec.part_of), not a stage


@dataclass
class Profile:
    model: str
    input_size: tuple[int, int, int]
    params: int
    macs: int
    stages: list[StageProfile] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _output_shape(out: Any, fmt: str) -> tuple[int, ...]:
    if isinstance(out, (list, tuple)):
        out = out[0]
    shape = tuple(out.shape[1:])
    if fmt == "NHWC" and len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    if fmt == "NLC" and len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def profile(model: nn.Module | str, input_size: Sequence[int] | None = None,
            **overrides: Any) -> Profile:
    """Parameters and MACs of a model, in total and per paper stage (``model.stage_specs()``).

    ``model`` is a module (run on its own device, in eval mode, without gradients) or a registered
    name (built on the meta device, so nothing is computed). ``input_size`` is (C, H, W).
    """
    name = model if isinstance(model, str) else getattr(model, "model_name", type(model).__name__)
    if isinstance(model, str):
        info = model_info(model)
        overrides.setdefault("num_classes", info.num_classes)
        with torch.device("meta"):
            model = builder(model)(**overrides)
        input_size = input_size or info.input_size
        device = torch.device("meta")
    else:
        input_size = input_size or getattr(model, "pretrained_cfg", {}).get("input_size",
                                                                              (3, 224, 224))
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    input_size = tuple(int(v) for v in input_size)
    specs = model.stage_specs() if hasattr(model, "stage_specs") else []

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for spec in specs:
        last = model.get_submodule(spec.modules[-1])
        hooks.append(last.register_forward_hook(
            lambda _m, _i, out, key=spec.name, fmt=spec.fmt: shapes.__setitem__(
                key, _output_shape(out, fmt))))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    try:
        with counter, torch.no_grad():
            model(torch.zeros((1, *input_size), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__

    def module_macs(path: str) -> int:  # a module with no counted op may have no entry
        return int(sum(flops.get(f"{root}.{path}", {}).values())) // 2

    rows = []
    for spec in specs:
        params = sum(count_params(model.get_submodule(m)) for m in spec.modules)
        macs = sum(module_macs(m) for m in spec.modules)
        rows.append(StageProfile(spec.name, spec.layers, shapes.get(spec.name, ()), spec.blocks,
                                 params, macs, spec.part_of))
    return Profile(name, input_size, count_params(model), int(counter.get_total_flops()) // 2,
                   rows)


# ---------------------------------------------------------------------------------------------
# verify: published vs measured
# ---------------------------------------------------------------------------------------------


@dataclass
class VerifyRow:
    model: str
    variant: str  # "" for the registered default, else the flag(s) or the paper's row label
    metric: str
    published: str  # as printed, with unit
    source: str
    measured: float
    passed: bool
    kind: str  # "paper" | "variant" | "deviation"
    note: str = ""

    @property
    def status(self) -> str:
        return "pass" if self.passed else "FAIL"


def _fmt_measured(value: float, pub: Published) -> str:
    scaled = value / pub.scale
    decimals = len(pub.text.split(".")[1]) if "." in pub.text else 0
    return f"{scaled:.{decimals + 2}f}{pub.unit}" if pub.unit else f"{int(value):,}"


def _rows_for(name: str, info: ModelInfo, label: str, kind: str, overrides: dict,
              input_size: tuple[int, int, int] | None, published: Iterable[Published],
              note: str = "") -> list[VerifyRow]:
    published = list(published)
    if not published:
        return []
    prof = profile(name, input_size or info.input_size, **overrides)
    rows = []
    for pub in published:
        measured = {"params": prof.params, "macs": prof.macs}.get(pub.metric)
        if measured is None:
            continue  # accuracy figures are reported by `info`, not measured here
        text = f"{pub.text}{pub.unit}" if pub.unit else f"{int(pub.value):,}"
        rows.append(VerifyRow(name, label, pub.metric, text, pub.source, float(measured),
                              pub.matches(measured), kind, "; ".join(x for x in (note, pub.note)
                                                                      if x)))
    return rows


# params and MACs of every registered model at its paper's input size, for `visionzoo list`
# (scripts/model_table.py writes it; verify fails a model whose entry is missing or stale)
TABLE_PATH = Path(__file__).with_name("model_table.json")


@functools.lru_cache(maxsize=1)
def model_table() -> dict[str, dict[str, Any]]:
    """The committed table {name: {"input_size", "params", "macs"}} ({} when absent)."""
    try:
        return json.loads(TABLE_PATH.read_text())
    except FileNotFoundError:
        return {}


def table_stats(name: str) -> tuple[int, int]:
    """(params, MACs) of a registered model at its paper's input size: from the committed table
    when it has the model, else measured now (a model registered outside visionzoo)."""
    entry = model_table().get(name)
    if entry is not None and tuple(entry["input_size"]) == tuple(model_info(name).input_size):
        return entry["params"], entry["macs"]
    prof = profile(name)
    return prof.params, prof.macs


def _table_rows(name: str, info: ModelInfo) -> list[VerifyRow]:
    """Failing rows only: the table `visionzoo list` reads disagrees with the measurement (a
    model registered outside visionzoo is not in the table and is measured by `list`)."""
    entry = model_table().get(name)
    if entry is None and not builder(name).__module__.startswith("visionzoo."):
        return []
    prof = profile(name, info.input_size)
    rows = []
    for metric, measured in (("params", prof.params), ("macs", prof.macs)):
        if entry is None or entry.get(metric) != measured or \
                tuple(entry.get("input_size", ())) != tuple(info.input_size):
            rows.append(VerifyRow(name, "", metric, "missing" if entry is None else
                                  f"{entry.get(metric, 0):,}", "model_table.json",
                                  float(measured), False, "table",
                                  "the list table is stale: run python scripts/model_table.py"))
    return rows


def verify(patterns: str | Sequence[str] = "*") -> list[VerifyRow]:
    """Published vs measured params/MACs for every matching model, its paper variants and its
    documented deviations. A row passes when the measurement prints as the published number at
    the published precision (under the source's rounding convention). A model whose entry in
    the table `visionzoo list` reads (model_table.json) is stale also gets a failing row."""
    names = list_models(patterns)
    rows: list[VerifyRow] = []
    for name in names:
        info = model_info(name)
        rows += _rows_for(name, info, "", "paper", {}, None, info.published)
        rows += _table_rows(name, info)
        for var in info.variants:
            rows += _rows_for(name, info, var.label, "variant", dict(var.overrides),
                              var.input_size, var.published)
        for dev in info.deviations:
            rows += _rows_for(name, info, dev.flag, "deviation", dict(dev.overrides), None,
                              dev.published, note=f"documented deviation: {dev.summary}")
    return rows


def format_verify(rows: list[VerifyRow], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps([{**asdict(r), "status": r.status} for r in rows], indent=2)
    header = ["model", "variant", "metric", "published", "source", "measured", "status", "note"]

    def cells(r: VerifyRow) -> list[str]:
        pub = Published(r.metric, r.published.rstrip("KMG").replace(",", ""),
                        r.published[-1] if r.published[-1] in "KMG" else "", r.source)
        return [r.model, r.variant or "-", r.metric, r.published, r.source,
                _fmt_measured(r.measured, pub), r.status, r.note]

    body = [cells(r) for r in rows]
    failed = sum(not r.passed for r in rows)
    summary = f"{len(rows) - failed} passed, {failed} failed ({len(rows)} rows)"
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines) + f"\n\n{summary}; MACs are multiply-accumulates (FLOPs = 2 x MACs)"
    # plain text: the note column last and unpadded, so the table stays readable
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(header[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header[:-1], widths, strict=True)) + "  note"]
    for row in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
                     + ("  " + row[-1] if row[-1] else ""))
    lines.append(summary + "; MACs are multiply-accumulates (FLOPs = 2 x MACs)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# info: the paper-style stage table
# ---------------------------------------------------------------------------------------------


def human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


# the stage table's columns: `format_info` prints them, visionzoo.diagram draws them
STAGE_COLUMNS = ("stage", "output size", "channels", "layers", "blocks", "params", "MACs")


def stage_cells(s: StageProfile) -> list[str]:
    """One stage row as text, in ``STAGE_COLUMNS`` order ("56x56", "256", "7x7, 64, stride 2",
    "3", "215.81K", ...): the one formatting that the printed table and the diagram share."""
    size = "x".join(str(v) for v in s.output[1:]) if len(s.output) == 3 else (
        f"{s.output[1]} tokens" if len(s.output) == 2 else "1x1")
    chans = str(s.output[0]) if s.output else "-"
    return [s.name, size, chans, s.layers, "" if s.blocks is None else str(s.blocks),
            human(s.params), human(s.macs)]


def format_info(name: str, input_size: Sequence[int] | None = None, **overrides: Any) -> str:
    info = model_info(name)
    prof = profile(name, input_size, **overrides)
    c, h, w = prof.input_size
    out = [f"{name} — {info.paper} (arXiv {info.arxiv})",
           f"input {c}x{h}x{w}; MACs = multiply-accumulates counted with torch.utils.flop_counter "
           f"(FLOPs = 2 x MACs)"]
    if overrides:
        out.append("flags: " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
    header = list(STAGE_COLUMNS)
    body = []
    for s in prof.stages:
        cells = stage_cells(s)
        body.append([("  " if s.part_of else "") + cells[0], *cells[1:]])
    body.append(["total", "", "", "", "", human(prof.params), human(prof.macs)])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    right = {4, 5, 6}

    def line(r: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    out.append(line(header))
    out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in body[:-1]]
    out.append("  ".join("-" * w for w in widths))
    out.append(line(body[-1]))
    out.append(f"{prof.params:,} parameters; {prof.macs / 1e9:.3f} G MACs = "
               f"{prof.flops / 1e9:.3f} GFLOPs")
    out += _format_parts(prof)
    for pub in info.published:
        out.append(f"paper: {pub.metric} {pub.text}{pub.unit} ({pub.source})")
    for dev in info.deviations:
        out.append(f"deviation {dev.flag}: {dev.summary}")
    return "\n".join(out)


def _pct(part: float, whole: float) -> str:
    if not whole:
        return "-"
    pct = 100 * part / whole
    return f"+{pct:.2f}%" if pct >= 0.1 else f"+{pct:.3f}%"


def _format_parts(prof: Profile) -> list[str]:
    """Rows marked ``part_of`` another (e.g. a stage's SE blocks): what each adds to its stage
    without it, and what all parts of one kind add to the network."""
    parents = {s.name: s for s in prof.stages}
    parts = [s for s in prof.stages if s.part_of in parents]
    if not parts:
        return []
    header = ["part", "params without", "+ part", "", "MACs without", "+ part", ""]
    body = []
    kinds: dict[str, list[int]] = {}
    for s in parts:
        p = parents[s.part_of]
        body.append([s.name, human(p.params - s.params), human(s.params),
                     _pct(s.params, p.params - s.params), human(p.macs - s.macs), human(s.macs),
                     _pct(s.macs, p.macs - s.macs)])
        kind = s.name[len(s.part_of):].strip() if s.name.startswith(s.part_of) else s.name
        total = kinds.setdefault(kind, [0, 0])
        total[0] += s.params
        total[1] += s.macs
    for kind, (params, macs) in kinds.items():
        body.append([f"network, all {kind}", human(prof.params - params), human(params),
                     _pct(params, prof.params - params), human(prof.macs - macs), human(macs),
                     _pct(macs, prof.macs - macs)])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]

    def line(r: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    return ["", "cost of the indented rows, against their stage (or the network) without them:",
            line(header)] + [line(r) for r in body]
