"""The tensor input pipeline: in-memory datasets batched and augmented as whole tensors.

For in-memory splits (IDX / CIFAR files, ``ArraySplit``) the images already are one uint8 tensor
(N, C, H, W). Instead of a loader worker transforming each image on its own (which takes a core
from the math on a small CPU), each step indexes its batch out of that tensor and augments it in
the main process with a few batched tensor operations, so every core works on the network:

* ``fit: pad``: zero-pad to ``img_size`` (as ``presets.PadTo``: the extra pixel right/bottom);
* ``train_crop: pad_crop``: one zero-padded batch (``crop_padding`` pixels each side) and a
  per-image offset in ``[0, 2 * crop_padding]`` on each axis, cropped with a single gather
  (the same distribution as ``RandomCrop(size, padding)``);
* ``hflip``: each image flipped with probability ``hflip`` (``torch.where`` on a per-image mask);
* the gray channel replicated to ``in_chans``, then float, scale to [0, 1], normalize;
* ``random_erasing``: with that probability a rectangle of each image set to 0 (the mean, after
  normalizing), drawn as torchvision's ``RandomErasing(value=0)`` draws it (area 2-33 % of the
  image, log-uniform aspect ratio 0.3-3.3, the first of 10 draws that fits, none if none does).

Order and randomness: the epoch's permutation is ``EpochSampler``'s (the same order, the same
per-rank shard and padding under torchrun, the same ``skip`` on resume); a batch's augmentation
draws from a generator seeded with ``mix_seed(seed, "tensor-aug", epoch, rank, batch)``, so a
resumed run sees the same batches as one never interrupted. The draws differ from the per-image
loader's (``pipeline: loader``); both are functions of the seed.

Not supported here (the loader pipeline does them): resizing small images (``fit: resize``),
RandomResizedCrop / scale jitter and auto-augment policies; ``tensor_problem`` names the first
such setting of a recipe.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from visionzoo.data.datasets import ArraySplit, EpochSampler, Split, mix_seed

__all__ = ["TensorBatches", "pad_crop", "random_erase", "random_hflip", "tensor_problem"]


def tensor_problem(cfg: Mapping[str, Any], split: Split, native_size: int | None) -> str | None:
    """Why the tensor pipeline cannot run this recipe on this split (None: it can)."""
    from visionzoo.data.presets import fit_mode

    if not isinstance(split, ArraySplit) or native_size is None:
        return "the dataset is not in memory (image files are decoded per image)"
    if fit_mode(cfg, native_size) == "resize":
        return f"fit: resize ({native_size} px images to img_size {cfg['img_size']})"
    chans = int(split.images.shape[1])
    if chans not in (1, int(cfg["in_chans"])):
        return f"{chans}-channel images for in_chans {cfg['in_chans']}"
    crop = cfg["train_crop"]
    if crop not in ("auto", "pad_crop", "none"):
        return f"train_crop: {crop}"
    if cfg["auto_augment"]:
        return f"auto_augment: {cfg['auto_augment']}"
    return None


def pad_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crops of a batch (B, C, H, W), each the size of the input, out of the batch
    zero-padded by ``padding`` pixels on every side; the offsets are uniform per image."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]  # (B, C, H, W)


def random_hflip(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each image of the batch (B, C, H, W) mirrored left-right with probability ``p``."""
    if p <= 0:
        return x
    flip = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator,
                 scale: tuple[float, float] = (0.02, 0.33),
                 ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017) of a batch (B, C, H, W), as torchvision's
    ``RandomErasing(p, scale, ratio, value=0)`` per image: with probability ``p``, up to
    ``attempts`` draws of an area fraction in ``scale`` and a log-uniform aspect ratio in
    ``ratio``; the first rectangle that fits inside the image (height < H, width < W) is set to
    0 at a uniform position; an image none of whose draws fits is kept."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    erase = torch.rand(b, generator=generator) < p
    area = h * w * torch.empty(b, attempts).uniform_(*scale, generator=generator)
    aspect = torch.empty(b, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                               generator=generator).exp()
    eh = (area * aspect).sqrt().round().long()
    ew = (area / aspect).sqrt().round().long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(1, keepdim=True)  # the first draw that fits
    eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
    erase &= fits.any(1)
    top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()  # uniform in [0, h - eh]
    left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None]))
    return x.masked_fill((inside & erase[:, None, None])[:, None], 0.0)


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) symmetrically to ``size`` (the extra pixel right/bottom)."""
    h, w = x.shape[-2:]
    if h == size and w == size:
        return x
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


class TensorBatches:
    """Batches ``(x, y, [])`` of an in-memory split, built and augmented on whole tensors.

    ``sampler``: an ``EpochSampler`` for training (its epoch, shard and skip decide the order;
    batches of ``batch_size``, the last partial one dropped) or None for evaluation (this rank's
    ``rank::world`` images in order, no augmentation, the last batch kept). ``cfg``: the resolved
    recipe (``img_size``, ``fit``, ``train_crop``, ``crop_padding``, ``hflip``, ``in_chans``,
    ``mean``, ``std``, ``seed``). Iterating is cheap to restart, as a loader's."""

    def __init__(self, split: ArraySplit, cfg: Mapping[str, Any], batch_size: int, *,
                 sampler: EpochSampler | None = None, rank: int = 0, world: int = 1):
        from visionzoo.data.presets import fit_mode

        self.images = split.images  # (N, C, H, W) uint8, shared, never copied
        self.labels = torch.tensor(split.labels, dtype=torch.long)
        self.batch_size, self.sampler, self.rank, self.world = batch_size, sampler, rank, world
        self.size = int(cfg["img_size"])
        self.pad = fit_mode(cfg, int(self.images.shape[-1])) == "pad"
        crop = cfg["train_crop"]
        self.padding = int(cfg["crop_padding"]) if crop in ("auto", "pad_crop") else 0
        self.hflip = float(cfg["hflip"])
        self.erase = float(cfg["random_erasing"])
        self.in_chans = int(cfg["in_chans"])
        self.seed = int(cfg["seed"])
        self.mean = torch.tensor([float(v) for v in cfg["mean"]]).view(1, -1, 1, 1)
        self.std = torch.tensor([float(v) for v in cfg["std"]]).view(1, -1, 1, 1)

    @property
    def training(self) -> bool:
        return self.sampler is not None

    def _order(self) -> tuple[Sequence[int], int]:
        """This rank's image indices from the current position, and the first batch's number."""
        if self.sampler is None:
            return range(self.rank, len(self.labels), self.world), 0
        return self.sampler.indices(), self.sampler.skip // self.batch_size

    def __len__(self) -> int:
        order, _ = self._order()
        n = len(order)
        return n // self.batch_size if self.training else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        order, first = self._order()
        order = torch.as_tensor(list(order), dtype=torch.long)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.batch(idx, first + b), self.labels[idx], []

    def batch(self, idx: torch.Tensor, number: int = 0) -> torch.Tensor:
        """The normalized float batch of images ``idx`` (augmented when training; ``number``,
        the batch's position in the epoch, seeds its draws)."""
        x = _pad_to(self.images[idx], self.size) if self.pad else self.images[idx]
        g = None
        if self.training:
            assert self.sampler is not None
            g = torch.Generator().manual_seed(
                mix_seed(self.seed, "tensor-aug", self.sampler.epoch, self.rank, number))
            x = random_hflip(pad_crop(x, self.padding, g), self.hflip, g)
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)  # gray replicated (1 -> 3 channels)
        x = (x.float().div_(255) - self.mean) / self.std
        return random_erase(x, self.erase, g) if g is not None else x
