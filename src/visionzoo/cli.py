"""`visionzoo <command>`: parses arguments and calls the library; nothing else lives here.

User errors (unknown model, missing file, bad argument, weights that do not fit, a constructor
argument the model refuses) end with a one-line message on stderr and exit status 1 (2 for usage
errors argparse finds), never a traceback; ``VISIONZOO_DEBUG=1`` shows the traceback. visionzoo's
warnings (an empty class folder) are one line too.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


class UserError(Exception):
    """An error to report in one line, without a traceback."""


# YAML's words, as in recipes and --model-args: `--set stride_in_1x1=false` must not be the
# (truthy) string "false"
_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False,
          "none": None, "null": None, "~": None}


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs; values are Python literals when they parse as one, true/false/
    yes/no/on/off/null in any case are booleans/None, anything else is a string (the model's
    constructor checks the type)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--set expects key=value with a keyword name, got {item!r}")
        if key in out:
            raise UserError(f"--set {key} given twice")
        raw = raw.strip()
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[key] = _WORDS.get(raw.lower(), raw)
    return out


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def _list_pretrained(patterns: list[str]) -> int:
    from visionzoo.pretrained import no_weights_reason, pretrained_tags
    from visionzoo.registry import list_models

    names = list_models(patterns or "*")
    if not names:
        raise UserError(f"no model matches {' '.join(patterns)}")
    rows, without = [["tag", "default", "top-1", "top-5", "license", "source"]], []
    for name in names:
        tags = pretrained_tags(name)
        if not tags:
            without.append(f"{name}: {no_weights_reason(name)}")
        for t in tags:
            rows.append([t.name, "*" if t.default else "", _pct(t.top1), _pct(t.top5),
                         t.license[:16], t.source])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    print(f"{len(rows) - 1} tags for {len(names) - len(without)} of {len(names)} models "
          f"(* = the default of pretrained=True; top-1/top-5 as the source publishes them)")
    for line in without:
        print(f"  no weights: {line}")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


LIST_WIDTH = 120  # `visionzoo list` lines fit this many columns (the paper title is cut)


def _weights_cell(name: str) -> str:
    """``N, best%``: the model's pretrained tags and the best published top-1 among them."""
    from visionzoo.pretrained import pretrained_tags

    tags = pretrained_tags(name)
    if not tags:
        return "-"
    best = max((t.top1 for t in tags if t.top1 is not None), default=None)
    return f"{len(tags)}" + (f", {best:.1f}%" if best is not None else "")


def cmd_list(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _list_pretrained(args.patterns)
    from visionzoo.profile import human, table_stats
    from visionzoo.registry import list_models, model_info

    names = list_models(args.patterns or "*")
    if not names:
        raise UserError(f"no model matches {' '.join(args.patterns)}")
    rows = [["model", "family", "input", "params", "MACs", "weights", "paper"]]
    for name in names:
        info = model_info(name)
        params, macs = table_stats(name)  # the committed table; measured only if missing
        rows.append([name, info.family, "x".join(map(str, info.input_size[1:])),
                     human(params), human(macs), _weights_cell(name), info.paper])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    room = max(LIST_WIDTH - sum(widths) - 2 * len(widths), 20)
    for r in rows:
        title = r[-1] if len(r[-1]) <= room else r[-1][:room - 3].rstrip() + "..."
        print(("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  "
               + title).rstrip())
    print(f"{len(names)} models; MACs = multiply-accumulates at the input size shown; the full "
          f"paper title in `visionzoo info MODEL`\nweights = pretrained tags, and the best "
          f"ImageNet top-1 their sources publish (`visionzoo list --pretrained` lists them)")
    return 0


def _at_least(value: int | None, low: int, flag: str) -> None:
    if value is not None and value < low:
        raise UserError(f"{flag} must be at least {low}; got {value}")


def cmd_info(args: argparse.Namespace) -> int:
    from visionzoo.profile import format_info
    from visionzoo.registry import model_info

    args.model = _required_model(args, "info")
    _at_least(args.size, 1, "--size")
    _at_least(args.in_chans, 1, "--in-chans")
    if args.plot:
        from visionzoo.diagram import DIAGRAM_SUFFIXES

        if Path(args.plot).suffix.lower() not in DIAGRAM_SUFFIXES:
            raise UserError(f"--plot {args.plot}: the diagram must end in "
                            f"{', '.join(DIAGRAM_SUFFIXES[:-1])} or {DIAGRAM_SUFFIXES[-1]}")
        from visionzoo.extras import require_pyplot

        require_pyplot("the architecture diagram")  # before the table is computed and printed
    paper = model_info(args.model).input_size  # unknown names fail here, with suggestions
    size = None
    if args.size is not None:
        size = (args.in_chans, args.size, args.size)
    overrides = parse_overrides(args.set)
    if args.in_chans != 3:
        overrides["in_chans"] = args.in_chans
        size = size or (args.in_chans, *paper[1:])
    if overrides:  # create_model's argument checks (profile builds from the raw builder)
        import torch

        from visionzoo.factory import create_model

        with torch.device("meta"):  # nothing allocated or computed
            create_model(args.model, **overrides)
    print(format_info(args.model, size, **overrides))
    if args.plot:
        from visionzoo.diagram import plot_architecture

        print(f"wrote {plot_architecture(args.model, args.plot, size, **overrides)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from visionzoo.profile import format_verify, verify
    from visionzoo.registry import list_models

    patterns = args.patterns or ["*"]
    if not list_models(patterns):
        raise UserError(f"no model matches {' '.join(patterns)}")
    rows = verify(patterns)
    fmt = "json" if args.json else "markdown" if args.markdown else "text"
    print(format_verify(rows, fmt))
    return 0 if all(r.passed for r in rows) else 1


def cmd_port(args: argparse.Namespace) -> int:
    from visionzoo.checkpoint import save_checkpoint
    from visionzoo.ports import port

    model = port(args.source, args.name, args.weights)
    out = save_checkpoint(model, args.out, extra={"ported_from": f"{args.source}:{args.name}"})
    n = sum(p.numel() for p in model.parameters())
    print(f"ported {args.source} {args.name} -> {model.model_name} "
          f"({', '.join(f'{k}={v!r}' for k, v in model.model_config.items())}); "
          f"{n:,} parameters; saved {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------

# (name, help, add_arguments, handler); a new command adds one entry here
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None],
                      Callable[[argparse.Namespace], int]]] = []


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="fnmatch patterns, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true",
                   help="list the pretrained tags (model.tag, source, published top-1/top-5, "
                        "licence) instead, and why the other models have none")


