"""Optional dependencies: a feature that needs one says which pip extra installs it.

The core install is torch, torchvision, numpy, pillow, safetensors and pyyaml. Plots
(matplotlib) are the ``[plots]`` extra, the companion site's templates (Jinja2) the ``[site]``
extra, the engines ``[onnx]`` / ``[openvino]``, the Hub ``[hub]``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["MissingExtraError", "MissingExtraWarning", "has", "require", "require_pyplot"]


class MissingExtraError(ImportError):
    """An optional dependency that is not installed; the message names the pip extra."""


class MissingExtraWarning(UserWarning):
    """A by-product left out for want of an extra (train's curves.png, eval's confusion matrix,
    ablate's ablation.png without matplotlib): the command still does its job, and the CLI
    prints this as one ``visionzoo CMD: warning: ...`` line naming the extra."""


def has(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming ``pip install 'visionzoo[extra]'``;
    ``purpose`` completes "PURPOSE needs MODULE" (e.g. "the confusion-matrix plot")."""
    if not has(module):
        raise MissingExtraError(f"{purpose} needs {module.split('.')[0]}: pip install "
                                f"'visionzoo[{extra}]'")
    return importlib.import_module(module)


def require_pyplot(purpose: str) -> ModuleType:
    """matplotlib.pyplot on the Agg backend (no display needed), or MissingExtraError naming
    the ``[plots]`` extra."""
    matplotlib = require("matplotlib", "plots", purpose)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
