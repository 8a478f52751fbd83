"""The model registry: every architecture is registered under its paper's name with a ModelInfo.

A ModelInfo records where the network comes from (paper, arXiv id), what the paper publishes
about it (each number with the table or section it is printed in), which deviations from the
paper exist as flags, and which torchvision/timm networks are the same architecture.
"""

from __future__ import annotations

import collections.abc
import difflib
import fnmatch
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch.nn as nn

from visionzoo.layers import MIN_INPUT_SIZES

__all__ = [
    "Deviation",
    "InvalidArgumentError",
    "ModelInfo",
    "Published",
    "UnknownModelError",
    "Variant",
    "list_models",
    "lookup",
    "model_info",
    "register_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Published:
    """One number as a paper (or a reference library) prints it.

    ``text`` is kept as printed, so the precision the paper used is known: "3.8" (G MACs) is
    matched when the measurement rounds to 3.8 at one decimal. ``rounding="truncate"`` is for a
    source that cut digits instead (3.86 printed "3.8"), ``rounding="ceil"`` for one that rounded
    up (35.64 printed "35.7"); ``tolerance`` (in ``unit``s) replaces the half-unit window where
    the source printed its numbers another way. ``note`` says why.
    """

    metric: str  # "params" | "macs" | "top1_err" | ...
    text: str  # the number as printed, e.g. "3.8"
    unit: str  # "" (a count), "K", "M" or "G"
    source: str  # "Table 1", "§4.2", "torchvision weights metadata", ...
    tolerance: float | None = None
    note: str = ""
    rounding: str = "round"  # "round" | "truncate" | "ceil"
    # what the source left out of its count, in ``unit``s (e.g. the FC layer, or BN parameters),
    # subtracted from the measurement before it is compared; ``note`` says what it is
    excluded: float = 0.0

    @property
    def value(self) -> float:
        return float(self.text)

    @property
    def scale(self) -> float:
        return {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "%": 1.0}[self.unit]

    @property
    def ulp(self) -> float:
        """One unit in the last printed digit, in ``unit``s."""
        decimals = len(self.text.split(".")[1]) if "." in self.text else 0
        return 10.0**-decimals

    def matches(self, measured: float) -> bool:
        """Does ``measured`` (in base units) print as ``text`` under the source's convention?"""
        m = measured / self.scale - self.excluded
        eps = 1e-9 * max(1.0, abs(self.value))
        if self.tolerance is not None:
            return abs(m - self.value) <= self.tolerance + eps
        if self.rounding == "truncate":
            return self.value - eps <= m < self.value + self.ulp
        if self.rounding == "ceil":
            return self.value - self.ulp < m <= self.value + eps
        return abs(m - self.value) <= 0.5 * self.ulp + eps


@dataclass(frozen=True)
class Deviation:
    """A documented departure from the paper, reachable through constructor flags.

    ``overrides`` are the flags that select it; ``published`` are the numbers a reference
    publishes for that layout (so `verify` can check the deviation too, not just excuse it).
    """

    flag: str  # e.g. "stride_in_1x1=False"
    summary: str  # one line: what differs and who uses it
    overrides: Mapping[str, Any] = field(default_factory=dict)
    published: tuple[Published, ...] = ()
    default: bool = False  # True when the registered default itself deviates from the paper


@dataclass(frozen=True)
class Variant:
    """Another row of the paper for the same registered network: a hyper-parameter sweep or an
    input resolution the paper reports (e.g. SENet Table 10's reduction ratios, MobileNet
    Table 7's resolutions). ``verify`` builds it with ``overrides`` at ``input_size``."""

    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] | None = None
    published: tuple[Published, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """Everything known about a registered model, independent of any built instance."""

    paper: str
    arxiv: str
    family: str
    published: tuple[Published, ...] = ()
    num_params: int | None = None  # exact count of the default build (its default num_classes)
    input_size: tuple[int, int, int] = (3, 224, 224)
    min_input_size: int = 32  # smallest H = W the architecture takes (used by the test sweeps)
    num_classes: int = 1000
    deviations: tuple[Deviation, ...] = ()
    variants: tuple[Variant, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)  # {"torchvision": ..., "timm": ...}
    name: str = ""
    notes: str = ""

    @property
    def citation(self) -> str:
        return f"{self.paper} (arXiv {self.arxiv})"


class UnknownModelError(KeyError, ValueError):
    """An unregistered model name; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}


Builder = Callable[..., nn.Module]


def register_model(info: ModelInfo) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under its function name. A duplicate name is refused."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = (fn, replace(info, name=name))
        MIN_INPUT_SIZES[name] = info.min_input_size  # pretrained_cfg's min_input_size
        return fn

    return decorator


def lookup(name: str) -> tuple[Callable[..., nn.Module], ModelInfo]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `visionzoo list`"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def list_models(pattern: str | list[str] | tuple[str, ...] = "*") -> list[str]:
    """Sorted registered names matching an fnmatch pattern (or any of several patterns)."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = (n for n in _REGISTRY if any(fnmatch.fnmatchcase(n, p) for p in patterns))
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list:
    """resnet18 < resnet34 < resnet101 (numbers compared as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def model_info(name: str) -> ModelInfo:
    return lookup(name)[1]


class InvalidArgumentError(ValueError):
    """A constructor argument a model cannot take (unknown keyword, wrong type, out of range)."""


def model_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments ``create_model(name, ...)`` passes to the model's constructor,
    with their annotated types (read from the builder's return type, the model class)."""
    fn, _ = lookup(name)
    cls = typing.get_type_hints(fn).get("return")
    if not isinstance(cls, type):
        return {}
    hints = typing.get_type_hints(cls.__init__)
    params = inspect.signature(cls.__init__).parameters
    return {k: hints.get(k, Any) for k, p in params.items()  # required ones: the variant's
            if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.default is not p.empty}


def _type_ok(value: Any, hint: Any) -> bool:
    """Does ``value`` fit a simple annotation? Unknown kinds of annotation accept anything."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence):
        return isinstance(value, tuple | list)
    return True


def _type_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or str(hint).replace("typing.", "").replace("collections.abc.", "")


def check_arguments(name: str, **kwargs: Any) -> None:
    """One clear error for an argument ``name``'s constructor cannot take: ``num_classes < 0``,
    ``in_chans < 1``, an unknown keyword (the message lists the accepted ones), or a value of
    the wrong type (``stride_in_1x1="maybe"``)."""
    n, c = kwargs.get("num_classes"), kwargs.get("in_chans")
    if n is not None and (not _type_ok(n, int) or n < 0):
        raise InvalidArgumentError(f"{name}: num_classes must be an integer >= 0 (0: no "
                                   f"classifier); got {n!r}")
    if c is not None and (not _type_ok(c, int) or c < 1):
        raise InvalidArgumentError(f"{name}: in_chans must be an integer >= 1; got {c!r}")
    accepted = model_arguments(name)
    if not accepted:
        return
    for key, value in kwargs.items():
        if key not in accepted:
            raise InvalidArgumentError(
                f"{name} takes no argument {key!r}; it accepts: {', '.join(sorted(accepted))}")
        if not _type_ok(value, accepted[key]):
            raise InvalidArgumentError(f"{name}: {key} must be {_type_name(accepted[key])}; got "
                                       f"{value!r} ({type(value).__name__})")


def builder(name: str) -> Callable[..., nn.Module]:
    """The raw registered builder (no pretrained/features handling)."""
    return lookup(name)[0]