def _add_info(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    p.add_argument("--size", type=int, help="input height = width (default: the paper's)")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="constructor flag, e.g. --set stride_in_1x1=False (repeatable)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="also draw the stage table as a block diagram (.png, .svg or .pdf; "
                        "needs matplotlib)")


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", metavar="PATTERN")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--markdown", action="store_true", help="a Markdown table")
    g.add_argument("--json", action="store_true", help="JSON rows")


def _add_port(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["torchvision", "timm", "efficientnet_pytorch"])
    p.add_argument("name", help="the source library's model name, e.g. resnet50")
    p.add_argument("weights", help="the source's weights file (.pth/.pt/.bin/.safetensors)")
    p.add_argument("--out", required=True, help="visionzoo checkpoint to write (.safetensors)")


COMMANDS += [
    ("list", "registered models with params, MACs and paper", _add_list, cmd_list),
    ("info", "the paper-style stage table of one model", _add_info, cmd_info),
    ("verify", "published vs measured params and MACs; non-zero exit on a failing row",
     _add_verify, cmd_verify),
    ("port", "convert a torchvision/timm/efficientnet_pytorch weights file", _add_port, cmd_port),
]


# ---------------------------------------------------------------------------------------------
# predict (visionzoo.predict does the work)
# ---------------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from visionzoo.predict import PredictError, format_predictions, load_classifier, predict

    _predict_model_from_images(args)
    if args.weights and not args.model:
        raise UserError("--weights needs --model (the registered name the weights are for)")
    if args.pretrained is not None and not args.model:
        raise UserError("--pretrained needs --model (the registered name the weights are for)")
    for flag in ("topk", "batch_size", "threads"):
        _at_least(getattr(args, flag), 1, "--" + flag.replace("_", "-"))
    if args.cam:
        _check_cam(args)
    if args.deployed:
        from visionzoo.deploy import load_deployed
        from visionzoo.predict import class_names_for

        if args.runtime:
            raise UserError("--deployed already names its runtime; drop --runtime")
        model = load_deployed(args.deployed)
        if args.model and model.name != args.model:
            raise UserError(f"{args.deployed} holds {model.name}, not {args.model}")
        names = class_names_for(model.num_classes) if model.num_classes else None
    else:
        if args.pretrained is not None:
            model, names = _pretrained_classifier(args.model, args.pretrained)
        else:
            model, names = load_classifier(args.model, args.weights, args.checkpoint)
        if args.runtime:
            from visionzoo.deploy import deploy

            model = deploy(model, args.runtime, batch_size=args.batch_size,
                           threads=args.threads)
            print(f"visionzoo predict: {model.report.summary().splitlines()[0]}",
                  file=sys.stderr)
    results = predict(model, args.images, names, topk=args.topk, batch_size=args.batch_size)
    failed = [r for r in results if isinstance(r, PredictError)]
    for r in failed:  # one line per unreadable file; the others still get their predictions
        print(f"visionzoo predict: error: {r.message}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"path": r.path, "error": r.message} if isinstance(r, PredictError) else
                          {"path": r.path, "topk": [{"index": c, "name": n, "probability": p}
                                                    for c, n, p in r.topk]} for r in results],
                         indent=2))
    elif len(failed) < len(results):
        print(format_predictions(results))
    if args.cam:
        _write_cams(model, names, results, args.cam)
    return 1 if failed else 0


def _check_cam(args: argparse.Namespace) -> None:
    """--cam before any model is loaded: an image suffix, the eager model, pyplot."""
    from visionzoo.cam import CAM_SUFFIXES
    from visionzoo.extras import require_pyplot

    if args.deployed or args.runtime:
        raise UserError("--cam needs the eager model's gradients (Grad-CAM); drop "
                        f"{'--deployed' if args.deployed else '--runtime'}")
    if Path(args.cam).suffix.lower() not in CAM_SUFFIXES:
        raise UserError(f"--cam {args.cam}: the image must end in "
                        f"{', '.join(CAM_SUFFIXES[:-1])} or {CAM_SUFFIXES[-1]}")
    require_pyplot("Grad-CAM overlays")


def _cam_paths(out: str, images: Sequence[str]) -> list[Path]:
    """OUT for one image; else OUT's stem + "-" + each image's stem + OUT's suffix, with "-2",
    "-3", ... where two images share a stem (a/cat.png and b/cat.png)."""
    base = Path(out).expanduser()
    if len(images) == 1:
        return [base]
    paths: list[Path] = []
    taken: set[str] = set()
    for image in images:
        stem, n = f"{base.stem}-{Path(image).stem}", 1
        name = stem
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name.lower())
        paths.append(base.with_name(name + base.suffix))
    return paths


