"""Every pretrained tag: size, published accuracy, licence, port parity -> results/pretrained.*

    python benchmarks/pretrained_results.py                     # every tag, ~5-15 min on 2 cores
    python benchmarks/pretrained_results.py --tags 'resnet*' --out-dir /tmp/pretrained

For every ``model.tag`` of ``visionzoo.list_pretrained()`` this writes one row of
``pretrained.md`` and its twin ``pretrained.json``:

* params and MACs of our model in the tag's layout (the flags its port implies), at the tag's
  ``input_size`` (the model's default size where the source publishes no eval config);
* the top-1 / top-5 the source publishes for those weights, and their licence;
* the port's parity: the source library's network (torchvision / timm / efficientnet_pytorch,
  built without weights), given seeded random weights *including BatchNorm running statistics*
  (``visionzoo.layers.randomize_weights_``), converted by ``visionzoo.port(source, name, sd)``
  into ours, and both run in eval mode on the same random input; the cell is the max |logit
  difference|. No weights are downloaded: the check is of the conversion and the architecture,
  which is what every tag loading through that port relies on. Many tags share one port (all of
  timm's ``resnet50.*`` load through ``timm:resnet50``), so each port is compared once.

Input of the parity check: ``--side`` pixels (64) for the CNNs, or the model's minimum where it
is larger (AlexNet); Swin at its weights' size (224 or 384), where timm's window attention is
fixed. efficientnet_pytorch's network fixes its TF "same" padding at construction, so it is built
with ``image_size=side`` (its own default would pad for its published size, not this input).
A row that fails records its error and the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIXED_SIZE_FAMILIES = {"swin"}  # compared at their weights' input size
REFERENCE_SOURCES = ("torchvision", "timm", "efficientnet_pytorch")


def _human(n: float | None) -> str:
    from visionzoo.profile import human

    return "-" if n is None else human(n)


def _one_line(e: BaseException) -> str:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first[:200]}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}".rstrip("0").rstrip(".")


def _diff(v: float | None) -> str:
    return "-" if v is None else ("0" if v == 0 else f"{v:.1e}")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


# ---------------------------------------------------------------------------------------------
# the reference network and the parity of one port
# ---------------------------------------------------------------------------------------------


def build_reference(source: str, name: str, side: int) -> torch.nn.Module:
    """The source library's network without weights. efficientnet_pytorch gets ``image_size``
    (its static "same" padding is computed for it); the rest come from ``bench``'s helper."""
    if source == "efficientnet_pytorch":
        from efficientnet_pytorch import EfficientNet

        return EfficientNet.from_name(name, image_size=side)
    from visionzoo.bench import ReferenceUnavailable
    from visionzoo.bench import build_reference as bench_reference

    if source not in REFERENCE_SOURCES:
        raise ReferenceUnavailable(f"no {source} reference network here (this script builds "
                                   f"them with {', '.join(REFERENCE_SOURCES)})")
    return bench_reference(source, name)


def _parity_side(source: str, ref: torch.nn.Module, family: str, side: int,
                 min_side: int) -> int:
    if family in FIXED_SIZE_FAMILIES:
        cfg = getattr(ref, "pretrained_cfg", None) or {}  # timm: the size its windows are for
        return int(cfg.get("input_size", (3, 224, 224))[-1]) if source == "timm" else 224
    return max(side, min_side)


def port_parity(source: str, name: str, family: str, side: int, min_side: int, batch: int,
                seed: int) -> dict[str, Any]:
    """Max |logit difference| between the reference and our port of its (random) weights."""
    import visionzoo as vz
    from visionzoo.bench import ReferenceUnavailable
    from visionzoo.layers import randomize_weights_

    t0 = time.perf_counter()
    out: dict[str, Any] = {"port": f"{source}:{name}", "side": None, "batch": batch,
                           "max_diff": None, "max_abs_logit": None, "params_equal": None,
                           "seconds": None, "error": "", "not_compared": ""}
    try:
        probe = max(side, min_side)
        ref = build_reference(source, name, probe)
        out["side"] = s = _parity_side(source, ref, family, side, min_side)
        if s != probe and source == "efficientnet_pytorch":
            ref = build_reference(source, name, s)
        randomize_weights_(ref.eval(), seed)
        ours = vz.port(source, name, ref.state_dict()).eval()
        out["params_equal"] = (sum(p.numel() for p in ours.parameters())
                               == sum(p.numel() for p in ref.parameters()))
        x = torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            want, got = ref(x), ours(x)
        if want.shape != got.shape:
            raise RuntimeError(f"logits of shape {tuple(got.shape)}, the reference's "
                               f"{tuple(want.shape)}")
        out["max_diff"] = float((want - got).abs().max())
        out["max_abs_logit"] = float(want.abs().max())
    except ReferenceUnavailable as e:  # a source with no reference library here (openmmlab)
        out["not_compared"] = str(e)
    except Exception as e:  # noqa: BLE001 - recorded in the row; the other ports still run
        out["error"] = _one_line(e)
    finally:
        ref = ours = None
        gc.collect()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


