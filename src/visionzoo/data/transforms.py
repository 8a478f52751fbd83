"""Reading any image a user has, and the evaluation transform a model's ``pretrained_cfg`` asks for.

``load_image`` is the one image decoder: the folder datasets (train and eval), ``predict`` and
deploy's calibration images all read files through it, so a file gives the same pixels
everywhere. It opens a file with Pillow and returns an 8-bit RGB image whatever the file holds:

* EXIF orientation is applied (a phone photo stored sideways comes out upright);
* grayscale (L, 1-bit), palette, CMYK, YCbCr, LAB, HSV: converted to RGB;
* an alpha channel (RGBA, LA, PA, palette with a transparent colour) is composited onto white,
  as an image viewer shows it (dropping alpha would expose whatever colour transparent pixels
  happen to store, often black);
* 16-bit and 32-bit integer images (I;16, I) are scaled from 0..65535 to 0..255 (values that fit
  8 bits are kept); float images (F) from 0..1, 0..255 or 0..65535 likewise;
* a JPEG much larger than the network needs is decoded at a reduced DCT scale (``draft``), never
  below twice the resize target, so a 100-megapixel photo does not need 300 MB of RGB.

Anything Pillow cannot read raises ``ImageError`` with a one-line message naming the file.

``PretrainedEvalTransform`` (what ``visionzoo.create_transform(cfg)`` returns: a torchvision
``transforms.v2.Compose``) is the standard ImageNet evaluation of timm and torchvision: resize
the shorter side to ``floor(size / crop_pct)`` with the configured interpolation, center crop
``size``, scale to [0, 1], normalise by mean/std. ``pretrained_train_transform`` is its training
counterpart (``is_training=True``). Both take PIL images or uint8 (C, H, W) tensors.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import v2

from visionzoo.data import presets
from visionzoo.data.config import resolve_data_config

__all__ = ["ImageError", "PretrainedEvalTransform", "load_image", "pretrained_train_transform",
           "to_rgb"]

# interpolation names of pretrained_cfg (timm's); box, hamming and lanczos need PIL images
INTERPOLATION = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "lanczos": v2.InterpolationMode.LANCZOS,
    "box": v2.InterpolationMode.BOX,
    "hamming": v2.InterpolationMode.HAMMING,
}


class ImageError(ValueError):
    """A file that cannot be read as an image; the message is one line and names the file."""


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """A one-channel image of wider values (I;16*, I, F) as 8-bit L."""
    arr = np.asarray(img, dtype=np.float64)
    peak = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and peak <= 1.0:
        arr = arr * 255.0  # a float image in 0..1
    elif img.mode.startswith("I;16") or peak > 255.0:
        arr = arr / 257.0  # 0..65535 -> 0..255 (65535 / 255 = 257)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """8-bit RGB of any Pillow image (see the module docstring)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _scale_to_8bit(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def _describe(path: Path, err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(err, IsADirectoryError):
        return f"{path}: is a directory, not an image"
    if isinstance(err, UnidentifiedImageError):
        return f"{path}: not an image (Pillow cannot identify the file format)"
    if isinstance(err, Image.DecompressionBombError):
        return f"{path}: too many pixels for Pillow's decompression-bomb limit ({err})"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{path}: cannot read the image ({first})"


def load_image(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB image (see the module docstring).

    ``min_size``: the shorter side the caller will resize to; a JPEG whose shorter side is over
    4x that is decoded at a reduced scale that keeps at least 2x.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min_size and img.format == "JPEG":
                    w, h = img.size
                    short = min(w, h)
                    if short > 4 * min_size:
                        keep = 2 * min_size / short  # draft picks a scale >= the requested size
                        img.draft("RGB", (max(1, math.ceil(w * keep)), max(1, math.ceil(h * keep))))
                img.load()
                upright = ImageOps.exif_transpose(img)
                return to_rgb(upright if upright is not None else img)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError, EOFError,
            struct.error) as e:  # what Pillow's decoders raise on a damaged file
        raise ImageError(_describe(path, e)) from None


# --- the transform of a data config (built by visionzoo.data.config.create_transform) -------------


@dataclass(frozen=True)
class _Plan:
    """A resolved data config checked and turned into sizes: resize, crop, optional zero-pad."""

    channels: int
    size: tuple[int, int]  # (H, W) of the output
    resize: int | tuple[int, int]  # an int: the shorter side (aspect kept); (H, W): exact
    crop: tuple[int, int]  # (H, W) center crop after the resize
    pad: tuple[int, int, int, int] | None  # zero padding (left, top, right, bottom) to ``size``
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> _Plan:
        cfg = resolve_data_config(cfg)  # a resolved config comes back unchanged
        channels, h, w = (int(v) for v in cfg["input_size"])
        if channels not in (1, 3):
            raise ValueError(f"images give 1 or 3 channels; this model takes {channels}")
        interpolation = str(cfg["interpolation"])
        if interpolation not in INTERPOLATION:
            raise ValueError(f"unknown interpolation {interpolation!r}; expected one of "
                             f"{', '.join(INTERPOLATION)}")
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel "
                             f"input")
        if not all(v > 0 for v in std):
            raise ValueError(f"std must be positive; got {std}")
        crop_pct, mode = float(cfg["crop_pct"]), cfg["crop_mode"]
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct}")
        if mode not in ("center", "squash"):
            raise ValueError(f"crop_mode must be center or squash; got {mode!r}")

        def scale(v: int) -> int:  # timm: floor(size / crop_pct); 1e-6 absorbs 240 / (240/255)
            return int(math.floor(v / crop_pct + 1e-6))

        if cfg.get("fit") == "pad":  # fitted to the training images' native size, then padded
            n = int(cfg.get("native_size") or 0)
            if not 1 <= n <= min(h, w):
                raise ValueError(f"fit='pad' needs native_size between 1 and {min(h, w)}; "
                                 f"got {cfg.get('native_size')!r}")
            left, top = (w - n) // 2, (h - n) // 2  # the odd pixel right/bottom, as in training
            return cls(channels, (h, w), n, (n, n), (left, top, w - n - left, h - n - top),
                       interpolation, mean, std)
        resize: int | tuple[int, int] = (
            scale(h) if h == w and mode == "center" else (scale(h), scale(w)))
        return cls(channels, (h, w), resize, (h, w), None, interpolation, mean, std)

    def fit_steps(self) -> list[Callable]:
        """Resize and center crop (and zero-pad), on PIL images or uint8 tensors."""
        steps: list[Callable] = [ToChannels(self.channels)]
        if isinstance(self.resize, int):
            steps.append(TrimAspect(MAX_ASPECT))
        steps += [v2.Resize(self.resize, interpolation=INTERPOLATION[self.interpolation],
                            antialias=True), v2.CenterCrop(self.crop)]
        if self.pad is not None:
            steps.append(v2.Pad(list(self.pad), fill=0))  # zero pixels, as in training
        return steps

    def to_tensor_steps(self) -> list[Callable]:
        return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)), v2.ToPureTensor()]