def _write_cams(model: Any, names: Sequence[str] | None, results: Sequence[Any],
                out: str) -> None:
    """One Grad-CAM overlay per classified image, of its top-1 class; each path on stderr."""
    from visionzoo.cam import grad_cam, save_cam
    from visionzoo.predict import PredictError

    for result, path in zip(results, _cam_paths(out, [r.path for r in results]), strict=True):
        if isinstance(result, PredictError):
            continue  # already reported
        cam = grad_cam(model, result.path, result.top1[0], class_names=names)
        print(save_cam(cam, path), file=sys.stderr)


_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def _pretrained_value(text: str) -> bool | str | Path:
    """``--pretrained``'s value: true/false (any case, yes/no/on/off/1/0), an existing file's
    path, or else a pretrained tag (given to ``create_model`` as a string)."""
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1", "default"):
        return True
    if word in ("false", "no", "off", "0", "none", "random"):
        return False
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if os.sep in text or "/" in text or path.suffix.lower() in _WEIGHT_SUFFIXES:
        raise UserError(f"--pretrained {text}: no such file")
    return text


def _pretrained_classifier(name: str, pretrained: str) -> tuple[Any, list[str]]:
    """``create_model(name, pretrained=...)`` in eval mode, and its class names."""
    from visionzoo import create_model
    from visionzoo.predict import class_names_for

    value = _pretrained_value(pretrained)
    if value is False:
        raise UserError("--pretrained false gives random weights; nothing to predict with")
    model = create_model(name, pretrained=value)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes <= 0:
        raise UserError(f"{name} has no classifier (num_classes=0); nothing to predict")
    return model.eval(), class_names_for(num_classes)


def _predict_model_from_images(args: argparse.Namespace) -> None:
    """``predict MODEL IMAGE...``: the first positional is the model when it is a registered
    name and not an existing file (as every other command takes MODEL positionally); an image
    right after a bare ``--pretrained`` is an image."""
    from visionzoo.data.datasets import IMG_EXTENSIONS
    from visionzoo.registry import list_models

    first = args.images[0]
    if first in list_models() and not Path(first).exists():
        if args.model and args.model != first:
            raise UserError(f"two models given: {first} and --model {args.model}")
        args.model, args.images = first, args.images[1:]
    if args.pretrained and Path(args.pretrained).suffix.lower() in IMG_EXTENSIONS:
        # `--pretrained cat.jpg`: the bare flag (default weights) before an image, not a weights
        # file (no weights file is an image)
        args.images, args.pretrained = [args.pretrained, *args.images], "true"
    if not args.images:
        raise UserError(f"no image given: visionzoo predict {args.model or 'MODEL'} IMAGE...")


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="[MODEL] IMAGE",
                   help="image files (any Pillow format), optionally after the model name")
    p.add_argument("-m", "--model", help="registered model name (needed with --weights / "
                                         "--pretrained; or give it before the images)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--weights", help="torchvision/timm/efficientnet_pytorch weights file")
    g.add_argument("--checkpoint", help="visionzoo checkpoint (.safetensors)")
    g.add_argument("--deployed", metavar="DIR", help="a deployment saved by `visionzoo deploy`")
    g.add_argument("--pretrained", metavar="TAG|PATH|true", nargs="?", const="true",
                   help="create_model(MODEL, pretrained=...): a pretrained tag, a weights file "
                        "or checkpoint, or true (the default without a value: the model's "
                        "default weights)")
    p.add_argument("--runtime", choices=["auto", "onnxruntime", "openvino", "torch"],
                   help="run on an engine (visionzoo.deploy; parity-checked) instead of eager "
                        "PyTorch")
    p.add_argument("--threads", type=int, help="engine threads (default: torch's)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--cam", metavar="OUT.png",
                   help="also draw the Grad-CAM of each image's top class over it (.png, .svg, "
                        ".jpg, .pdf; several images: OUT-<image stem>.png); needs matplotlib")


COMMANDS += [
    ("predict", "top-k ImageNet (or checkpoint) classes of image files", _add_predict,
     cmd_predict),
]


# ---------------------------------------------------------------------------------------------
# train / eval (visionzoo.engine does the work)
# ---------------------------------------------------------------------------------------------


def _model_arg(args: argparse.Namespace) -> str | None:
    """MODEL given positionally or as -m/--model (the same way as every other command)."""
    if args.model and args.model_opt and args.model != args.model_opt:
        raise UserError(f"two models given: {args.model} and --model {args.model_opt}")
    return args.model or args.model_opt


def _required_model(args: argparse.Namespace, command: str) -> str:
    """MODEL (positional or -m/--model) for the commands that cannot run without one."""
    name = _model_arg(args)
    if not name:
        raise UserError(f"name a model: visionzoo {command} MODEL (or -m MODEL); "
                        f"`visionzoo list` shows them")
    return name


