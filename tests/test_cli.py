"""Every CLI command end to end in a subprocess, with assertions on what it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import torchvision

import visionzoo as vz

from conftest import randomize_, run_cli

run = run_cli


def test_list():
    out = run("list", "resnet*").stdout
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["model", "family", "input", "params", "MACs"]
    row = next(x for x in lines if x.startswith("resnet50 "))
    assert "25.56M" in row and "3.86G" in row and "arXiv 1512.03385" in row
    assert "resnet110" in out and "10 models" in out


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
