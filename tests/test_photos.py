"""visionzoo.photos: scikit-image's bundled photos, preprocessed, and top-1 agreement."""

from __future__ import annotations

import torch

import visionzoo as vz
from visionzoo.photos import PHOTOS, agreement, real_photos, top1_agreement

from conftest import randomize_


def test_real_photos_and_agreement():
    x = real_photos((3, 48, 40), views=2)
    assert x.shape == (2 * len(PHOTOS), 3, 48, 40)
    assert not torch.equal(x[0], x[1])  # view 1 is a random crop, not the centre crop
    model = randomize_(vz.create_model("resnet18")).eval()
    rep = agreement(model, model, x[:6])
    assert rep["top1"] == rep["top1_in_top5"] == 1.0 and rep["n"] == 6
    assert top1_agreement(model, model, x[:6]) == 1.0