def cmd_train(args: argparse.Namespace) -> int:
    from visionzoo.recipes import LEGACY_KEYS, RECIPE_KEYS, list_recipes, load_recipe

    if args.list_recipes:
        for name in list_recipes():
            print(f"{name:14s} {load_recipe(name).get('description', '')}")
        return 0
    model = _model_arg(args)
    if not args.resume and (not model or not args.data):
        raise UserError("--model and --data are required (or --resume --out RUN_DIR)")
    from visionzoo.engine import TrainingDiverged, TrainingInterrupted, train

    overrides = {k: getattr(args, f"rk_{k}") for k in [*RECIPE_KEYS, *LEGACY_KEYS]
                 if hasattr(args, f"rk_{k}")}
    try:
        train(model, args.data, recipe=args.recipe, overrides=overrides, out=args.out,
              resume=args.resume)
    except TrainingDiverged as e:
        raise UserError(str(e)) from None
    except TrainingInterrupted as e:
        print(f"visionzoo train: {e}", file=sys.stderr)
        return 130
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from visionzoo.engine import evaluate

    model = _model_arg(args)
    if args.pretrained is not None:
        if not model:
            raise UserError("--pretrained needs the model name (visionzoo eval MODEL "
                            "--pretrained [TAG])")
        net, _ = _pretrained_classifier(model, args.pretrained)
        path, source = Path(args.out or "."), net
    else:
        path = Path(args.checkpoint or args.weights)
        source = path
        if args.weights and not model:
            raise UserError("--weights needs the model name (visionzoo eval MODEL --weights W)")
    r = evaluate(source, args.data, model_name=model, split=args.split,
                 batch_size=args.batch_size, workers=args.workers, device=args.device,
                 amp=args.amp, out_dir=args.out or (path if args.pretrained is not None
                                                    else path.parent),
                 progress="auto" if not args.json else "off")
    if args.results_file:
        Path(args.results_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results_file).write_text(json.dumps(r, indent=2) + "\n")
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "confusion"}, indent=2))
        return 0
    print(f"{r['model']} {r['checkpoint']} on {r['data']} {r['split']} ({r['images']:,} images): "
          f"top-1 {r['top1']:.2%}  top-5 {r['top5']:.2%}  loss {r['loss']:.4f}")
    width = max(len(c["class"]) for c in r["per_class"])
    print("per-class accuracy:")
    for c in r["per_class"]:
        correct = round(c["accuracy"] * c["images"])
        print(f"  {c['class']:<{width}}  {c['accuracy']:7.2%}  ({correct}/{c['images']})")
    if r["skipped"]:
        print(f"skipped {r['skipped']} undecodable images, e.g. {r['skipped_paths'][0]}")
    png = f"confusion matrix: {r['confusion_png']}; " if r.get("confusion_png") else ""
    print(f"{png}results: {r['json']}")  # no PNG without the [plots] extra
    return 0


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL", help="registered model name, e.g. resnet20")
    p.add_argument("-m", "--model", dest="model_opt", metavar="MODEL", help="the same as MODEL")


# timm's short options for recipe keys
_SHORT = {"batch_size": "-b", "workers": "-j"}


def _add_train(p: argparse.ArgumentParser) -> None:
    from visionzoo.recipes import RECIPE_KEYS

    _add_model_arg(p)
    p.add_argument("--data", help="fashion-mnist | cifar10 | cifar100 | a dataset folder "
                                  "(ImageFolder train/ val/, IDX files, CIFAR python batches)")
    p.add_argument("--recipe", help="packaged recipe name or a YAML file (default: small_cpu; "
                                    "see --list-recipes)")
    p.add_argument("--out", help="run directory (default: runs/<model>_<data>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--list-recipes", action="store_true", help="list the packaged recipes")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, spec in RECIPE_KEYS.items():
        if spec.group == "about":
            continue
        if spec.group not in groups:
            groups[spec.group] = p.add_argument_group(f"recipe keys ({spec.group}); override the "
                                                      f"recipe" if not groups else spec.group)
        extra: dict[str, Any] = {}
        if spec.kind == "bool":
            extra = {"nargs": "?", "const": "true"}
        choices = f" {{{','.join(spec.choices)}}}" if spec.choices else ""
        flags = ["--" + key.replace("_", "-"), *([_SHORT[key]] if key in _SHORT else [])]
        groups[spec.group].add_argument(
            *flags, dest=f"rk_{key}", default=argparse.SUPPRESS,
            metavar=spec.kind.upper(), help=f"{spec.help}{choices} [{spec.default}]", **extra)
    # --bf16 of older releases: amp bf16 (recipes and saved runs map the key the same way)
    p.add_argument("--bf16", dest="rk_bf16", nargs="?", const="true", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)


def _add_eval(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a visionzoo checkpoint (model.safetensors of a run) or "
                                        "a torchvision/timm/efficientnet_pytorch weights file")
    g.add_argument("--weights", help="torchvision/timm/efficientnet_pytorch weights file "
                                     "(.pth/.pt/.bin/.safetensors) for MODEL")
    g.add_argument("--pretrained", metavar="TAG", nargs="?", const="true",
                   help="MODEL with a pretrained tag (default without a value: its default "
                        "weights), as create_model(MODEL, pretrained=...)")
    p.add_argument("--data", required=True, help="as for train")
    p.add_argument("--split", help="split to evaluate (default: the dataset's val/test split)")
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("-j", "--workers", default="auto",
                   help="loader worker processes (default: auto)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"],
                   help="autocast (default: the training run's, none for weights files)")
    p.add_argument("--out", help="folder for the confusion-matrix PNG and JSON "
                                 "(default: the checkpoint's folder)")
    p.add_argument("--results-file", metavar="F", help="also write the results as JSON to F")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


COMMANDS += [
    ("train", "train a model on a dataset with a recipe (torchrun-able)", _add_train, cmd_train),
    ("eval", "top-1/top-5/loss, per-class accuracy and a confusion matrix of a checkpoint",
     _add_eval, cmd_eval),
]


