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
    from visionzoo.ports import PortError
    from visionzoo.registry import UnknownModelError

    try:
        return int(args.handler(args) or 0)
    except (UserError, UnknownModelError, PortError, CheckpointError, FileNotFoundError,
            ValueError) as e:
        print(f"visionzoo {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"visionzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