class ToChannels(presets.ToChannels):
    """The model's channels: a PIL image becomes 8-bit RGB as ``load_image`` makes it
    (``to_rgb``), then luma (``L``, ITU-R 601) for a 1-channel model; a tensor's gray channel is
    repeated to 3, or its RGB turned to luma (``presets.ToChannels``)."""

    def forward(self, img: Any) -> Any:
        if isinstance(img, Image.Image):
            rgb = to_rgb(img)
            return rgb.convert("L") if self.channels == 1 else rgb
        return super().forward(img)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


MAX_ASPECT = 16  # longer / shorter side kept before a shorter-side resize (see TrimAspect)


class TrimAspect(torch.nn.Module):
    """Center-crop the longer side to ``max_aspect`` times the shorter. Without it a 5000 x 1
    strip resized to a 256-pixel shorter side is a 1,280,000 x 256 image (over a gigabyte) of
    which the center crop keeps 224 x 224. Images within the ratio pass untouched, so ordinary
    photos get exactly torchvision's resize + center crop."""

    def __init__(self, max_aspect: float):
        super().__init__()
        self.max_aspect = max_aspect

    def forward(self, img: Any) -> Any:
        h, w = v2.functional.get_size(img)
        longest = max(1, math.ceil(self.max_aspect * min(h, w)))
        if max(h, w) <= longest:
            return img
        return v2.functional.center_crop(img, [min(h, longest), min(w, longest)])

    def extra_repr(self) -> str:
        return f"max_aspect={self.max_aspect}"