# ---------------------------------------------------------------------------------------------
# one row per tag
# ---------------------------------------------------------------------------------------------


def _profile(model: str, flags: dict[str, Any], size: tuple[int, ...],
             cache: dict[Any, tuple[int, int]]) -> tuple[int, int]:
    key = (model, tuple(sorted((k, repr(v)) for k, v in flags.items())), size)
    if key not in cache:
        import visionzoo as vz

        prof = vz.profile(model, input_size=size, **flags)
        cache[key] = (prof.params, prof.macs)
    return cache[key]


def tag_row(name: str, profiles: dict[Any, tuple[int, int]]) -> dict[str, Any]:
    import visionzoo as vz
    from visionzoo.pretrained import get_pretrained, split_tag

    model, tag = split_tag(name)
    info = vz.model_info(model)
    row: dict[str, Any] = {"name": name, "model": model, "tag": tag, "family": info.family,
                           "default": False, "kind": None, "source": None, "location": None,
                           "port": None, "flags": {}, "input_size": None, "cfg_published": None,
                           "params": None, "macs": None, "top1": None, "top5": None,
                           "accuracy_source": "", "license": "", "unverified": "", "error": ""}
    try:
        t = get_pretrained(model, tag)
        row.update(default=t.default, kind=t.kind, source=t.source, location=t.location,
                   port=t.port, top1=t.top1, top5=t.top5, accuracy_source=t.accuracy_source,
                   license=t.license, unverified=t.unverified)
        row["flags"] = flags = t.flags
        size = t.cfg.get("input_size") if t.cfg else None
        row["cfg_published"] = size is not None
        row["input_size"] = list(size or info.input_size)
        row["params"], row["macs"] = _profile(model, flags, tuple(row["input_size"]), profiles)
    except Exception as e:  # noqa: BLE001 - recorded in the row
        row["error"] = _one_line(e)
    return row


def _notes(row: dict[str, Any], parity: dict[str, Any] | None, side: int) -> str:
    notes = []
    if row["cfg_published"] is False:
        notes.append(f"no published eval cfg: MACs at {row['input_size'][-1]}")
    if row["unverified"]:
        notes.append("unverified facts (json)")
    if parity:
        if parity["side"] is not None and parity["side"] != side:
            notes.append(f"Δ at {parity['side']} px")
        if parity["params_equal"] is False:
            notes.append("param count differs from the reference")
        if parity["not_compared"]:
            notes.append(f"not compared: {parity['not_compared']}")
        if parity["error"]:
            notes.append(f"parity failed: {parity['error']}")
    if row["error"]:
        notes.append(row["error"])
    return "; ".join(notes)


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def _machine(threads: int) -> dict[str, Any]:
    from visionzoo.bench import machine_info

    info = machine_info()
    info["torch_threads"] = threads
    try:
        import efficientnet_pytorch

        info["efficientnet_pytorch"] = getattr(efficientnet_pytorch, "__version__", "?")
    except ImportError:
        info["efficientnet_pytorch"] = None
    return info


