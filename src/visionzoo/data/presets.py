"""Training and evaluation transform presets (torchvision ``transforms.v2``), driven by a resolved
recipe (see ``visionzoo.engine.RECIPE_KEYS`` for every key).

Small images (Fashion-MNIST 28x28, CIFAR 32x32) and the network's input size ``img_size``:

* ``fit: pad`` pads symmetrically with zeros up to ``img_size`` (the pixels stay untouched:
  Fashion-MNIST 28 -> 32 for the CIFAR ResNets of He et al. §4.2 keeps their 32/16/8 feature
  maps); ``fit: resize`` resizes (what ImageNet-style networks need: 28 -> 224);
  ``fit: auto`` pads when the image is at most a quarter smaller than ``img_size`` and resizes
  otherwise.
* Channels: a 1-channel dataset feeds ``in_chans=1`` networks as is; for ``in_chans=3`` (e.g. a
  pretrained network) the gray channel is replicated. RGB images for a 1-channel network are
  converted to luma (``Grayscale``).

Train crops (``train_crop``): ``pad_crop`` (pad ``crop_padding`` pixels, random ``img_size`` crop:
the CIFAR augmentation of He et al. §4.2), ``rrc`` (RandomResizedCrop, Inception-style, scale
``rrc_scale``), ``scale_jitter`` (shorter side uniformly in ``scale_jitter``, random crop: He et
al. §3.4), ``none``; ``auto`` is ``pad_crop`` for in-memory small images and ``rrc`` for files.
Evaluation of files resizes the shorter side to ``img_size / crop_pct`` and center-crops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torchvision.transforms import v2

__all__ = ["eval_transform", "fit_mode", "train_transform"]

_INTERP = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
           "nearest": v2.InterpolationMode.NEAREST}


class PadTo(torch.nn.Module):
    """Zero-pad (C, H, W) symmetrically to ``size`` (extra pixel right/bottom); larger images are
    center-cropped."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h > self.size or w > self.size:
            x = v2.functional.center_crop(x, [min(h, self.size), min(w, self.size)])
            h, w = x.shape[-2:]
        if h == self.size and w == self.size:
            return x
        top, left = (self.size - h) // 2, (self.size - w) // 2
        return v2.functional.pad(x, [left, top, self.size - w - left, self.size - h - top])


