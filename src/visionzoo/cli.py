"""`visionzoo <command>`: parses arguments and calls the library; nothing else lives here.

User errors (unknown model, missing file, bad argument, weights that do not fit) end with a
one-line message on stderr and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]


class UserError(Exception):
    """An error to report in one line, without a traceback."""


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs; values are Python literals when they parse as one."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from visionzoo.profile import human, profile
    from visionzoo.registry import list_models, model_info

    names = list_models(args.patterns or "*")
    if not names:
        raise UserError(f"no model matches {' '.join(args.patterns)}")
    rows = [["model", "family", "input", "params", "MACs", "paper"]]
    for name in names:
        info = model_info(name)
        prof = profile(name)
        rows.append([name, info.family, "x".join(map(str, info.input_size[1:])),
                     human(prof.params), human(prof.macs), f"{info.paper} (arXiv {info.arxiv})"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    print(f"{len(names)} models; MACs = multiply-accumulates at the input size shown")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from visionzoo.profile import format_info

    size = None
    if args.size:
        size = (args.in_chans, args.size, args.size)
    overrides = parse_overrides(args.set)
    if args.in_chans != 3:
        overrides["in_chans"] = args.in_chans
        size = size or (args.in_chans, 224, 224)
    print(format_info(args.model, size, **overrides))
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


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--size", type=int, help="input height = width (default: the paper's)")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="constructor flag, e.g. --set stride_in_1x1=False (repeatable)")


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

    if args.weights and not args.model:
        raise UserError("--weights needs --model (the registered name the weights are for)")
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
    return 1 if failed else 0


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any Pillow format)")
    p.add_argument("--model", help="registered model name (needed with --weights)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--weights", help="torchvision/timm/efficientnet_pytorch weights file")
    g.add_argument("--checkpoint", help="visionzoo checkpoint (.safetensors)")
    g.add_argument("--deployed", metavar="DIR", help="a deployment saved by `visionzoo deploy`")
    p.add_argument("--runtime", choices=["auto", "onnxruntime", "openvino", "torch"],
                   help="run on an engine (visionzoo.deploy; parity-checked) instead of eager "
                        "PyTorch")
    p.add_argument("--threads", type=int, help="engine threads (default: torch's)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print the results as JSON")


COMMANDS += [
    ("predict", "top-k ImageNet (or checkpoint) classes of image files", _add_predict,
     cmd_predict),
]


# ---------------------------------------------------------------------------------------------
# train / eval (visionzoo.engine does the work)
# ---------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from visionzoo.recipes import RECIPE_KEYS, list_recipes, load_recipe

    if args.list_recipes:
        for name in list_recipes():
            print(f"{name:14s} {load_recipe(name).get('description', '')}")
        return 0
    if not args.resume and (not args.model or not args.data):
        raise UserError("--model and --data are required (or --resume --out RUN_DIR)")
    from visionzoo.engine import TrainingDiverged, TrainingInterrupted, train

    overrides = {k: getattr(args, f"rk_{k}") for k in RECIPE_KEYS if hasattr(args, f"rk_{k}")}
    try:
        train(args.model, args.data, recipe=args.recipe, overrides=overrides, out=args.out,
              resume=args.resume)
    except TrainingDiverged as e:
        raise UserError(str(e)) from None
    except TrainingInterrupted as e:
        print(f"visionzoo train: {e}", file=sys.stderr)
        return 130
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from visionzoo.engine import evaluate_checkpoint

    r = evaluate_checkpoint(args.model, args.checkpoint, args.data, split=args.split,
                            batch_size=args.batch_size, workers=args.workers, device=args.device,
                            out_dir=args.out)
    if args.json:
        import json

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
    print(f"confusion matrix: {r['confusion_png']}; results: {r['json']}")
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    from visionzoo.recipes import RECIPE_KEYS

    p.add_argument("--model", help="registered model name, e.g. resnet20")
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
        groups[spec.group].add_argument(
            "--" + key.replace("_", "-"), dest=f"rk_{key}", default=argparse.SUPPRESS,
            metavar=spec.kind.upper(), help=f"{spec.help}{choices} [{spec.default}]", **extra)


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", required=True,
                   help="a visionzoo checkpoint (model.safetensors of a run) or weights file")
    p.add_argument("--data", required=True, help="as for train")
    p.add_argument("--split", help="split to evaluate (default: the dataset's val/test split)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", default="auto", help="loader worker processes (default: auto)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="folder for the confusion-matrix PNG and JSON "
                                 "(default: the checkpoint's folder)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


COMMANDS += [
    ("train", "train a model on a dataset with a recipe (torchrun-able)", _add_train, cmd_train),
    ("eval", "top-1/top-5/loss, per-class accuracy and a confusion matrix of a checkpoint",
     _add_eval, cmd_eval),
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

    log = (lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)) if args.verbose \
        else None
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
    from visionzoo.checkpoint import load_checkpoint
    from visionzoo.export import EXPORT_SUFFIX, MissingExtraError, export_model
    from visionzoo.registry import create_model, model_info

    info = model_info(args.model)  # unknown names fail here, with suggestions
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
    p.add_argument("models", nargs="+", metavar="MODEL", help="names or fnmatch patterns")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
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
    p.add_argument("model")
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
    """The model named by MODEL and one of --weights / --checkpoint / --random."""
    from visionzoo.registry import create_model, model_info

    model_info(args.model)  # unknown names fail here, with suggestions
    if args.checkpoint:
        from visionzoo.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        if getattr(model, "model_name", args.model) != args.model:
            raise UserError(f"{args.checkpoint} holds {model.model_name}, not {args.model}")
        return model.eval()
    if args.weights:
        return create_model(args.model, pretrained=args.weights).eval()
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
    p.add_argument("model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--weights", help="torchvision/timm/efficientnet_pytorch weights file")
    g.add_argument("--checkpoint", help="visionzoo checkpoint (.safetensors)")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from visionzoo.checkpoint import CheckpointError
    from visionzoo.deploy import DeployError
    from visionzoo.export import MissingExtraError
    from visionzoo.ports import PortError
    from visionzoo.registry import UnknownModelError

    try:
        return int(args.handler(args) or 0)
    except (UserError, UnknownModelError, PortError, CheckpointError, FileNotFoundError,
            ValueError, DeployError, MissingExtraError) as e:
        print(f"visionzoo {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"visionzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
