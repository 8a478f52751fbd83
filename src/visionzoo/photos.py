"""Real photos (scikit-image's bundled ``skimage.data`` images, no download) and top-1 agreement.

A logit tolerance says little about a lossy number format (int8, bfloat16): those are judged by how
often the candidate predicts what the float32 model predicts on real photos (``agreement``), with
the photos preprocessed as the model's ``pretrained_cfg`` says (``real_photos``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PHOTOS", "agreement", "real_photos", "top1_agreement"]

# scikit-image's bundled photos (no download); grayscale ones are repeated to three channels.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
          "camera", "clock", "hubble_deep_field", "immunohistochemistry", "retina", "brick")


def _load_photo(name: str) -> torch.Tensor:
    import skimage.data as data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(data, name)()
    t = torch.from_numpy(img.copy()).float() / 255.0
    if t.ndim == 2:
        t = t.unsqueeze(-1).expand(-1, -1, 3)
    return t[..., :3].permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


def real_photos(input_size: Sequence[int] = (3, 224, 224), mean: Sequence[float] = (0.485, 0.456,
                0.406), std: Sequence[float] = (0.229, 0.224, 0.225), crop_pct: float = 0.875,
                views: int = 1, names: Sequence[str] = PHOTOS, seed: int = 0) -> torch.Tensor:
    """Preprocessed photos from ``skimage.data`` as a (N, 3, H, W) batch.

    View 0 of each photo is the evaluation transform (resize the short side to size / crop_pct,
    centre crop); views 1.. are seeded random crops (20-100 % of the area) with random flips, so
    a handful of photos gives enough distinct inputs to calibrate and to measure agreement.
    """
    _, h, w = input_size
    g = torch.Generator().manual_seed(seed)
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)
    out = []
    for name in names:
        img = _load_photo(name)
        _, ih, iw = img.shape
        for v in range(views):
            if v == 0:
                short = round(min(h, w) / crop_pct)
                scale = short / min(ih, iw)
                rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
                big = F.interpolate(img[None], size=(rh, rw), mode="bilinear",
                                    antialias=True, align_corners=False)[0]
                top, left = (rh - h) // 2, (rw - w) // 2
                crop = big[:, top:top + h, left:left + w]
            else:
                area = float(torch.empty(1).uniform_(0.2, 1.0, generator=g)) * ih * iw
                side = int(min(ih, iw, area ** 0.5))
                top = int(torch.randint(0, ih - side + 1, (1,), generator=g))
                left = int(torch.randint(0, iw - side + 1, (1,), generator=g))
                crop = F.interpolate(img[None, :, top:top + side, left:left + side],
                                     size=(h, w), mode="bilinear", antialias=True,
                                     align_corners=False)[0]
                if torch.rand(1, generator=g) < 0.5:
                    crop = crop.flip(-1)
            out.append((crop.clamp(0, 1) - mean_t) / std_t)
    return torch.stack(out)


@torch.inference_mode()
def agreement(reference: Callable[[torch.Tensor], torch.Tensor],
              candidate: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              batch_size: int = 16, confident: float = 0.5) -> dict[str, float]:
    """How often ``candidate`` predicts what ``reference`` predicts, on ``images``.

    Either may be an ``nn.Module`` (put in eval mode) or any callable from a batch to logits
    (a ``visionzoo.deploy.Deployed``). ``top1``: same top-1 class; ``top1_in_top5``: the
    reference's top-1 is among the candidate's top 5; ``top1_confident``: top-1 agreement over
    the images the reference classifies with softmax probability >= ``confident`` (an ambiguous
    photo flips under any perturbation, so this separates the quantizer's error from the photo's
    ambiguity); ``n``/``n_confident``; ``max_logit_diff``: max |candidate - reference|.
    """
    for m in (reference, candidate):
        if isinstance(m, nn.Module):
            m.eval()
    ref_logits, cand_logits = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        ref_logits.append(reference(x).float())
        cand_logits.append(candidate(x).float())
    a, b = torch.cat(ref_logits), torch.cat(cand_logits)
    top1 = a.argmax(1)
    same = top1 == b.argmax(1)
    in5 = (b.topk(min(5, b.shape[1]), dim=1).indices == top1[:, None]).any(1)
    sure = a.softmax(1).amax(1) >= confident
    return {"top1": same.float().mean().item(), "top1_in_top5": in5.float().mean().item(),
            "top1_confident": same[sure].float().mean().item() if sure.any() else float("nan"),
            "n": float(len(same)), "n_confident": float(sure.sum()),
            "max_logit_diff": float((b - a).abs().max())}


def top1_agreement(reference: Callable[[torch.Tensor], torch.Tensor],
                   candidate: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   batch_size: int = 16) -> float:
    """Fraction of images on which both models predict the same class."""
    return agreement(reference, candidate, images, batch_size)["top1"]
