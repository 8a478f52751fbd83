"""The stage table as a block diagram, the way the papers' figures summarise a network.

``visionzoo info MODEL`` prints the table; ``plot_architecture`` (``info MODEL --plot OUT``) draws
the same rows, from ``visionzoo.profile`` (``profile`` for the numbers, ``stage_cells`` for their
text, so the picture and the table cannot disagree): the input at the top, one box per stage
with its layers (a bracketed group of layers stacked as in ResNet's Table 1, with its repeat
count beside it), its output resolution and channels, parameters and MACs, an arrow to the next,
and the classifier's output at the bottom. Box colours follow the output resolution, so the
downsampling steps show; rows that break a stage down (``part_of``, e.g. a stage's SE blocks)
hang under their stage in a dashed box. Nothing is computed: the model is built on the meta
device, as ``info`` does.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DIAGRAM_SUFFIXES", "layer_lines", "plot_architecture"]

DIAGRAM_SUFFIXES = (".png", ".svg", ".pdf")

# the page, in inches (the axes span the figure, so one data unit is one inch)
_WIDTH = 11.0
_LEFT, _RIGHT = 0.3, 10.7  # the boxes' edges
_NAME_X, _LAYERS_X, _OUT_X = 0.45, 2.85, 10.55
_LINE = 0.19  # one 9-point line
_PAD = 0.12  # inside a box, above and below the text
_GAP = 0.34  # between boxes: room for the arrow
_LAYER_CHARS, _NAME_CHARS = 58, 22


def _split_top(text: str, sep: str = ";") -> list[str]:
    """``text`` split at ``sep`` outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _bracket_group(part: str) -> tuple[str, str, str] | None:
    """(prefix, inside, suffix) of a top-level ``[...]`` in ``part``, or None."""
    start = part.find("[")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(part)):
        depth += {"[": 1, "]": -1}.get(part[i], 0)
        if depth == 0:
            return part[:start].strip(), part[start + 1:i], part[i + 1:].strip()
    return None


def _repeat(prefix: str, suffix: str) -> str | None:
    """"x3" / "x 6" / "5x" around a bracket group as "×3"; None when it is not a repeat count."""
    for text in (suffix, prefix):
        m = re.fullmatch(r"(?:x\s*(\d+)|(\d+)\s*x)", text)
        if m and not (suffix and prefix):
            return "×" + (m.group(1) or m.group(2))
    return None


def layer_lines(layers: str, width: int = _LAYER_CHARS) -> list[tuple[str, int | None, str]]:
    """The stage table's ``layers`` text as diagram lines ``(text, group, repeat)``: the items of
    a repeated bracket group ("[1x1, 64; 3x3, 64; 1x1, 256] x3") one per line, sharing a group
    number and the repeat ("×3"); other items ("3x3 max pool, stride 2") wrapped to ``width``
    with group None."""
    lines: list[tuple[str, int | None, str]] = []
    group = 0
    for part in _split_top(layers):
        found = _bracket_group(part)
        repeat = _repeat(found[0], found[2]) if found else None
        if found and repeat:
            for item in _split_top(found[1]):
                lines += [(t, group, repeat) for t in textwrap.wrap(item, width)]
            group += 1
        else:
            lines += [(t, None, "") for t in textwrap.wrap(part, width)]
    return lines or [("", None, "")]


def _colours(rows: Sequence[Any], cmap: Any) -> dict[tuple[int, ...], Any]:
    """One pastel colour per output resolution, in the order they appear."""
    sizes: list[tuple[int, ...]] = []
    for s in rows:
        key = tuple(s.output[1:])
        if len(s.output) >= 2 and key not in sizes:
            sizes.append(key)
    return {key: cmap(i % cmap.N) for i, key in enumerate(sizes)}