class ToChannels(torch.nn.Module):
    """Replicate a gray channel to 3, or convert RGB to luma, to match the network's in_chans."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-3]
        if c == self.channels:
            return x
        if c == 1:
            return x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]).contiguous()
        if self.channels == 1:
            return v2.functional.rgb_to_grayscale(x, num_output_channels=1)
        raise ValueError(f"cannot turn {c}-channel images into {self.channels} channels")


def fit_mode(cfg: Mapping[str, Any], native_size: int | None) -> str:
    """"pad", "resize" or "none" for in-memory images of side ``native_size``."""
    size, fit = int(cfg["img_size"]), cfg["fit"]
    if native_size is None or native_size == size:
        return "none"
    if fit == "auto":
        return "pad" if size > native_size and size - native_size <= native_size // 4 else "resize"
    return fit


def _fit(cfg: Mapping[str, Any], native_size: int | None) -> list[Callable]:
    mode, size = fit_mode(cfg, native_size), int(cfg["img_size"])
    if mode == "pad":
        return [PadTo(size)]
    if mode == "resize":
        return [v2.Resize((size, size), interpolation=_INTERP[cfg["interpolation"]],
                          antialias=True)]
    return []


def _to_tensor(native_size: int | None) -> list[Callable]:
    # In-memory images already are uint8 tensors, which v2 treats as images; wrapping them in
    # tv_tensors.Image would only add dispatch overhead per sample.
    return [] if native_size is not None else [v2.ToImage()]


def _normalize(cfg: Mapping[str, Any]) -> list[Callable]:
    return [v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(cfg["mean"]), list(cfg["std"]))]


def _auto_augment(cfg: Mapping[str, Any], on_tensors: bool) -> list[Callable]:
    kind = cfg["auto_augment"]
    interp = _INTERP[cfg["interpolation"]]
    if on_tensors and interp == v2.InterpolationMode.BICUBIC:
        interp = v2.InterpolationMode.BILINEAR  # torchvision rotates/shears tensors bilinearly
    if not kind:
        return []
    if kind == "randaugment":
        return [v2.RandAugment(num_ops=int(cfg["ra_num_ops"]), magnitude=int(cfg["ra_magnitude"]),
                               interpolation=interp)]
    if kind == "autoaugment":
        return [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interp)]
    if kind == "trivialaugment":
        return [v2.TrivialAugmentWide(interpolation=interp)]
    raise ValueError(f"auto_augment must be randaugment, autoaugment, trivialaugment or null; "
                     f"got {kind!r}")


def train_transform(cfg: Mapping[str, Any], native_size: int | None,
                    channels: int) -> v2.Compose:
    """Random training transform: uint8 (C, H, W) tensor or PIL image -> normalized float.

    ``native_size``: side of in-memory images (None for files of any size); ``channels``: the
    images' channel count."""
    size = int(cfg["img_size"])
    interp = _INTERP[cfg["interpolation"]]
    crop = cfg["train_crop"]
    if crop == "auto":
        crop = "pad_crop" if native_size is not None else "rrc"
    ops: list[Callable] = []
    if crop == "pad_crop":
        ops += _fit(cfg, native_size) if native_size is not None else [
            v2.Resize(size, interpolation=interp, antialias=True), v2.CenterCrop(size)]
        ops.append(v2.RandomCrop(size, padding=int(cfg["crop_padding"])))
    elif crop == "rrc":
        ops.append(v2.RandomResizedCrop(size, scale=tuple(cfg["rrc_scale"]), interpolation=interp,
                                        antialias=True))
    elif crop == "scale_jitter":
        lo, hi = (int(v) for v in cfg["scale_jitter"])
        ops += [v2.RandomShortestSize(list(range(lo, hi + 1)), interpolation=interp,
                                      antialias=True), v2.RandomCrop(size)]
    elif crop == "none":
        ops += _fit(cfg, native_size) if native_size is not None else [
            v2.Resize(size, interpolation=interp, antialias=True), v2.CenterCrop(size)]
    else:
        raise ValueError(f"train_crop must be auto, pad_crop, rrc, scale_jitter or none; "
                         f"got {crop!r}")
    if float(cfg["hflip"]) > 0:
        ops.append(v2.RandomHorizontalFlip(float(cfg["hflip"])))
    if native_size is None:  # files stay PIL images up to here: bicubic auto-augment works
        ops += _auto_augment(cfg, on_tensors=False) + [v2.ToImage()]
        ops.append(ToChannels(int(cfg["in_chans"])))
    else:
        ops.append(ToChannels(int(cfg["in_chans"])))
        ops += _auto_augment(cfg, on_tensors=True)
    ops += _normalize(cfg)
    if float(cfg["random_erasing"]) > 0:
        ops.append(v2.RandomErasing(p=float(cfg["random_erasing"]), value=0))
    return v2.Compose(ops)


def eval_transform(cfg: Mapping[str, Any], native_size: int | None,
                   channels: int) -> v2.Compose:
    """Deterministic evaluation transform: in-memory images are fitted to ``img_size`` as in
    training; files are resized to ``img_size / crop_pct`` (shorter side) and center-cropped."""
    size = int(cfg["img_size"])
    ops = _to_tensor(native_size)
    if native_size is not None:
        ops += _fit(cfg, native_size)
    else:
        resize = int(math.floor(size / float(cfg["crop_pct"]) + 1e-6))  # timm's rounding
        ops += [v2.Resize(resize, interpolation=_INTERP[cfg["interpolation"]], antialias=True),
                v2.CenterCrop(size)]
    ops.append(ToChannels(int(cfg["in_chans"])))
    return v2.Compose(ops + _normalize(cfg))