class PretrainedEvalTransform(v2.Compose):
    """The evaluation transform of a data config (``create_transform(cfg)``); the one
    ``predict``, ``evaluate`` (published weights) and deploy's calibration images use.

    Steps: ``ToChannels`` (RGB; luma for a 1-channel model), ``TrimAspect`` (only for strips
    over 16:1), ``Resize`` (shorter side ``floor(size / crop_pct)``, or exactly that (H, W) for a
    non-square input size or ``crop_mode="squash"``), ``CenterCrop(size)``, [``Pad`` with zeros:
    ``fit="pad"``, the image fitted to ``native_size`` then padded to the input size, as the
    network was trained], ``ToImage``, ``ToDtype(float32, scale=True)``, ``Normalize``,
    ``ToPureTensor`` (a plain ``torch.Tensor``, as ``ToTensor`` gives). The
    resize and crop run on the PIL image, so the pixels equal torchvision's classic
    ``Resize + CenterCrop + ToTensor`` (timm's eval transform); a uint8 tensor is resized by
    torchvision's tensor kernel (antialiased; within one 8-bit level of Pillow).

    Attributes: ``cfg`` (the resolved config), ``size`` (H, W), ``resize``, ``crop``, ``pad``,
    ``interpolation``, ``mean``, ``std``, ``channels``, ``min_size`` (for ``load_image``).
    """

    def __init__(self, cfg: Mapping[str, Any]):
        plan = _Plan.from_cfg(cfg)
        super().__init__(plan.fit_steps() + plan.to_tensor_steps())
        self.cfg = dict(cfg)
        self.channels, self.size, self.resize, self.crop, self.pad = (
            plan.channels, plan.size, plan.resize, plan.crop, plan.pad)
        self.interpolation, self.mean, self.std = plan.interpolation, plan.mean, plan.std

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> PretrainedEvalTransform:
        """The transform of a model's ``pretrained_cfg`` (resolved with timm's defaults):
        ``create_transform(resolve_data_config(cfg))``."""
        from visionzoo.data.config import create_transform

        return create_transform(cfg)

    @property
    def min_size(self) -> int:
        """The shorter side images are resized to (for ``load_image``'s reduced decoding)."""
        return self.resize if isinstance(self.resize, int) else min(self.resize)


def pretrained_train_transform(cfg: Mapping[str, Any]) -> v2.Compose:
    """A baseline training transform for a data config (``create_transform(cfg,
    is_training=True)``): timm's and torchvision's ImageNet one without colour jitter or
    auto-augment (the recipes' transforms in ``visionzoo.data.presets`` add those).

    ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`` with the config's
    interpolation (the Inception crop), ``RandomHorizontalFlip(0.5)``, to float, ``Normalize``.
    For ``fit="pad"`` (small images zero-padded to the input size) the image is fitted and
    padded as in evaluation, then ``RandomCrop(size, padding=4)`` and the flip: the CIFAR
    augmentation of He et al. §4.2 that the recipes' ``pad_crop`` uses.
    """
    plan = _Plan.from_cfg(cfg)
    interp = INTERPOLATION[plan.interpolation]
    if plan.pad is not None:
        steps = plan.fit_steps() + [v2.RandomCrop(plan.size, padding=4)]
    else:
        steps = [ToChannels(plan.channels),
                 v2.RandomResizedCrop(plan.size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                                      interpolation=interp, antialias=True)]
    return v2.Compose([*steps, v2.RandomHorizontalFlip(0.5), *plan.to_tensor_steps()])