# ---------------------------------------------------------------------------------------------
# validate (visionzoo.validate does the work)
# ---------------------------------------------------------------------------------------------


def _validate_weights(args: argparse.Namespace) -> bool | str | Path:
    """What ``create_model(MODEL, pretrained=...)`` gets: --weights PATH, else --pretrained
    (default true: the model's default weights)."""
    if args.weights:  # argparse refuses it together with --pretrained
        path = Path(args.weights).expanduser()
        if not path.is_file():
            raise UserError(f"--weights {args.weights}: no such file")
        return path
    return True if args.pretrained is None else _pretrained_value(args.pretrained)


def _validate_model(args: argparse.Namespace) -> str | None:
    """MODEL of ``validate MODEL DATA_DIR`` or ``validate -m MODEL DATA_DIR``."""
    if args.model_opt and args.model and not args.data_dir:  # -m MODEL DATA_DIR
        args.model, args.data_dir = None, args.model
    return _model_arg(args)


def cmd_validate(args: argparse.Namespace) -> int:
    from visionzoo import create_model, model_info
    from visionzoo.validate import (
        find_samples,
        format_results,
        results_path,
        validate,
        write_results,
    )

    name = _validate_model(args)
    if not name or not args.data_dir:
        raise UserError("give a model and a folder: visionzoo validate MODEL DATA_DIR (or "
                        "-m MODEL DATA_DIR)")
    for flag, low in (("batch_size", 1), ("workers", 0), ("img_size", 1), ("limit", 1)):
        _at_least(getattr(args, flag), low, "--" + flag.replace("_", "-"))
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1]; got {args.crop_pct}")
    out = results_path(args.results_file) if args.results_file else None
    model_info(name)  # unknown names fail here, with suggestions, before anything is read
    samples = find_samples(args.data_dir, args.labels)  # before weights are loaded
    pretrained = _validate_weights(args)
    model = create_model(name, pretrained=pretrained)
    r = validate(model, samples, batch_size=args.batch_size, workers=args.workers,
                 img_size=args.img_size, crop_pct=args.crop_pct,
                 interpolation=args.interpolation, limit=args.limit, pretrained=pretrained,
                 progress="auto")
    print(format_results(r))
    if out is not None:
        print(f"results: {write_results(r, out)}")
    return 0


def _add_validate(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    p.add_argument("data_dir", nargs="?", metavar="DATA_DIR",
                   help="class folders (WordNet ids n01440764 ... or any names), or a flat "
                        "folder of images with --labels")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", metavar="TAG|PATH|true", nargs="?", const="true",
                   help="create_model(MODEL, pretrained=...): a pretrained tag, a weights file "
                        "or checkpoint, true (default: the model's default weights) or false")
    g.add_argument("--weights", metavar="PATH",
                   help="a torchvision/timm/efficientnet_pytorch weights file or visionzoo "
                        "checkpoint (the same as --pretrained PATH)")
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-j", "--workers", type=int, default=0,
                   help="loader worker processes (default 0: decode in this process)")
    p.add_argument("--img-size", type=int, metavar="N", help="input height = width "
                   "(default: the weights' pretrained_cfg)")
    p.add_argument("--crop-pct", type=float, metavar="F",
                   help="center-crop fraction (default: the weights' pretrained_cfg)")
    p.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"],
                   help="resize interpolation (default: the weights' pretrained_cfg)")
    p.add_argument("--labels", metavar="FILE",
                   help="csv rows filename,label (a class index or WordNet id) for a flat folder")
    p.add_argument("--results-file", metavar="PATH",
                   help="write the results to PATH.csv (timm's columns) or PATH.json")
    p.add_argument("--limit", type=int, metavar="N",
                   help="validate on N images spread evenly over the folder")


COMMANDS += [
    ("validate", "top-1/top-5 of a model and its pretrained weights over an ImageNet-style "
     "folder", _add_validate, cmd_validate),
]


# ---------------------------------------------------------------------------------------------
# download (visionzoo.data.download does the work)
# ---------------------------------------------------------------------------------------------


def cmd_download(args: argparse.Namespace) -> int:
    from visionzoo.data.datasets import DataError, find_dataset
    from visionzoo.data.download import download_dataset

    folder = download_dataset(args.dataset, args.root, base_url=args.base_url,
                              progress="off" if args.quiet else "auto")
    print(f"{args.dataset}: {folder}")
    try:
        found = find_dataset(args.dataset)[0]
    except DataError:
        found = None
    if found != folder and not args.quiet:  # a --root outside the keyword's search path
        print(f"visionzoo download: --data {args.dataset} does not look there: pass --data "
              f"{folder} or set VISIONZOO_DATA={folder.parent}", file=sys.stderr)
    return 0


def _add_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="fashion-mnist")
    p.add_argument("--root", metavar="DIR",
                   help="download into DIR/DATASET (default: $VISIONZOO_DATA, else "
                        "~/.cache/visionzoo, where the keyword finds it; without --root a "
                        "Debian copy in /usr/share/datasets is used as it is)")
    p.add_argument("--base-url", metavar="URL",
                   help="a mirror holding the files (http(s):// or file://) instead of the "
                        "public sources")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or messages")


COMMANDS += [
    ("download", "fetch Fashion-MNIST into a user cache (no root needed), checking its "
     "published checksums", _add_download, cmd_download),
]


