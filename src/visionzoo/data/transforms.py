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

``PretrainedEvalTransform`` reproduces the standard ImageNet evaluation (timm's and torchvision's):
resize the shorter side to ``floor(size / crop_pct)`` with the configured interpolation, center
crop ``size``, scale to [0, 1], normalise by mean/std. The crop is resampled straight from the
source region it covers (Pillow's ``resize(box=...)``): the same pixels as resizing the whole
image and then cropping, without building the whole resized image (a 1 x 5000 strip resized to
a 256-pixel shorter side would otherwise be 256 x 1,280,000).
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "PretrainedEvalTransform", "load_image", "to_rgb"]

INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
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


@dataclass(frozen=True)
class PretrainedEvalTransform:
    """Resize the shorter side to ``resize``, center-crop ``size`` (H, W), to a normalised
    (C, H, W) float tensor. Build it from a ``pretrained_cfg`` with ``from_cfg``.

    ``channels`` (the cfg's input_size[0]) is 3 (RGB) or 1 (luma, for networks trained on gray
    images such as Fashion-MNIST). ``pad_from``: a network trained on small images zero-padded
    to ``size`` (cfg ``fit="pad"``, ``native_size``): the image is brought to
    ``pad_from`` x ``pad_from`` and zero-padded, exactly as in training.
    """

    size: tuple[int, int]
    resize: int | tuple[int, int]  # an int keeps the aspect ratio; (H, W) is exact
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    pad_from: int | None = None
    pad_size: tuple[int, int] | None = None  # (H, W) the pad_from crop is zero-padded to

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> PretrainedEvalTransform:
        _, h, w = (int(v) for v in cfg["input_size"])
        crop_pct = float(cfg.get("crop_pct", 0.875))
        interpolation = str(cfg.get("interpolation", "bilinear"))
        if interpolation not in INTERPOLATION:
            raise ValueError(f"unknown interpolation {interpolation!r}; expected one of "
                             f"{', '.join(INTERPOLATION)}")

        def scale(v: int) -> int:  # timm: floor(size / crop_pct); 1e-6 absorbs 240 / (240/255)
            return max(v, int(math.floor(v / crop_pct + 1e-6)))

        channels = int(cfg["input_size"][0])
        if channels not in (1, 3):
            raise ValueError(f"images give 1 or 3 channels; this model takes {channels}")
        mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"pretrained_cfg mean/std have {len(mean)}/{len(std)} values for "
                             f"{channels}-channel input")
        pad_from = int(cfg["native_size"]) if cfg.get("fit") == "pad" else None
        if pad_from is not None:  # resize to the training images' native size, then pad
            return cls((pad_from, pad_from), pad_from, interpolation, mean, std, channels,
                       pad_from, (h, w))
        # a square input keeps the aspect ratio (shorter side); a non-square one resizes exactly
        resize: int | tuple[int, int] = scale(h) if h == w else (scale(h), scale(w))
        return cls((h, w), resize, interpolation, mean, std, channels)

    @property
    def min_size(self) -> int:
        """The shorter side images are resized to (for ``load_image``'s reduced decoding)."""
        return self.resize if isinstance(self.resize, int) else min(self.resize)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) after the resize step (torchvision's rule: the longer side is truncated)."""
        if not isinstance(self.resize, int):
            return self.resize[1], self.resize[0]
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def crop(self, img: Image.Image) -> Image.Image:
        """Resize then center-crop, computed as one resample of the cropped source region."""
        w, h = img.size
        rw, rh = self.resized_size(w, h)
        ch, cw = self.size
        # torchvision's center crop offsets, in resized coordinates
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        sx, sy = w / rw, h / rh  # resized -> source
        box = (left * sx, top * sy, min(w, (left + cw) * sx), min(h, (top + ch) * sy))
        return img.resize((cw, ch), INTERPOLATION[self.interpolation], box=box)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.crop(to_rgb(img))
        if self.channels == 1:
            img = img.convert("L")  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W[, 3]) uint8
        x = x.view(*x.shape[:2], -1).permute(2, 0, 1).float().div_(255.0)  # -> (C, H, W)
        if self.pad_from is not None and self.pad_size is not None:
            x = _pad_center(x, self.pad_size)  # zero pixels, before normalising (as training)
        c = self.channels
        mean = torch.tensor(self.mean).view(c, 1, 1)
        std = torch.tensor(self.std).view(c, 1, 1)
        return (x - mean) / std

    def describe(self) -> str:
        resize = (f"shorter side {self.resize}" if isinstance(self.resize, int)
                  else f"{self.resize[0]}x{self.resize[1]}")
        pad = (f", zero-pad to {self.pad_size[0]}x{self.pad_size[1]}" if self.pad_size else "")
        gray = ", gray" if self.channels == 1 else ""
        return (f"resize {resize} ({self.interpolation}), center crop "
                f"{self.size[0]}x{self.size[1]}{pad}{gray}, mean {_fmt(self.mean)}, "
                f"std {_fmt(self.std)}")


def _pad_center(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad (C, h, w) to (C, H, W): half each side, the odd pixel right/bottom."""
    h, w = x.shape[-2:]
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    return torch.nn.functional.pad(x, (left, size[1] - w - left, top, size[0] - h - top))


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
