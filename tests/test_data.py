"""Data layouts (IDX, CIFAR pickles, ImageFolder), undecodable images, samplers, transform
presets, MixUp/CutMix and the packaged recipes. Everything runs on tiny synthetic data written to
a temporary folder; the helpers here also serve test_engine.py and test_train_cli.py."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from visionzoo.data.datasets import (
    FASHION_MNIST_CLASSES,
    ArraySplit,
    DataError,
    DataWarning,
    EpochSampler,
    FileSplit,
    ShardSampler,
    Skipped,
    TransformedSplit,
    collate,
    make_loader,
    open_dataset,
)
from visionzoo.data.mixing import BatchMixer
from visionzoo.data.presets import eval_transform, fit_mode, train_transform
from visionzoo.recipes import RECIPE_KEYS, RecipeError, coerce, list_recipes, load_recipe

# ---------------------------------------------------------------------------------------------
# synthetic datasets (learnable: each class lights up its own region)
# ---------------------------------------------------------------------------------------------


def class_images(n: int, classes: int, size: int, chans: int, seed: int) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """uint8 (n, chans, size, size) noise with a bright block whose position encodes the label."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    x = rng.integers(0, 60, size=(n, chans, size, size), dtype=np.uint8)
    cell = size // 4
    for i, c in enumerate(labels):
        r, q = divmod(int(c) % 16, 4)
        x[i, :, r * cell:(r + 1) * cell, q * cell:(q + 1) * cell] = 220
    return x, labels.astype(np.uint8)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I",
                                                                        *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, n_train: int = 80, n_test: int = 40) -> Path:
    """Fashion-MNIST IDX layout (gzipped, as Debian ships it), 28x28 gray."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = class_images(n, 10, 28, 1, seed)
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x[:, 0])
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def write_cifar(root: Path, classes: int = 10, n_train: int = 64, n_test: int = 32,
                batches: int = 2) -> Path:
    """CIFAR-10 (``classes=10``) or CIFAR-100 python layout, pickled with protocol 2 and numpy
    arrays like the originals."""
    x, y = class_images(n_train, classes, 32, 3, 0)
    xt, yt = class_images(n_test, classes, 32, 3, 1)
    if classes == 10:
        root = root / "cifar-10-batches-py"
        root.mkdir(parents=True)
        for b, idx in enumerate(np.array_split(np.arange(n_train), batches)):
            _pickle(root / f"data_batch_{b + 1}",
                    {b"data": x[idx].reshape(len(idx), -1), b"labels": y[idx].tolist()})
        _pickle(root / "test_batch", {b"data": xt.reshape(n_test, -1), b"labels": yt.tolist()})
        _pickle(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        root = root / "cifar-100-python"
        root.mkdir(parents=True)
        _pickle(root / "train", {b"data": x.reshape(n_train, -1), b"fine_labels": y.tolist()})
        _pickle(root / "test", {b"data": xt.reshape(n_test, -1), b"fine_labels": yt.tolist()})
        _pickle(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in
                                                      range(classes)]})
    return root.parent


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 6, size: int = 40,
                      corrupt: bool = True) -> Path:
    """train/ and val/ class folders of PNG/JPEG files, plus (optionally) one file of garbage
    bytes and one truncated PNG in train/."""
    from PIL import Image

    for split, n, seed in (("train", per_class, 0), ("val", max(per_class // 2, 1), 1)):
        x, y = class_images(n * classes, classes, size, 3, seed)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            d = root / split / f"class_{label}"
            d.mkdir(parents=True, exist_ok=True)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:03d}.{ext}")
    if corrupt:
        (root / "train" / "class_0" / "zz_garbage.jpg").write_bytes(os.urandom(300))
        good = (root / "train" / "class_1").glob("*.png").__next__().read_bytes()
        (root / "train" / "class_1" / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "class_0" / "notes.txt").write_text("not an image")  # ignored
    return root


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------


def test_idx_layout_reads_images_labels_and_stats(tmp_path: Path) -> None:
    root = write_fashion_mnist(tmp_path / "fashion-mnist", 30, 20)
    src = open_dataset(str(root))
    assert (src.layout, src.channels, src.native_size) == ("idx", 1, 28)
    assert src.classes == list(FASHION_MNIST_CLASSES)
    assert (len(src.split("train")), len(src.split(None))) == (30, 20)  # None: the test split
    x, y = class_images(30, 10, 28, 1, 0)
    img, label = src.split("train").load(7)
    assert torch.equal(img, torch.from_numpy(x[7])) and label == y[7]
    expect = x.astype(np.float64) / 255
    assert src.stats["mean"][0] == pytest.approx(expect.mean(), abs=1e-4)
    assert src.stats["std"][0] == pytest.approx(expect.std(), abs=1e-4)


def test_idx_keyword_search_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fashion_mnist(tmp_path / "fashion-mnist", 10, 10)
    monkeypatch.setenv("VISIONZOO_DATA", str(tmp_path))
    assert open_dataset("fashion-mnist").root == str(tmp_path / "fashion-mnist")
    with pytest.raises(DataError, match="not found"):
        open_dataset("cifar100")  # keyword known, folder absent everywhere searched
    with pytest.raises(DataError, match="no such dataset"):
        open_dataset(str(tmp_path / "nope"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(DataError):
        open_dataset(str(broken))


def test_real_fashion_mnist_from_debian_package() -> None:
    # .ci/run installs it; a machine without it fails here rather than skipping silently
    assert Path("/usr/share/datasets/fashion-mnist").is_dir(), \
        "apt-get install dataset-fashion-mnist (see .ci/run)"
    src = open_dataset("fashion-mnist")
    assert (len(src.split("train")), len(src.split("test"))) == (60000, 10000)
    counts = torch.bincount(torch.tensor(src.split("test").labels), minlength=10)
    assert counts.tolist() == [1000] * 10  # the test set is balanced
    assert src.stats["mean"][0] == pytest.approx(0.2860, abs=1e-3)  # the known FMNIST mean


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_layouts(tmp_path: Path, classes: int) -> None:
    write_cifar(tmp_path, classes=classes, n_train=40, n_test=20)
    src = open_dataset(str(tmp_path))
    assert src.layout == "cifar" and src.channels == 3 and src.native_size == 32
    assert len(src.classes) == classes
    assert src.classes[3] == (f"c{3}" if classes == 10 else "f3")
    assert (len(src.split("train")), len(src.split("test"))) == (40, 20)
    x, y = class_images(40, classes, 32, 3, 0)
    img, label = src.split("train").load(25)  # second batch file for CIFAR-10
    assert torch.equal(img, torch.from_numpy(x[25])) and label == y[25]  # R, G, B planes


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # would call os.system on a plain pickle.load
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in ("data_batch_1", "test_batch"):
        _pickle(root / name, {"data": Evil(), "labels": [0]})
    with pytest.raises(DataError, match="refusing"):
        open_dataset(str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_imagefolder_skips_and_reports_undecodable_images(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "folder", classes=3, per_class=4)
    src = open_dataset(str(root))
    assert src.layout == "imagefolder" and src.eval_split == "val"
    assert src.classes == ["class_0", "class_1", "class_2"]
    train = src.split("train")
    assert len(train) == 3 * 4 + 2  # two broken files are listed; notes.txt is not
    cfg = _cfg(img_size=24, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3, crop_pct=1.0)
    ds = TransformedSplit(train, eval_transform(cfg, None, 3))
    loader = make_loader(ds, ShardSampler(len(ds)), 5, drop_last=False, workers=1)
    images, skipped = 0, []
    for x, y, sk in loader:
        assert x.shape[1:] == (3, 24, 24) and len(x) == len(y)
        images += len(y)
        skipped += sk
    assert images == 12
    assert sorted(Path(s.path).name for s in skipped) == ["zz_garbage.jpg", "zz_truncated.png"]
    assert all(s.reason for s in skipped)
    x, y, sk = collate([Skipped("a", "bad")])  # a batch with nothing decodable
    assert x.numel() == 0 and len(y) == 0 and len(sk) == 1


def test_imagefolder_val_class_must_be_known(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "f", classes=2, per_class=2, corrupt=False)
    (root / "val" / "stranger").mkdir()
    (root / "val" / "stranger" / "x.png").write_bytes(b"")  # an image file of an unknown class
    with pytest.raises(DataError, match="not among the training classes"):
        open_dataset(str(root))


def write_awkward_images(folder: Path) -> dict[str, Path]:
    """One small file of each kind a decoder can get wrong (see ``load_image``)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))  # 40 wide, 24 high
    out: dict[str, Path] = {}

    def save(name: str, img: Image.Image, **kw: object) -> None:
        out[name] = folder / name
        img.save(out[name], **kw)

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to display"
    save("exif6.jpg", rgb, quality=95, exif=exif.tobytes())
    rgba = rgb.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 10, 24))  # the left 10 columns transparent (and black)
    save("rgba.png", rgba)
    la = rgb.convert("LA")
    la.paste((0, 0), (0, 0, 10, 24))
    save("la.png", la)
    gray16 = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    save("gray16.png", Image.fromarray(gray16))
    pal = rgb.quantize(16)
    pal.paste(0, (0, 0, 10, 24))
    save("palette_transparent.png", pal, transparency=0)
    save("palette.gif", rgb.quantize(16))
    save("cmyk.jpg", rgb.convert("CMYK"), quality=95)
    save("gray.png", rgb.convert("L"))
    return out