# ---------------------------------------------------------------------------------------------
# bench / export
# ---------------------------------------------------------------------------------------------


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} expects comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"{what} expects positive integers, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from visionzoo.bench import bench

    args.models = [*args.models, *(args.model_opt or [])]
    if not args.models:
        raise UserError("name one or more models: visionzoo bench MODEL... (or -m MODEL)")
    for flag in ("size", "threads", "repeats"):
        _at_least(getattr(args, flag), 1, "--" + flag)
    _at_least(args.warmup, 0, "--warmup")
    log = (lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)) if args.verbose \
        else None
    if args.plot:  # the plot is what was asked for: say so before minutes of timing
        from visionzoo.extras import require

        require("matplotlib", "plots", "bench --plot")
    report = bench(args.models, batches=_int_list(args.batch, "--batch"), size=args.size,
                   threads=args.threads, train=args.train, compare=args.compare,
                   optimize=args.optimize, compile=args.compile, bf16=args.bf16,
                   engines=args.compare and not args.no_engines
                   and args.device.startswith("cpu"),
                   device=args.device, repeats=args.repeats, min_time=args.min_time,
                   warmup=args.warmup, memory=not args.no_memory, log=log)
    print(report.format(args.format), end="")
    if args.out:
        paths = report.save(args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if args.plot:
        print(f"wrote {report.plot(args.plot)}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from visionzoo.export import EXPORT_SUFFIX, MissingExtraError, export_model
    from visionzoo.factory import create_model, load_checkpoint
    from visionzoo.registry import model_info

    args.model = _required_model(args, "export")
    info = model_info(args.model)  # unknown names fail here, with suggestions
    _at_least(args.size, 1, "--size")
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint)
        if getattr(model, "model_name", args.model) != args.model:
            raise UserError(f"{args.checkpoint} holds {model.model_name}, not {args.model}")
    else:
        model = create_model(args.model)
    size = (info.input_size[0], args.size, args.size) if args.size else None
    out = args.out or f"{args.model}{EXPORT_SUFFIX[args.format]}"
    try:
        result = export_model(model, out, args.format, size, dynamic_batch=args.dynamic_batch)
    except MissingExtraError:
        raise
    except Exception as e:  # noqa: BLE001 - exporter failures are reported in one line
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        raise UserError(f"{args.format} export of {args.model} failed: "
                        f"{type(e).__name__}: {first[:300]}") from None
    print(result.summary())
    return 0 if result.passed else 1


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help="names or fnmatch patterns")
    p.add_argument("-m", "--model", dest="model_opt", action="append", metavar="MODEL",
                   help="the same as MODEL (repeatable)")
    p.add_argument("-b", "--batch", default="1,32",
                   help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--size", type=int, help="input height = width (default: the paper's)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--train", action="store_true", help="also time training steps")
    p.add_argument("--compare", action="store_true",
                   help="the same network from torchvision and timm, and on CPU the engines "
                        "(onnxruntime, OpenVINO, torch.compile, each on the reference model as "
                        "its docs recommend) and visionzoo.deploy(auto), interleaved, with "
                        "ratios")
    p.add_argument("--no-engines", action="store_true",
                   help="with --compare: only the eager references, no engine rows")
    p.add_argument("--optimize", action="store_true",
                   help="also time visionzoo.optimize(model) (BN folded, channels_last)")
    p.add_argument("--compile", action="store_true",
                   help="also time optimize(model, compile=True) (compiles on first call)")
    p.add_argument("--bf16", action="store_true",
                   help="also time bfloat16: OpenVINO and deploy in bf16 with the engines, "
                        "optimize(model, dtype=bfloat16) with --optimize (fast on CPUs with "
                        "AMX / AVX-512 BF16)")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.add_argument("--out", metavar="PREFIX", help="also write PREFIX.md/.csv/.json/.png")
    p.add_argument("--plot", metavar="PNG", help="throughput vs MACs plot")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="seconds per candidate per round (default 1.0)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls (default 3)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")


def _add_export(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    p.add_argument("--format", choices=["onnx", "torchscript", "exported"], required=True)
    p.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dimension")
    p.add_argument("--size", type=int, help="input height = width (default: the paper's)")
    p.add_argument("--checkpoint", help="a visionzoo checkpoint (default: random weights)")
    p.add_argument("--out", help="output file (default MODEL.onnx / .torchscript.pt / .pt2)")


COMMANDS += [
    ("bench", "throughput, latency and peak memory, side by side with torchvision/timm",
     _add_bench, cmd_bench),
    ("export", "ONNX / TorchScript / torch.export with a parity check", _add_export, cmd_export),
]


# ---------------------------------------------------------------------------------------------
# deploy (visionzoo.deploy does the work)
# ---------------------------------------------------------------------------------------------


def _model_for(args: argparse.Namespace) -> Any:
    """The model named by MODEL and one of --weights / --checkpoint / --pretrained / --random."""
    from visionzoo.factory import create_model
    from visionzoo.registry import model_info

    model_info(args.model)  # unknown names fail here, with suggestions
    if args.checkpoint:
        from visionzoo.factory import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        if getattr(model, "model_name", args.model) != args.model:
            raise UserError(f"{args.checkpoint} holds {model.model_name}, not {args.model}")
        return model.eval()
    if args.weights:
        return create_model(args.model, pretrained=args.weights).eval()
    if args.pretrained is not None:
        return _pretrained_classifier(args.model, args.pretrained)[0]
    from visionzoo.layers import randomize_weights_

    return randomize_weights_(create_model(args.model)).eval()


def _calibration_images(paths: Sequence[str], cfg: dict[str, Any]) -> Any:
    """Calibration images for int8 from files / folders, preprocessed as the model's eval."""
    from pathlib import Path

    import torch

    from visionzoo.data.datasets import IMG_EXTENSIONS
    from visionzoo.data.transforms import ImageError, PretrainedEvalTransform, load_image

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"--calibration: {p} does not exist")
    transform = PretrainedEvalTransform.from_cfg(cfg)
    images = []
    for f in files:
        try:
            images.append(transform(load_image(f, min_size=transform.min_size)))
        except ImageError as e:
            raise UserError(f"--calibration: {e}") from None
    if not images:
        raise UserError("--calibration holds no images")
    return torch.stack(images)


def cmd_deploy(args: argparse.Namespace) -> int:
    from visionzoo.deploy import deploy

    args.model = _required_model(args, "deploy")
    _at_least(args.batch_size, 1, "--batch-size")
    _at_least(args.threads, 1, "--threads")
    model = _model_for(args)
    calibration = agreement_images = None
    if args.dtype == "int8":
        if args.calibration:
            calibration = _calibration_images(args.calibration, model.pretrained_cfg)
        elif args.photos:
            from visionzoo.photos import real_photos

            cfg = model.pretrained_cfg
            kw = {k: cfg[k] for k in ("input_size", "mean", "std", "crop_pct") if k in cfg}
            calibration = real_photos(**kw, views=8, seed=1)
            agreement_images = real_photos(**kw, views=8, seed=2)
        else:
            raise UserError("--dtype int8 needs --calibration IMAGES (files or folders of real "
                            "images) or --photos (scikit-image's bundled photos)")
    from visionzoo.deploy import DEFAULT_MIN_AGREEMENT

    min_agreement = DEFAULT_MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    deployed = deploy(model, args.runtime, batch_size=args.batch_size, dtype=args.dtype,
                      threads=args.threads, calibration=calibration,
                      min_agreement=min_agreement, agreement_images=agreement_images)
    print(deployed.report.summary())
    if args.out:
        print(f"wrote {deployed.save(args.out)}")
    return 0


def _add_deploy(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--weights", help="torchvision/timm/efficientnet_pytorch weights file")
    g.add_argument("--checkpoint", help="visionzoo checkpoint (.safetensors)")
    g.add_argument("--pretrained", metavar="TAG", nargs="?", const="true",
                   help="a pretrained tag (default without a value: the model's default weights)")
    g.add_argument("--random", action="store_true", help="seeded random weights (for timing)")
    p.add_argument("--runtime", default="auto",
                   choices=["auto", "onnxruntime", "openvino", "torch"],
                   help="engine (default auto: build, check and time each installed one)")
    p.add_argument("--out", metavar="DIR", help="save the deployment (load_deployed / "
                   "`visionzoo predict --deployed DIR`)")
    p.add_argument("-b", "--batch-size", type=int, default=1,
                   help="batch the engines are tuned and timed for (default 1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bf16", "int8"])
    p.add_argument("-j", "--threads", type=int, help="engine threads (default: torch's)")
    p.add_argument("--calibration", nargs="+", metavar="IMAGES",
                   help="int8: image files or folders to calibrate on")
    p.add_argument("--photos", action="store_true",
                   help="int8: calibrate and judge on scikit-image's bundled photos")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="int8: refuse below this top-1 agreement with float32 (default "
                        "visionzoo.deploy.DEFAULT_MIN_AGREEMENT)")