def plot_architecture(model: str, out: str | Path, input_size: Sequence[int] | None = None,
                      **overrides: Any) -> Path:
    """Draw ``model``'s stage table (at ``input_size`` (C, H, W), default the paper's, with
    constructor ``overrides``) as a block diagram to ``out`` (.png, .svg or .pdf; folders are
    created). Returns the path written."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in DIAGRAM_SUFFIXES:
        raise ValueError(f"{out}: the diagram must end in {', '.join(DIAGRAM_SUFFIXES)}")
    from visionzoo.profile import human, profile, stage_cells
    from visionzoo.registry import model_info

    info = model_info(model)
    prof = profile(model, input_size, **dict(overrides))

    from visionzoo.extras import require_pyplot

    plt = require_pyplot("the architecture diagram")
    from matplotlib.patches import FancyBboxPatch

    # -- layout: (kind, row, height) from the top, in inches ----------------------------------
    items: list[tuple[str, Any, float]] = [("input", None, 0.42)]
    for s in prof.stages:
        name_lines = (len(textwrap.wrap(s.name.strip(), _NAME_CHARS)) + (s.blocks is not None)
                      + bool(s.part_of))
        lines = max(len(layer_lines(s.layers)), name_lines, 2)
        items.append(("part" if s.part_of else "stage", s, lines * _LINE + 2 * _PAD))
    items.append(("output", None, 0.42))
    title_h = 0.95 + (0.22 if overrides else 0.0)
    tops, y = [], title_h
    for i, (kind, _, h) in enumerate(items):
        attached = kind == "part"  # hangs under its stage: no arrow, a small gap
        y += 0.0 if i == 0 else (0.08 if attached else _GAP)
        tops.append(y)
        y += h
    height = y + 0.3

    num_classes = int(overrides.get("num_classes", info.num_classes))
    last = prof.stages[-1] if prof.stages else None
    if num_classes > 0:
        out_text = f"{num_classes} class scores"
    else:
        out_text = f"{last.output[0]}-d features" if last and last.output else "features"
    c, h, w = prof.input_size

    with plt.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42, "font.size": 9}):
        fig = plt.figure(figsize=(_WIDTH, height))
        try:
            ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
            ax.set_xlim(0, _WIDTH)
            ax.set_ylim(height, 0)  # y grows downwards, like the table
            ax.set_axis_off()
            colours = _colours(prof.stages, plt.get_cmap("Pastel1"))
            ax.text(_LEFT, 0.25, f"{model}: {human(prof.params)} parameters, "
                    f"{human(prof.macs)} MACs at {c}x{h}x{w}", fontsize=14, weight="bold",
                    va="top")
            ax.text(_LEFT, 0.62, f"{info.paper} (arXiv {info.arxiv}); MACs = multiply-"
                    f"accumulates (FLOPs = 2 x MACs)", fontsize=8.5, va="top", color="#444")
            if overrides:
                ax.text(_LEFT, 0.84, "flags: " + ", ".join(f"{k}={v!r}"
                                                          for k, v in overrides.items()),
                        fontsize=8.5, va="top", color="#444")
            centre = (_LEFT + _RIGHT) / 2
            for i, ((kind, s, box_h), top) in enumerate(zip(items, tops, strict=True)):
                if i > 0 and kind != "part":  # the arrow from the box (or part) above
                    ax.annotate("", xy=(centre, top), xytext=(centre, tops[i - 1]
                                                               + items[i - 1][2]),
                                arrowprops={"arrowstyle": "-|>", "color": "#555", "lw": 1.2})
                if kind in ("input", "output"):
                    text = f"input {c}x{h}x{w}" if kind == "input" else out_text
                    ax.add_patch(FancyBboxPatch((centre - 1.6, top), 3.2, box_h,
                                                boxstyle="round,pad=0,rounding_size=0.2",
                                                fc="white", ec="#333", lw=1.2))
                    ax.text(centre, top + box_h / 2, text, ha="center", va="center",
                            fontsize=10, weight="bold")
                    continue
                _draw_row(ax, s, stage_cells(s), top, box_h,
                          colours.get(tuple(s.output[1:]), "#e6e6e6"), FancyBboxPatch)
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=120)
        finally:
            plt.close(fig)
    return out


def _draw_row(ax: Any, s: Any, cells: list[str], top: float, box_h: float, colour: Any,
              box_cls: type) -> None:
    """One stage box: name and blocks (left), layers (middle), output and cost (right). A part
    (``part_of``) is indented and dashed, and says that its stage's numbers include it."""
    name, size, chans, layers, blocks, params, macs = cells
    part = bool(s.part_of)
    left = _LEFT + (0.5 if part else 0.0)
    if len(s.output) < 2:  # a vector (the classifier): no resolution to colour by
        colour = "#e6e6e6"
    ax.add_patch(box_cls((left, top), _RIGHT - left, box_h,
                         boxstyle="round,pad=0,rounding_size=0.08", fc=colour,
                         ec="#666" if part else "#333", lw=1.0, ls="--" if part else "-"))
    y, x = top + _PAD, left + _NAME_X - _LEFT
    notes = [f"{blocks} block{'' if blocks == '1' else 's'}"] if blocks else []
    if part:
        notes.append(f"included in {s.part_of}")
    name_lines = textwrap.wrap(name.strip(), _NAME_CHARS)
    for k, line in enumerate(name_lines):
        ax.text(x, y + k * _LINE, line, va="top", fontsize=10,
                weight="normal" if part else "bold", style="italic" if part else "normal")
    for k, note in enumerate(notes, len(name_lines)):
        ax.text(x, y + k * _LINE, note, va="top", fontsize=8, color="#444")

    lines = layer_lines(layers)
    groups: dict[int, list[Any]] = {}
    for k, (text, group, _) in enumerate(lines):
        t = ax.text(_LAYERS_X, y + k * _LINE, text, va="top", fontsize=9)
        if group is not None:
            groups.setdefault(group, []).append((k, t))
    renderer = ax.figure.canvas.get_renderer()
    for members in groups.values():  # [ the group's lines ] xN, as in ResNet's Table 1
        (first, _), (final, _) = members[0], members[-1]
        y0, y1 = y + first * _LINE + 0.01, y + (final + 1) * _LINE - 0.03
        widest = max(t.get_window_extent(renderer).width for _, t in members) / ax.figure.dpi
        x0, x1 = _LAYERS_X - 0.07, _LAYERS_X + widest + 0.07
        ax.plot([x0 + 0.05, x0, x0, x0 + 0.05], [y0, y0, y1, y1], color="#333", lw=0.9)
        ax.plot([x1 - 0.05, x1, x1, x1 - 0.05], [y0, y0, y1, y1], color="#333", lw=0.9)
        ax.text(x1 + 0.08, (y0 + y1) / 2, lines[first][2], va="center", fontsize=10,
                weight="bold")
    ax.text(_OUT_X, y, f"{size}, {chans} ch", ha="right", va="top", fontsize=10,
            weight="bold")
    ax.text(_OUT_X, y + _LINE + 0.02, f"{params} params, {macs} MACs", ha="right", va="top",
            fontsize=8, color="#444")
