"""Batch mixing: MixUp (Zhang et al., arXiv 1710.09412) and CutMix (Yun et al., arXiv 1905.04899).

Each image is paired with the image at the mirrored position of the batch (``x.flip(0)``), as in
the reference implementations. MixUp blends whole images with a weight lambda ~ Beta(a, a);
CutMix pastes a box covering a (1 - lambda) fraction of the image and then recomputes lambda from
the box actually pasted (it may be clipped at the border). Targets become the same blend of
one-hot labels.

Randomness comes from a ``random.Random`` seeded per step by the caller, not from a global
generator, so a resumed or distributed run draws exactly the same boxes and weights.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

__all__ = ["BatchMixer"]


class BatchMixer:
    """``mixer(x, y, seed) -> (mixed x, soft targets)``.

    ``mixup_alpha``/``cutmix_alpha``: Beta parameters (0 disables that kind); ``prob``: chance a
    batch is mixed at all; ``switch_prob``: chance of CutMix when both are enabled.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(seed)
        target = F.one_hot(y, self.num_classes).to(torch.float32)
        if not self.enabled or rng.random() >= self.prob:
            return x, target
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = rng.betavariate(alpha, alpha)
        x = x.clone()
        partner = x.flip(0)  # (N, C, H, W): image i is mixed with image N-1-i
        if use_cutmix:
            h, w = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)  # the box covers (1 - lambda) of the area
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = rng.randrange(h), rng.randrange(w)
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the box actually pasted
        else:
            x = x.mul(lam).add_(partner, alpha=1.0 - lam)
        return x, target.mul(lam).add_(target.flip(0), alpha=1.0 - lam)