def test_folder_datasets_and_predict_decode_the_same(tmp_path: Path) -> None:
    """Train/eval (FileSplit) and predict (load_image) go through one decoder: EXIF rotation,
    alpha on white, 16-bit, palette and CMYK give the same pixels and the same model input."""
    from PIL import Image

    from visionzoo.data.transforms import PretrainedEvalTransform, load_image

    files = write_awkward_images(tmp_path / "d" / "train" / "awkward")
    write_awkward_images(tmp_path / "d" / "val" / "awkward")
    src = open_dataset(str(tmp_path / "d"))
    split = src.split("train")
    assert isinstance(split, FileSplit)
    tf = PretrainedEvalTransform.from_cfg({"input_size": (3, 16, 16), "crop_pct": 1.0})
    decoded = {}
    for i, (path, _) in enumerate(split.files):
        img, _ = split.load(i)
        ref = load_image(path, min_size=tf.min_size)  # exactly what predict() does
        assert img.mode == "RGB" and img.size == ref.size, path
        assert np.array_equal(np.asarray(img), np.asarray(ref)), path
        assert torch.equal(tf(img), tf(ref)), path
        decoded[Path(path).name] = np.asarray(img)
    assert set(decoded) == set(files)
    assert decoded["exif6.jpg"].shape == (40, 24, 3)  # transposed: upright
    for name in ("rgba.png", "la.png", "palette_transparent.png"):
        assert (decoded[name][:, :10] == 255).all(), name  # transparent -> white, not black
    gray8 = np.asarray(Image.open(files["gray.png"]), dtype=np.int16)
    assert np.abs(decoded["gray16.png"][..., 0].astype(np.int16) - gray8).max() <= 1
    original = np.asarray(Image.open(files["rgba.png"]).convert("RGB"), dtype=np.float32)
    cmyk = decoded["cmyk.jpg"].astype(np.float32)
    assert np.abs(cmyk - original)[:, 10:].mean() < 12  # the colours, not their inverse
    # a 1-channel network reads the same decoded pixels as luma
    src.set_mode("L")
    img, _ = split.load(list(decoded).index("rgba.png"))
    assert img.mode == "L" and (np.asarray(img)[:, :10] == 255).all()


