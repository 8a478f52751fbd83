"""Classify image files with a model and weights: top-k classes with names and probabilities.

The preprocessing is the model's own ``pretrained_cfg`` (input size, crop_pct, interpolation,
mean/std: weights "don't work" when these are wrong): ``create_transform(resolve_data_config(
model))``, the evaluation transform ``evaluate`` uses too. Images are read by
``visionzoo.data.transforms.load_image``, the decoder the folder datasets of train and eval use
too (any format Pillow reads, EXIF orientation applied, grayscale/alpha/palette/16-bit/CMYK
handled), so a file gives the same pixels here as in training. A file that cannot be read gives
a ``PredictError`` in its place and the other files are still classified.

Class names: a checkpoint's header ``extra["class_names"]`` when present, else the 1000 ImageNet
classes (``visionzoo/data/imagenet_classes.txt``) for a 1000-class model, else "class <i>".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from visionzoo.data.config import create_transform, resolve_data_config
from visionzoo.data.transforms import ImageError, load_image

__all__ = ["Prediction", "PredictError", "format_predictions", "imagenet_class_names",
           "load_classifier", "predict"]


@dataclass
class Prediction:
    """The top-k of one image: ``(class index, class name, probability)``, most likely first."""

    path: str
    topk: list[tuple[int, str, float]] = field(default_factory=list)

    @property
    def top1(self) -> tuple[int, str, float]:
        return self.topk[0]


@dataclass
class PredictError:
    """A file that could not be classified; ``message`` is one line and names the file."""

    path: str
    message: str


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the index order of the standard weights."""
    text = resources.files("visionzoo.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, not 1000")
    return names


def class_names_for(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """``names`` if given (checked against ``num_classes``), ImageNet's for 1000 classes, else
    "class <i>"."""
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for a {num_classes}-class model")
        return names
    if num_classes == 1000:
        return list(imagenet_class_names())
    return [f"class {i}" for i in range(num_classes)]


def load_classifier(model: str | None = None, weights: str | Path | None = None,
                    checkpoint: str | Path | None = None) -> tuple[nn.Module, list[str]]:
    """The model to predict with, in eval mode, and its class names.

    ``weights``: a torchvision/timm/efficientnet_pytorch weights file (or a visionzoo checkpoint)
    for the registered ``model``, loaded by ``create_model(model, pretrained=weights)``.
    ``checkpoint``: a visionzoo checkpoint (it names its model; ``model``, if given, must match);
    its header's ``extra["class_names"]`` name the classes.
    """
    if (weights is None) == (checkpoint is None):
        raise ValueError("give exactly one of weights (with a model name) or checkpoint")
    names: Sequence[str] | None = None
    if checkpoint is not None:
        from visionzoo.factory import load_checkpoint

        net, header, _ = load_checkpoint(checkpoint, return_extra=True)
        saved = header.get("model", "")
        if model is not None and model != saved:
            raise ValueError(f"{checkpoint} is a {saved} checkpoint, not {model}")
        names = (header.get("extra") or {}).get("class_names")
    else:
        if model is None:
            raise ValueError("weights need a model name (e.g. efficientnet_lite0)")
        from visionzoo.factory import create_model

        net = create_model(model, pretrained=weights)
    num_classes = int(getattr(net, "num_classes", 0))
    if num_classes <= 0:
        raise ValueError("the model has no classifier (num_classes=0); nothing to predict")
    return net.eval(), class_names_for(num_classes, names)


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def predict(model: nn.Module | Any, images: Sequence[str | Path],
            class_names: Sequence[str] | None = None, topk: int = 5, batch_size: int = 8,
            transform: Callable | None = None) -> list[Prediction | PredictError]:
    """Top-``topk`` classes of each image file, in the order given.

    A file that cannot be read becomes a ``PredictError`` at its place; the others are classified
    in batches of ``batch_size`` on the model's device. ``model`` may also be a
    ``visionzoo.deploy.Deployed`` (an engine: CPU float32 batches). ``transform`` defaults to
    ``create_transform(resolve_data_config(model))``, the one its ``pretrained_cfg`` describes;
    its ``min_size`` attribute, when it has one, lets ``load_image`` decode huge JPEGs reduced.
    """
    if topk < 1:
        raise ValueError(f"topk must be at least 1; got {topk}")
    if transform is None:
        transform = create_transform(resolve_data_config(model))
    min_size = getattr(transform, "min_size", None)
    num_classes = int(getattr(model, "num_classes", 0)) or None
    names = list(class_names) if class_names is not None else None
    # a visionzoo.deploy.Deployed (an engine) takes CPU float32 batches and has no parameters
    is_module = isinstance(model, nn.Module)
    param = next(model.parameters(), None) if is_module else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    results: list[Prediction | PredictError | None] = [None] * len(images)
    ready: list[tuple[int, torch.Tensor]] = []
    for i, path in enumerate(images):
        try:
            ready.append((i, transform(load_image(path, min_size=min_size))))
        except ImageError as e:
            results[i] = PredictError(str(path), str(e))
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    try:
        for chunk in _chunks(ready, max(1, batch_size)):
            batch = torch.stack([x for _, x in chunk]).to(device=device, dtype=dtype)
            with torch.inference_mode():
                probs = model(batch).float().softmax(dim=-1)  # (B, classes)
            k = min(topk, probs.shape[-1])
            top_p, top_i = probs.topk(k, dim=-1)
            if names is None:
                names = class_names_for(num_classes or probs.shape[-1])
            for (i, _), p_row, i_row in zip(chunk, top_p.tolist(), top_i.tolist(), strict=True):
                results[i] = Prediction(str(images[i]),
                                        [(c, names[c], p) for c, p in zip(i_row, p_row,
                                                                          strict=True)])
    finally:
        if is_module:
            model.train(was_training)
    return [r for r in results if r is not None]


def format_predictions(results: Sequence[Prediction | PredictError]) -> str:
    """One block per image: its path, then ``rank. probability  name (index)`` lines. Errors are
    left out (the CLI prints them on stderr)."""
    lines: list[str] = []
    for r in results:
        if isinstance(r, PredictError):
            continue
        lines.append(r.path)
        for rank, (c, name, p) in enumerate(r.topk, 1):
            lines.append(f"  {rank}. {p:7.2%}  {name} ({c})")
    return "\n".join(lines)