COMMANDS += [
    ("deploy", "run a model on onnxruntime / OpenVINO / torch.compile, parity-checked, the "
     "fastest picked", _add_deploy, cmd_deploy),
]


def cmd_ablate(args: argparse.Namespace) -> int:
    from visionzoo.ablate import ABLATIONS, run_ablation

    if args.list or not args.paper:
        if not args.list:
            raise UserError("name a paper (visionzoo ablate --list shows them)")
        for ab in ABLATIONS.values():
            state = f"pending: {ab.pending}" if ab.pending else \
                f"{len(ab.arms)} arms, {len(ab.claims)} claims"
            print(f"{ab.key:14s} {ab.title} ({ab.evidence}): {state}")
        return 0
    if args.paper not in ABLATIONS:
        raise UserError(f"unknown paper {args.paper!r}; visionzoo ablate --list shows "
                        f"{', '.join(ABLATIONS)}")
    if args.seeds is not None and args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if ABLATIONS[args.paper].pending:
        raise UserError(f"the {args.paper} ablation cannot run yet: "
                        f"{ABLATIONS[args.paper].pending}")
    summary = run_ablation(args.paper, args.data, args.budget, args.seeds, args.out)
    for c in summary["claims"]:
        print(f"{c['claim']}: {c['verdict']} ({100 * c['diff']:+.2f} points, "
              f"2 SE {200 * c['se']:.2f})")
    out = args.out or f"runs/ablations/{args.paper}-{args.budget}"
    print(f"wrote {out}/ablation.md, runs.csv, ablation.png ({summary['minutes']} min)")
    return 0


def _add_ablate(p: argparse.ArgumentParser) -> None:
    p.add_argument("paper", nargs="?", metavar="PAPER", help="resnet, senet, ... (see --list)")
    p.add_argument("--list", action="store_true", help="the papers, their arms and claims")
    p.add_argument("--data", default="fashion-mnist", help="dataset keyword or folder")
    p.add_argument("--budget", choices=["smoke", "small", "full"], default="small")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (budget default)")
    p.add_argument("--out", default=None, help="output folder (runs/ablations/PAPER-BUDGET)")


COMMANDS += [
    ("ablate", "reproduce a paper's central experiment small: variants, seeds, verdicts",
     _add_ablate, cmd_ablate),
]