def test_empty_class_folder_is_a_warning_not_a_class(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "f", classes=2, per_class=2, corrupt=False)
    (root / "train" / "empty").mkdir()
    (root / "train" / "only_notes").mkdir()
    (root / "train" / "only_notes" / "readme.txt").write_text("no images here")
    (root / "val" / "empty").mkdir()  # an empty folder in val/ is not an unknown class either
    with pytest.warns(DataWarning) as caught:
        src = open_dataset(str(root))
    assert src.classes == ["class_0", "class_1"]
    messages = " ".join(str(w.message) for w in caught)
    assert str(root / "train" / "empty") in messages and "only_notes" in messages
    assert "not a class" in messages
    assert all(label in (0, 1) for split in src.splits.values() for label in split.labels)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no_classes", "empty_classes",
                                  "no_val", "no_images"])
def test_the_data_folder_is_checked_before_any_image_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    root = tmp_path / "data"
    if case == "file":
        root.write_text("not a folder")
    elif case != "missing":
        root.mkdir()
    if case in ("no_classes", "empty_classes", "no_val", "no_images"):
        (root / "train").mkdir()
    if case == "no_classes":
        (root / "val").mkdir()
    if case == "empty_classes":
        (root / "train" / "a").mkdir()
        (root / "val" / "a").mkdir(parents=True)
    if case == "no_val":
        write_awkward_images(root / "train" / "a")
    if case == "no_images":
        (root / "train" / "a").mkdir()
        (root / "train" / "a" / "x.txt").write_text("")
        (root / "val").mkdir()

    def no_decoding(*args: object, **kw: object) -> None:
        raise AssertionError("an image was read before the folder was checked")

    import PIL.Image

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    expected = {"missing": "no such dataset folder", "file": "is a file", "empty":
                "unrecognised layout", "no_classes": "no class folders",
                "empty_classes": "no class folders with images .*; a hold none",
                "no_val": "no val/",
                "no_images": "no class folders"}[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match=expected) as err:
            open_dataset(str(root))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------


