"""vz.resolve_data_config and vz.create_transform: timm's data-config semantics, the torchvision
v2 evaluation transform (equal to torchvision's classic Resize + CenterCrop + ToTensor on a real
photo), the training transform, and predict / from_cfg going through the same transform."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

import visionzoo as vz
from visionzoo.data.transforms import PretrainedEvalTransform

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
COLOR = (255, 0, 128)


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skimage_data.chelsea())  # 451 x 300, a real photo


def _normalized(values, mean, std) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float32) / 255
    return (v - torch.tensor(mean)) / torch.tensor(std)


# --- resolve_data_config ----------------------------------------------------------------------


def test_defaults_are_timms():
    assert vz.resolve_data_config() == {
        "input_size": (3, 224, 224), "interpolation": "bicubic", **IMAGENET, "crop_pct": 0.875,
        "crop_mode": "center"}


def test_from_a_model_and_its_features_only_backbone():
    model = vz.create_model("resnet20")  # CIFAR: 32 x 32, no crop, CIFAR-10 mean/std
    cfg = vz.resolve_data_config(model)
    assert cfg == {"input_size": (3, 32, 32), "interpolation": "bilinear",
                   "mean": (0.4914, 0.4822, 0.4465), "std": (0.247, 0.2435, 0.2616),
                   "crop_pct": 1.0, "crop_mode": "center"}
    assert vz.resolve_data_config(vz.create_model("resnet20", features_only=True)) == cfg
    assert vz.resolve_data_config(model.pretrained_cfg) == cfg  # a dict works too
    assert vz.resolve_data_config(cfg) == cfg  # resolving is idempotent


def test_overrides_win_over_the_cfg():
    model = vz.create_model("resnet20")
    cfg = vz.resolve_data_config(model, img_size=40, crop_pct=0.8, interpolation="bicubic",
                                 mean=(0.5,), std=(0.25,))
    assert cfg["input_size"] == (3, 40, 40) and cfg["crop_pct"] == 0.8
    assert cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == (0.5,) * 3 and cfg["std"] == (0.25,) * 3  # one value per channel
    assert vz.resolve_data_config(model, input_size=(1, 48, 64))["input_size"] == (1, 48, 64)
    assert vz.resolve_data_config(model, in_chans=1)["input_size"] == (1, 32, 32)
    # timm-style args: a namespace of a whole command line; unset (None) and unrelated keys ignored
    args = argparse.Namespace(img_size=None, crop_pct=0.9, lr=0.1, mean=None)
    assert vz.resolve_data_config(model, args) == {**vz.resolve_data_config(model),
                                                   "crop_pct": 0.9}
    # pretrained_cfg replaces the model's
    other = {"input_size": (3, 64, 64), "interpolation": "nearest"}
    assert vz.resolve_data_config(model, pretrained_cfg=other)["input_size"] == (3, 64, 64)


def test_test_size_and_pad_fit():
    cfg = {"input_size": (3, 224, 224), "crop_pct": 0.875, "test_input_size": (3, 288, 288),
           "test_crop_pct": 1.0}
    assert vz.resolve_data_config(cfg)["input_size"] == (3, 224, 224)
    test = vz.resolve_data_config(cfg, use_test_size=True)
    assert test["input_size"] == (3, 288, 288) and test["crop_pct"] == 1.0
    padded = vz.resolve_data_config({"input_size": (1, 32, 32), "fit": "pad", "native_size": 28})
    assert padded["fit"] == "pad" and padded["native_size"] == 28


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"img_szie": 10}, "unknown data config override 'img_szie'"),
    ({"mean": (0.5, 0.5)}, "mean has 2 values for 3-channel input"),
    ({"input_size": (224, 224)}, "input_size must be"),
    ({"img_size": (1, 2, 3)}, "img_size must be"),
])
def test_bad_overrides(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vz.resolve_data_config(**kwargs)


# --- create_transform: evaluation -------------------------------------------------------------


def test_eval_transform_output_for_a_non_square_image():
    tf = vz.create_transform(vz.resolve_data_config(img_size=64))
    assert isinstance(tf, v2.Compose) and isinstance(tf, PretrainedEvalTransform)
    img = Image.new("RGB", (300, 200), COLOR)  # non-square; a constant image stays constant
    x = tf(img)
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (3, 64, 64)
    expected = _normalized(COLOR, IMAGENET["mean"], IMAGENET["std"]).view(3, 1, 1)
    torch.testing.assert_close(x, expected.expand(3, 64, 64), atol=1e-6, rtol=0)
    # a uint8 (C, H, W) tensor, and a 5000 x 1 strip (not resized to 1,280,000 x 64 first)
    t = torch.tensor(COLOR, dtype=torch.uint8).view(3, 1, 1).expand(3, 200, 300).contiguous()
    torch.testing.assert_close(tf(t), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(tf(Image.new("RGB", (5000, 1), COLOR)), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("cfg", "resize"), [
    ({"input_size": (3, 224, 224), "crop_pct": 0.875}, 256),  # ResNet: 224 / 0.875
    ({"input_size": (3, 240, 240), "crop_pct": 240 / 255}, 255),  # float 254.999...: floor -> 255
    ({"input_size": (3, 224, 224), "crop_pct": 1.0}, 224),
    ({"input_size": (3, 200, 300), "crop_pct": 0.9}, (222, 333)),  # non-square: exact (H, W)
    ({"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "squash"}, (256, 256)),
    ({"input_size": (3, 32, 32), "fit": "pad", "native_size": 28}, 28),
])
def test_crop_pct_arithmetic(cfg, resize):
    tf = vz.create_transform(cfg)
    assert tf.resize == resize
    assert tf.min_size == (resize if isinstance(resize, int) else min(resize))  # for load_image
    (step,) = [s for s in tf.transforms if isinstance(s, v2.Resize)]
    assert list(step.size) == ([resize] if isinstance(resize, int) else list(resize))


def test_resnet50_resizes_to_256():
    tf = vz.create_transform(vz.resolve_data_config(vz.create_model("resnet50")))
    assert tf.resize == 256 and tf.size == (224, 224) and tf.interpolation == "bilinear"


@pytest.mark.parametrize("cfg", [
    {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bilinear"},  # ResNet
    {"input_size": (3, 260, 260), "crop_pct": 260 / 292, "interpolation": "bicubic"},  # EffNet-B2
    {"input_size": (3, 240, 240), "crop_pct": 240 / 255, "interpolation": "bilinear"},
    {"input_size": (3, 288, 288), "crop_pct": 1.0, "interpolation": "bicubic"},
    {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.5,) * 3,
     "std": (0.5,) * 3},
])
def test_equals_torchvision_classic_eval_on_a_real_photo(chelsea, cfg):
    """timm's and torchvision's evaluation: Resize(size / crop_pct) + CenterCrop + ToTensor +
    Normalize, the PIL path; ours resizes the PIL image too, so the numbers are the same."""
    data = vz.resolve_data_config(cfg)
    ours = vz.create_transform(data)
    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}
    ref = T.Compose([T.Resize(ours.resize, interpolation=mode[data["interpolation"]]),
                     T.CenterCrop(data["input_size"][1:]), T.ToTensor(),
                     T.Normalize(data["mean"], data["std"])])
    a, b = ours(chelsea), ref(chelsea)
    assert a.shape == b.shape == data["input_size"]
    assert (a - b).abs().max().item() <= 1e-6


def test_uint8_tensor_input_is_close_to_pil(chelsea):
    tf = vz.create_transform({"input_size": (3, 224, 224), "interpolation": "bilinear"})
    t = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).contiguous()
    levels = (tf(t) - tf(chelsea)).abs() * torch.tensor(IMAGENET["std"]).view(3, 1, 1) * 255
    assert levels.max() <= 1.01 and levels.mean() < 0.01  # torchvision's kernel vs Pillow's


def test_one_channel_and_pad_fit():
    img = Image.new("RGB", (60, 40), COLOR)
    luma = int(np.asarray(img.convert("L"))[0, 0])  # ITU-R 601, as Pillow and training compute
    gray = vz.create_transform({"input_size": (1, 32, 32), "mean": (0.5,), "std": (0.5,)})
    x = gray(img)
    assert x.shape == (1, 32, 32)
    torch.testing.assert_close(x, _normalized([luma], (0.5,), (0.5,)).view(1, 1, 1).expand_as(x))
    # fit="pad": brought to the 28 x 28 native size, then zero pixels up to 32 x 32 (2 each side)
    pad = vz.create_transform({"input_size": (1, 32, 32), "mean": (0.5,), "std": (0.5,),
                               "fit": "pad", "native_size": 28})
    y = pad(img)[0]
    assert y.shape == (32, 32) and tuple(pad.pad) == (2, 2, 2, 2)
    assert torch.allclose(y[2:30, 2:30], x[0, 0, 0])
    assert (y[:2] == -1).all() and (y[30:] == -1).all() and (y[:, :2] == -1).all()


@pytest.mark.parametrize(("cfg", "message"), [
    ({"interpolation": "cubic"}, "unknown interpolation 'cubic'"),
    ({"input_size": (4, 32, 32), "mean": (0.5,) * 4, "std": (0.5,) * 4}, "1 or 3 channels"),
    ({"input_size": (1, 32, 32)}, "mean/std have 3/3 values for 1-channel"),
    ({"mean": (0.5, 0.5)}, "mean/std have 2/3 values for 3-channel"),
    ({"crop_pct": 1.5}, "crop_pct must be in"),
    ({"std": (0.5, 0.0, 0.5)}, "std must be positive"),
    ({"crop_mode": "border"}, "crop_mode must be center or squash"),
    ({"input_size": (3, 32, 32), "fit": "pad"}, "needs native_size"),
])
def test_bad_configs_are_one_line_errors(cfg, message):
    with pytest.raises(ValueError, match=message) as err:
        vz.create_transform(cfg)
    assert "\n" not in str(err.value)


# --- create_transform: training ---------------------------------------------------------------


def test_train_transform(chelsea):
    tf = vz.create_transform({"input_size": (3, 64, 64), "interpolation": "bicubic"},
                             is_training=True)
    assert isinstance(tf, v2.Compose) and not isinstance(tf, PretrainedEvalTransform)
    (rrc,) = [s for s in tf.transforms if isinstance(s, v2.RandomResizedCrop)]
    assert tuple(rrc.scale) == (0.08, 1.0) and rrc.interpolation == v2.InterpolationMode.BICUBIC
    assert any(isinstance(s, v2.RandomHorizontalFlip) for s in tf.transforms)
    torch.manual_seed(0)
    a, b = tf(chelsea), tf(torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1))
    assert a.shape == b.shape == (3, 64, 64) and a.dtype == b.dtype == torch.float32
    assert not torch.equal(a, tf(chelsea))  # random
    pad = vz.create_transform({"input_size": (1, 32, 32), "mean": (0.5,), "std": (0.5,),
                               "fit": "pad", "native_size": 28}, is_training=True)
    assert pad(chelsea).shape == (1, 32, 32)
    assert any(isinstance(s, v2.RandomCrop) for s in pad.transforms)


def test_keyword_config_and_model_forms_agree(chelsea):
    cfg = vz.resolve_data_config(vz.create_model("resnet20"))
    x = vz.create_transform(cfg)(chelsea)
    assert torch.equal(vz.create_transform(**cfg)(chelsea), x)  # timm: create_transform(**cfg)
    assert torch.equal(vz.create_transform(vz.create_model("resnet20"))(chelsea), x)
    assert torch.equal(PretrainedEvalTransform.from_cfg(cfg)(chelsea), x)


# --- predict and evaluate use this transform --------------------------------------------------


def test_predict_and_from_cfg_use_create_transform(chelsea, tmp_path: Path, monkeypatch):
    import visionzoo.data.config as config
    import visionzoo.predict as predict_module

    made, original = [], config.create_transform

    def spy(cfg=None, is_training=False, **kw):
        made.append(original(cfg, is_training, **kw))
        return made[-1]

    monkeypatch.setattr(predict_module, "create_transform", spy)
    monkeypatch.setattr(config, "create_transform", spy)
    model = vz.create_model("resnet20", num_classes=3).eval()
    path = tmp_path / "cat.png"
    chelsea.save(path)
    (result,) = predict_module.predict(model, [path], topk=3)
    (tf,) = made
    assert isinstance(tf, PretrainedEvalTransform) and tf.cfg == vz.resolve_data_config(model)
    with torch.no_grad():
        probs = model(tf(chelsea)[None]).softmax(-1)[0]
    assert result.top1[0] == int(probs.argmax()) and abs(result.top1[2] - probs.max()) < 1e-5
    # PretrainedEvalTransform.from_cfg (evaluate of published weights, deploy's calibration
    # images) is create_transform of the model's pretrained_cfg
    assert isinstance(PretrainedEvalTransform.from_cfg(model.pretrained_cfg), v2.Compose)
    assert len(made) == 2 and made[1].cfg == tf.cfg