def cmd_site(args: argparse.Namespace) -> int:
    from visionzoo.site import DEFAULT_ABLATIONS, build_site

    ablations = args.ablations
    if ablations is None and DEFAULT_ABLATIONS.is_dir():  # run from a checkout of the repo
        ablations = DEFAULT_ABLATIONS
    result = build_site(args.out, args.patterns or "*", ablations=ablations, cam=not args.cam_off,
                        download=args.download,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    cams = sorted(result.cam_files)
    n, k = len(result.models), len(result.papers)
    print(f"wrote {args.out}: index.html, {n} model page{'s' * (n != 1)} (models/), {k} paper "
          f"page{'s' * (k != 1)} (papers/), {len(result.files)} files in {result.seconds:.0f} s")
    if args.cam_off:
        print("Grad-CAM: not drawn (--no-cam)")
    else:
        print(f"Grad-CAM: {len(cams)} of {len(result.models)} models"
              + (f" ({', '.join(cams[:8])}{', ...' if len(cams) > 8 else ''})" if cams else "")
              + ("" if args.download else "; the others have no weights on this machine "
                 "(--download fetches them)") * (len(cams) < len(result.models)))
    if ablations is None:
        print(f"ablations: no results folder (--ablations DIR; {DEFAULT_ABLATIONS} in a "
              f"checkout of the repository)")
    print(f"view it: python -m http.server -d {args.out}  (then open http://localhost:8000)")
    return 0


def _add_site(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="models to include (fnmatch, e.g. 'resnet*'); default all")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ablations", default=None, metavar="DIR",
                   help="visionzoo ablate results (<paper>/summary.json, ablation.png); default "
                        "./benchmarks/results/ablations when it exists")
    p.add_argument("--no-cam", dest="cam_off", action="store_true",
                   help="skip the Grad-CAM examples")
    p.add_argument("--download", action="store_true",
                   help="fetch weights not on this machine for the Grad-CAM examples")


COMMANDS += [
    ("site", "write the static companion site: a page per model and per paper, sortable index",
     _add_site, cmd_site),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionzoo",
        description="Landmark image classifiers from their papers: verify, inspect, port, train.")
    from visionzoo import __version__

    parser.add_argument("--version", action="version", version=f"visionzoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_args, handler in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


# ---------------------------------------------------------------------------------------------
# errors and warnings: one line each
# ---------------------------------------------------------------------------------------------

# what each command's --out names (bench's is a file-name prefix: only its folder is checked)
OUT_KIND = {"train": "folder", "eval": "folder", "deploy": "folder", "ablate": "folder",
            "site": "folder", "port": "file", "export": "file"}

# Raised where user input reaches code that did not check it first (an unknown constructor
# keyword, a value of the wrong type, an input size a network cannot take): reported with the
# exception's name. VISIONZOO_DEBUG=1 shows the traceback of any reported error.
UNCHECKED = (TypeError, KeyError, RuntimeError)
_LIBRARY_ERRORS = {"visionzoo.deploy": ("DeployError",), "visionzoo.optimize": ("OptimizeError",),
                   "visionzoo.export": ("ExportError",),
                   "visionzoo.extras": ("MissingExtraError",)}


def _user_error_types() -> tuple[type[BaseException], ...]:
    """UserError, ValueError (UnknownModelError, CheckpointError, PortError, DataError,
    ImageError, RecipeError, the constructors' argument checks), OSError (files), and the
    library's own errors of other bases (a module never imported raised none of them)."""
    found: list[type[BaseException]] = [UserError, ValueError, OSError]
    for module, names in _LIBRARY_ERRORS.items():
        if module in sys.modules:
            found += [getattr(sys.modules[module], n) for n in names
                      if hasattr(sys.modules[module], n)]
    return tuple(found)


def _one_line(e: BaseException, checked: bool) -> str:
    """The error as one line; ``checked``: an error the library raised on purpose."""
    text = str(e)
    if isinstance(e, OSError) and e.filename and e.strerror:  # not "[Errno 20] Not a ..."
        text = f"{e.filename}: {e.strerror}" + (f" ({e.filename2})" if e.filename2 else "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = "; ".join(lines) or type(e).__name__
    if not checked:
        text = f"{type(e).__name__}: {text} (VISIONZOO_DEBUG=1 shows where)"
    return text


def _check_out(command: str, out: str | None) -> None:
    """Refuse an --out that cannot be written before anything is read or computed: a folder
    under an existing file, a folder where a file is, a file where a folder is."""
    if not out:
        return
    path = Path(out).expanduser()
    for parent in path.parents:  # the nearest existing one decides
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a folder")
            break
    kind = OUT_KIND.get(command)
    if kind and path.exists() and (kind == "folder") != path.is_dir():
        raise UserError(f"--out {out} exists and is not a {kind}")


@contextlib.contextmanager
def _warnings_in_one_line(command: str) -> Iterator[None]:
    """visionzoo's own warnings (an empty class folder, ...) as ``visionzoo CMD: warning: ...``;
    other libraries' warnings print as Python prints them."""
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if category.__module__.split(".")[0] == "visionzoo":
            print(f"visionzoo {command}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("VISIONZOO_DEBUG", "") not in ("", "0")
    try:
        with _warnings_in_one_line(args.command):
            _check_out(args.command, getattr(args, "out", None))
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"visionzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        checked = isinstance(e, _user_error_types())
        if debug or not (checked or isinstance(e, UNCHECKED)):
            raise  # a bug: its traceback is what a report needs
        print(f"visionzoo {args.command}: error: {_one_line(e, checked)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