def test_two_ranks_see_the_global_batches_of_one_process() -> None:
    n, batch = 48, 8
    one = EpochSampler(n, seed=3)
    ranks = [EpochSampler(n, seed=3, rank=r, world=2) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(2)
    keys1 = list(one)
    per_rank = [list(s) for s in ranks]
    for k in range(n // batch):
        merged = per_rank[0][k * batch // 2:(k + 1) * batch // 2] + \
            per_rank[1][k * batch // 2:(k + 1) * batch // 2]
        assert sorted(merged) == sorted(keys1[k * batch:(k + 1) * batch])  # same (index, seed)
    one.set_epoch(3)
    assert [i for i, _ in one] != [i for i, _ in keys1]  # a new permutation each epoch
    one.set_epoch(2, skip=16)
    assert list(one) == keys1[16:] and len(one) == n - 16  # resume mid-epoch


def test_uneven_split_pads_like_distributed_sampler() -> None:
    ranks = [EpochSampler(5, rank=r, world=2, shuffle=False) for r in range(2)]
    assert [[i for i, _ in s] for s in ranks] == [[0, 2, 4], [1, 3, 0]]
    assert [list(ShardSampler(5, r, 2)) for r in range(2)] == [[0, 2, 4], [1, 3]]


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------


def _cfg(**kw: object) -> dict:
    cfg = {k: s.default for k, s in RECIPE_KEYS.items()}
    cfg.update(kw)
    return cfg


def test_fashion_mnist_is_padded_for_cifar_nets_and_resized_for_imagenet_nets() -> None:
    assert fit_mode(_cfg(img_size=32), 28) == "pad"
    assert fit_mode(_cfg(img_size=224), 28) == "resize"
    assert fit_mode(_cfg(img_size=32, fit="resize"), 28) == "resize"
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    cfg = _cfg(img_size=32, in_chans=1, mean=[0.0], std=[1.0])
    out = eval_transform(cfg, 28, 1)(img)
    assert out.shape == (1, 32, 32)
    assert torch.allclose(out[:, 2:30, 2:30], img.float() / 255, atol=1e-6)  # pixels kept
    assert out[:, :2].abs().sum() == 0 and out[:, :, 30:].abs().sum() == 0
    rgb = eval_transform(_cfg(img_size=64, in_chans=3, mean=[0.0] * 3, std=[1.0] * 3), 28, 1)(img)
    assert rgb.shape == (3, 64, 64) and torch.equal(rgb[0], rgb[2])  # gray replicated


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment", "trivialaugment"])
@pytest.mark.parametrize("chans", [1, 3])
def test_train_transforms_are_seeded_per_sample(policy: str, chans: int) -> None:

    imgs = torch.randint(0, 256, (4, chans, 28, 28), dtype=torch.uint8)
    cfg = _cfg(img_size=32, in_chans=chans, mean=[0.5] * chans, std=[0.5] * chans,
               auto_augment=policy, random_erasing=0.5, interpolation="bicubic")
    ds = TransformedSplit(ArraySplit(imgs, [0, 1, 2, 3]), train_transform(cfg, 28, chans))
    for seed in range(20):  # geometric ops draw too (bicubic falls back to bilinear)
        assert ds[(seed % 4, seed)][0].shape == (chans, 32, 32)
    a, b, c = ds[(1, 123)][0], ds[(1, 123)][0], ds[(1, 124)][0]
    assert a.shape == (chans, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)  # same seed, same augmentation, whatever process draws it
    assert not torch.equal(a, c)


@pytest.mark.parametrize("crop", ["rrc", "scale_jitter", "pad_crop", "none"])
def test_file_train_crops(crop: str) -> None:
    from PIL import Image

    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    cfg = _cfg(img_size=24, in_chans=3, mean=[0.5] * 3, std=[0.5] * 3, train_crop=crop,
               scale_jitter=[26, 40], interpolation="bicubic", auto_augment="randaugment",
               ra_magnitude=15)  # the Swin / EfficientNet recipes' bicubic resampling
    for seed in range(4):
        torch.manual_seed(seed)
        assert train_transform(cfg, None, 3)(im).shape == (3, 24, 24)


# ---------------------------------------------------------------------------------------------
# MixUp / CutMix
# ---------------------------------------------------------------------------------------------


def test_mixup_blends_images_and_targets_with_the_same_weight() -> None:
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mx, t = BatchMixer(5, mixup_alpha=0.4)(x, y, seed=7)
    lam = t[0, 0].item()  # image 0 (class 0) is paired with image 5 (also class 0) -> 1.0
    assert lam == pytest.approx(1.0)
    lam = t[1, 1].item()  # image 1 (class 1) with image 4 (class 4)
    assert t[1, 4].item() == pytest.approx(1 - lam)
    assert torch.allclose(mx[1], lam * x[1] + (1 - lam) * x[4], atol=1e-6)
    assert torch.allclose(t.sum(1), torch.ones(6))
    mx2, t2 = BatchMixer(5, mixup_alpha=0.4)(x, y, seed=7)
    assert torch.equal(mx, mx2) and torch.equal(t, t2)  # the step's seed decides everything


def test_cutmix_target_weight_is_the_pasted_area() -> None:
    x = torch.zeros(2, 1, 10, 10)
    x[1] = 1.0
    for seed in range(10):
        mx, t = BatchMixer(2, cutmix_alpha=1.0)(x, torch.tensor([0, 1]), seed=seed)
        pasted = mx[0].mean().item()  # image 0 is zeros; the box comes from image 1 (ones)
        assert t[0, 1].item() == pytest.approx(pasted)
        assert t[0, 0].item() == pytest.approx(1 - pasted)


def test_mixing_off_gives_one_hot() -> None:
    x = torch.rand(3, 1, 4, 4)
    mx, t = BatchMixer(4)(x, torch.tensor([0, 3, 1]), seed=0)
    assert torch.equal(mx, x) and t.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------


def test_packaged_recipes_load() -> None:
    names = list_recipes()
    for expected in ("resnet", "resnet_cifar", "mobilenet_v1", "mobilenet_v2", "efficientnet",
                     "swin", "small_cpu"):
        assert expected in names
    for name in names:
        assert load_recipe(name)["description"]


def test_paper_recipes_hold_the_papers_numbers() -> None:
    r = load_recipe("resnet")  # He et al. §3.4
    assert (r["opt"], r["lr"], r["momentum"], r["weight_decay"], r["batch_size"]) == \
        ("sgd", 0.1, 0.9, 1e-4, 256)
    assert (r["sched"], r["milestones"], r["decay_rate"], r["epochs"]) == \
        ("multistep", [30, 60], 0.1, 90)
    s = load_recipe("swin")  # Liu et al. §4.1
    assert (s["opt"], s["lr"], s["weight_decay"], s["epochs"], s["warmup_epochs"],
            s["sched"], s["batch_size"]) == ("adamw", 1e-3, 0.05, 300, 20, "cosine", 1024)
    e = load_recipe("efficientnet")  # Tan & Le §5.2
    assert (e["opt"], e["rmsprop_decay"], e["momentum"], e["weight_decay"], e["lr"],
            e["decay_rate"], e["decay_epochs"]) == ("rmsprop_tf", 0.9, 0.9, 1e-5, 0.256, 0.97,
                                                    2.4)
    m = load_recipe("mobilenet_v2")  # Sandler et al. §6.1
    assert (m["opt"], m["lr"], m["weight_decay"], m["decay_rate"], m["batch_size"]) == \
        ("rmsprop_tf", 0.045, 4e-5, 0.98, 96)


def test_override_values_parse_and_validate(tmp_path: Path) -> None:
    assert coerce("weight_decay", "1e-4") == 1e-4  # YAML 1.1 alone would keep a string
    assert coerce("milestones", "[30, 60]") == [30.0, 60.0]
    assert coerce("ema", "true") is True and coerce("clip_grad", "null") is None
    assert coerce("img_size", "auto") == "auto" and coerce("img_size", "64") == 64
    assert coerce("model_args", "{drop_path_rate: 0.1}") == {"drop_path_rate": 0.1}
    with pytest.raises(RecipeError, match="did you mean lr"):
        coerce("lrr", 0.1)
    with pytest.raises(RecipeError, match="expects int"):
        coerce("epochs", "many")
    with pytest.raises(RecipeError, match="one of"):
        coerce("opt", "lamb")
    bad = tmp_path / "r.yaml"
    bad.write_text("epochs: 3\nwarmup: 5\n")
    with pytest.raises(RecipeError, match="warmup"):
        load_recipe(str(bad))


# ---------------------------------------------------------------------------------------------
# the tensor pipeline (in-memory datasets augmented as whole batches)
# ---------------------------------------------------------------------------------------------


def _tensor_cfg(**kw: object) -> dict:
    return _cfg(**{"img_size": 28, "in_chans": 1, "mean": [0.0], "std": [1.0], "seed": 5,
                   "crop_padding": 2, "hflip": 0.5, **kw})


def _numbered(n: int = 40, size: int = 28) -> ArraySplit:
    # every pixel distinct within an image, and the image's number in the top-left corner
    imgs = (torch.arange(size * size).view(1, 1, size, size) % 200 + 50).repeat(n, 1, 1, 1)
    imgs[:, 0, 0, 0] = torch.arange(n)
    return ArraySplit(imgs.to(torch.uint8), [i % 4 for i in range(n)])


def test_batched_pad_crop_offsets_stay_within_the_padding() -> None:
    from visionzoo.data.tensor_pipeline import pad_crop

    x = torch.randint(1, 256, (64, 1, 10, 12), dtype=torch.uint8)
    out = pad_crop(x, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    seen = set()
    for i in range(len(x)):  # each crop is one window of the padded image, offsets in [0, 6]
        hits = [(oy, ox) for oy in range(7) for ox in range(7)
                if torch.equal(padded[i, :, oy:oy + 10, ox:ox + 12], out[i])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 10  # offsets vary per image
    assert torch.equal(pad_crop(x, 0, torch.Generator()), x)


def test_batched_flip_mirrors_exactly_the_drawn_images() -> None:
    from visionzoo.data.tensor_pipeline import random_hflip

    x = torch.randint(0, 256, (200, 2, 5, 7), dtype=torch.uint8)
    out = random_hflip(x, 0.5, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140
    assert torch.equal(random_hflip(x, 0.0, torch.Generator()), x)


def test_tensor_batches_are_seeded_resumable_and_sharded() -> None:
    from visionzoo.data.tensor_pipeline import TensorBatches

    split, bs = _numbered(40), 8
    sampler = EpochSampler(40, seed=5)
    batches = TensorBatches(split, _tensor_cfg(), bs, sampler=sampler)
    sampler.set_epoch(1)
    full = list(batches)
    assert len(full) == len(batches) == 5
    again = list(batches)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(full, again, strict=True))  # deterministic by seed
    x, y, skipped = full[0]
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and skipped == []
    order = sampler.indices()
    assert y.tolist() == [split.labels[i] for i in order[:8]]  # the sampler's permutation
    sampler.set_epoch(1, skip=3 * bs)  # resume after three steps: the same last two batches
    tail = list(batches)
    assert len(tail) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[3:], tail, strict=True))
    sampler.set_epoch(2)
    assert not torch.equal(list(batches)[0][0], full[0][0])  # new order and draws each epoch
    # two ranks: each its EpochSampler shard, batch of per-rank size
    ranks = [EpochSampler(40, seed=5, rank=r, world=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    shards = [TensorBatches(split, _tensor_cfg(), 4, sampler=s, rank=r, world=2)
              for r, s in enumerate(ranks)]
    ys = [torch.cat([b[1] for b in sh]) for sh in shards]
    assert sorted(torch.cat(ys).tolist()) == sorted(torch.cat([b[1] for b in full]).tolist())


def test_tensor_batches_evaluate_in_order_padded_and_normalized() -> None:
    from visionzoo.data.tensor_pipeline import TensorBatches, tensor_problem

    split = _numbered(10)
    cfg = _tensor_cfg(img_size=32, mean=[0.5], std=[0.25], in_chans=3)
    ev = TensorBatches(split, cfg, 4)
    out = list(ev)
    assert [len(b[1]) for b in out] == [4, 4, 2]  # the last batch kept
    x = torch.cat([b[0] for b in out])
    ref = eval_transform(cfg, 28, 1)
    assert torch.allclose(x, torch.stack([ref(split.images[i]) for i in range(10)]), atol=1e-6)
    assert torch.cat([b[1] for b in TensorBatches(split, cfg, 4, rank=1, world=2)]).tolist() \
        == split.labels[1::2]
    assert tensor_problem(_tensor_cfg(), split, 28) is None
    assert "auto_augment" in tensor_problem(_tensor_cfg(auto_augment="randaugment"), split, 28)
    assert tensor_problem(_tensor_cfg(random_erasing=0.25), split, 28) is None
    assert "resize" in tensor_problem(_tensor_cfg(img_size=224), split, 28)


def test_batched_random_erasing_draws_as_torchvision_does() -> None:
    from torchvision.transforms import v2

    from visionzoo.data.tensor_pipeline import random_erase

    x = torch.ones(3000, 2, 28, 20)
    out = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # one rectangle through every channel
    erased = zero.flatten(1).any(1)
    assert 0.45 < erased.double().mean() < 0.55
    for i in erased.nonzero()[:200, 0].tolist():  # each erased region is one rectangle
        rows, cols = zero[i, 0].any(1).nonzero()[:, 0], zero[i, 0].any(0).nonzero()[:, 0]
        eh, ew = len(rows), len(cols)
        assert int(zero[i, 0].sum()) == eh * ew and eh < 28 and ew < 20
        assert rows[-1] - rows[0] + 1 == eh and cols[-1] - cols[0] + 1 == ew
        assert 0.3 / 1.5 < eh / ew < 3.3 * 1.5  # the ratio range, up to rounding
    # the erased-area distribution matches torchvision's RandomErasing (means within 5 %)
    torch.manual_seed(0)
    ref = v2.RandomErasing(p=1.0, value=0)
    ref_frac = torch.stack([(ref(x[i]) == 0).double().mean() for i in range(1500)])
    ours = zero[erased].double().flatten(1).mean(1)
    assert abs(ours.mean() - ref_frac.mean()) < 0.05 * ref_frac.mean()
    assert torch.equal(random_erase(x, 0.0, torch.Generator()), x)


def test_tensor_batches_erase_only_in_training() -> None:
    from visionzoo.data.tensor_pipeline import TensorBatches

    split = _numbered(64)
    cfg = _tensor_cfg(random_erasing=1.0, crop_padding=0, hflip=0.0)
    sampler = EpochSampler(64, seed=5)
    sampler.set_epoch(1)
    x = torch.cat([b[0] for b in TensorBatches(split, cfg, 16, sampler=sampler)])
    # the images' only 0 is image 0's corner pixel (its number): erased ones have a rectangle
    assert ((x.flatten(1) == 0).sum(1) > 1).double().mean() > 0.9
    ev = torch.cat([b[0] for b in TensorBatches(split, cfg, 16)])
    assert int((ev == 0).sum()) == 1