def write_markdown(path: Path, doc: dict[str, Any]) -> None:
    m, s, summ = doc["machine"], doc["settings"], doc["summary"]
    lines = [
        "# Pretrained weights: every tag, its size, published accuracy and port parity",
        "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPU(s), {m['torch_threads']} torch "
        f"thread(s); torch {m['torch']}, torchvision {m['torchvision']}, timm {m['timm']}, "
        f"efficientnet_pytorch {m['efficientnet_pytorch']}; {m['date']}; load average at start "
        f"{m.get('loadavg', '?')}",
        f"Command: `{doc['command']}` ({doc['seconds'] / 60:.1f} min)",
        "",
        "params / MACs: our model in the tag's layout (the flags its port sets), at the tag's "
        "published `input_size` (`input`); MACs = multiply-accumulates per image (FLOPs = 2 x "
        "MACs). top-1 / top-5: ImageNet-1k validation accuracy as the source publishes it for "
        "those weights (`-`: none published). **Bold** tag: the model's default. "
        "max |Δlogit|: the source library's network with seeded random weights (BatchNorm "
        "running statistics included), converted by `visionzoo.port()` into ours, both in eval "
        f"mode on the same random input of batch {s['batch']} at {s['side']} px (the CNNs; "
        "AlexNet at its minimum of 223) or at the weights' size (Swin: 224 or 384); computed "
        "once per port and shared by every tag that loads through it. No weights are "
        "downloaded. A port whose source library cannot build the network here is listed as "
        "not compared.",
        "",
        f"**{summ['tags']} tags for {summ['models_with_weights']} of {summ['models']} registered "
        f"models** ({summ['ports']} distinct ports; largest max |Δlogit| "
        f"{_diff(summ['largest_diff'])} on {summ['largest_diff_port']}, with logits up to "
        f"{summ['largest_abs_logit'] or 0:.3g} in size; {len(summ['not_compared_ports'])} port(s) "
        f"not compared; {len(summ['failed_ports'])} port(s) and {len(summ['failed_rows'])} "
        f"row(s) failed). "
        f"{len(doc['no_weights'])} models have no weights:",
        "",
    ]
    lines += [f"- {model}: {reason}" for model, reason in doc["no_weights"].items()]
    lines += [
        "",
        "| model | tag | source | port | input | params | MACs | top-1 | top-5 | licence "
        "| max \\|Δlogit\\| | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    family = None
    for r in doc["rows"]:
        if r["family"] != family:
            family = r["family"]
            lines.append(f"| ***{family}*** |" + " |" * 11)
        tag = f"**{r['tag']}**" if r["default"] else r["tag"]
        size = r["input_size"][-1] if r["input_size"] else "-"
        cells = [r["model"], tag, r["source"] or "-", r["port"] or "-", size,
                 _human(r["params"]), _human(r["macs"]), _pct(r["top1"]), _pct(r["top5"]),
                 r["license"] or "-", _diff(r["max_diff"]), r["notes"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    fails = [f"- {p['port']}: {p['error']}" for p in doc["ports"].values() if p["error"]]
    fails += [f"- {p['port']}: not compared, {p['not_compared']}"
              for p in doc["ports"].values() if p["not_compared"]]
    fails += [f"- {r['name']}: {r['error']}" for r in doc["rows"] if r["error"]]
    lines += ["", "Failures and ports not compared: " + ("none." if not fails else ""), *fails]
    slow = sorted(doc["ports"].values(), key=lambda p: -(p["seconds"] or 0))[:5]
    lines += ["", "Slowest parity checks: " + ", ".join(
        f"{p['port']} {p['seconds']:.1f} s" for p in slow) + "."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tags", nargs="*", default=["*"],
                   help="fnmatch patterns over model or model.tag names (default: all)")
    p.add_argument("--side", type=int, default=64, help="parity input size of the CNNs")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    import visionzoo as vz
    from visionzoo.pretrained import get_pretrained, no_weights_reason, split_tag

    t0 = time.perf_counter()
    machine = _machine(args.threads)
    names = list(dict.fromkeys(n for pat in args.tags for n in vz.list_pretrained(pat)))
    order = {n: i for i, n in enumerate(vz.list_pretrained())}
    names.sort(key=order.__getitem__)
    profiles: dict[Any, tuple[int, int]] = {}
    ports: dict[str, dict[str, Any]] = {}
    rows = []
    for name in names:
        row = tag_row(name, profiles)
        parity = None
        if row["port"]:
            if row["port"] not in ports:
                source, _, ref_name = row["port"].partition(":")
                model = get_pretrained(*split_tag(name)).port_spec.model
                info = vz.model_info(model)
                ports[row["port"]] = port_parity(source, ref_name, info.family, args.side,
                                                 info.min_input_size, args.batch, args.seed)
                q = ports[row["port"]]
                print(f"[{time.perf_counter() - t0:6.0f} s] {row['port']}: "
                      f"{_diff(q['max_diff'])} at {q['side']} px in {q['seconds']:.1f} s "
                      f"{q['error'] or q['not_compared']}", file=sys.stderr, flush=True)
            parity = ports[row["port"]]
            row["max_diff"] = parity["max_diff"]
            row["parity_side"] = parity["side"]
        else:
            row["max_diff"] = row["parity_side"] = None
        row["notes"] = _notes(row, parity, args.side)
        rows.append(row)

    models = vz.list_models()
    no_weights = {m: no_weights_reason(m) or "" for m in models if no_weights_reason(m)}
    with_diff = [q for q in ports.values() if q["max_diff"] is not None]
    worst = max(with_diff, key=lambda q: q["max_diff"], default=None)
    summary = {
        "tags": len(rows), "models": len(models),
        "models_with_weights": len({r["model"] for r in rows}),
        "ports": len(ports),
        "largest_diff": worst["max_diff"] if worst else None,
        "largest_diff_port": worst["port"] if worst else None,
        "largest_abs_logit": max((q["max_abs_logit"] for q in with_diff), default=None),
        "failed_ports": [q["port"] for q in ports.values() if q["error"]],
        "not_compared_ports": [q["port"] for q in ports.values() if q["not_compared"]],
        "failed_rows": [r["name"] for r in rows if r["error"]],
    }
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    doc = {
        "what": "pretrained tags: params, MACs, published accuracy, licence, port parity",
        "command": f"python benchmarks/pretrained_results.py {argv_text}".strip(),
        "machine": machine,
        "settings": {"side": args.side, "batch": args.batch, "seed": args.seed,
                     "threads": args.threads, "tags": args.tags},
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "no_weights": no_weights,
        "ports": ports,
        "rows": rows,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrained.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_markdown(out / "pretrained.md", doc)
    print(f"wrote {out / 'pretrained.md'} and pretrained.json in {doc['seconds'] / 60:.1f} min: "
          f"{len(rows)} tags, {len(ports)} ports, largest max |Δlogit| "
          f"{_diff(summary['largest_diff'])} ({summary['largest_diff_port']}), "
          f"{len(summary['failed_ports'])} failed ports, {len(summary['failed_rows'])} failed rows",
          file=sys.stderr)
    return 1 if summary["failed_ports"] or summary["failed_rows"] else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
    sys.exit(main())
