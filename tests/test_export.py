"""Export round trips with parity: ONNX (onnxruntime), TorchScript, torch.export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import visionzoo as vz
from visionzoo import export as ex

from conftest import randomize_

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def resnet18():
    return randomize_(vz.create_model("resnet18")).eval()


@pytest.mark.parametrize("fmt", ex.EXPORT_FORMATS)
def test_round_trip_with_dynamic_batch(resnet18, fmt, tmp_path):
    path = tmp_path / f"r18{ex.EXPORT_SUFFIX[fmt]}"
    res = ex.export_model(resnet18, path, fmt, (3, 64, 64), dynamic_batch=True)
    assert res.passed and res.path.is_file() and res.batches == (1, 3)
    assert res.max_abs_diff <= 1e-4
    # the artifact, reloaded independently, gives the model's logits at yet another batch
    run = ex.load_exported(path, fmt)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(run(x), resnet18(x), atol=1e-4, rtol=1e-4)


def test_static_export_and_parity_catches_other_weights(resnet18, tmp_path):
    path = ex.export_model(resnet18, tmp_path / "r18.pt2", "exported", (3, 64, 64)).path
    other = randomize_(vz.create_model("resnet18"), seed=1).eval()
    diff, ok = ex.parity(other, ex.load_exported(path, "exported"), (3, 64, 64), (1,))
    assert not ok and diff > 1e-2


class _BatchOne(nn.Module):
    """A model that bakes batch 1 into a reshape (the classic dynamic-batch export bug)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.reshape(1, -1))


def test_baked_batch_is_caught(tmp_path):
    model = _BatchOne().eval()
    with pytest.raises(Exception):  # noqa: B017 - the exporter's own error type varies
        ex.export_model(model, tmp_path / "b.pt2", "exported", (3, 8, 8), dynamic_batch=True)
    with pytest.raises(Exception):  # noqa: B017
        ex.export_model(model, tmp_path / "b.pt", "torchscript", (3, 8, 8), dynamic_batch=True)
    res = ex.export_model(model, tmp_path / "s.pt", "torchscript", (3, 8, 8))
    assert res.passed and res.batches == (1,)


def test_matrix_row_and_table():
    row = ex.export_matrix_row("resnet20", ("torchscript", "exported"))
    assert row.input_size == (3, 32, 32)
    assert [c.status for c in row.cells] == ["ok", "ok"]
    table = ex.format_matrix([row, ex.MatrixRow("toy", (3, 8, 8), [
        ex.MatrixCell("torchscript", "fails", None, "RuntimeError: boom"),
        ex.MatrixCell("exported", "static", 0.0, "dynamic batch: x")])])
    lines = table.splitlines()
    assert lines[0].startswith("| model | input | TorchScript")
    assert lines[2].startswith("| resnet20 | 32x32 | yes (")
    assert "| toy | 8x8 | no [1] | static batch (0e+00) [2] |" in table
    assert "[1] toy / torchscript: RuntimeError: boom" in table


def test_cli_export(tmp_path):
    out = tmp_path / "r20.pt"
    proc = subprocess.run([sys.executable, "-m", "visionzoo.cli", "export", "resnet20",
                           "--format", "torchscript", "--dynamic-batch", "--out", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    assert "parity vs PyTorch at batch 1, 3" in proc.stdout and proc.stdout.rstrip().endswith("ok")
    bad = subprocess.run([sys.executable, "-m", "visionzoo.cli", "export", "resnet2",
                          "--format", "onnx"], capture_output=True, text=True, env=_env())
    assert bad.returncode == 1 and "unknown model 'resnet2'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    usage = subprocess.run([sys.executable, "-m", "visionzoo.cli", "export", "resnet20",
                            "--format", "tflite"], capture_output=True, text=True, env=_env())
    assert usage.returncode == 2


def test_cli_export_checkpoint(tmp_path):
    model = randomize_(vz.create_model("resnet20")).eval()
    ckpt = vz.save_checkpoint(model, tmp_path / "m.safetensors")
    out = tmp_path / "m.pt2"
    proc = subprocess.run([sys.executable, "-m", "visionzoo.cli", "export", "resnet20",
                           "--format", "exported", "--checkpoint", str(ckpt), "--out", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = ex.load_exported(out, "exported")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(run(x), model(x), atol=1e-5, rtol=1e-5)
    wrong = subprocess.run([sys.executable, "-m", "visionzoo.cli", "export", "resnet32",
                            "--format", "exported", "--checkpoint", str(ckpt)],
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert wrong.returncode == 1 and "holds resnet20, not resnet32" in wrong.stderr


def test_readme_matrix_script(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nintro\n\n<!-- export-matrix:start -->\nold\n"
                      "<!-- export-matrix:end -->\n\ntail\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_matrix.py"),
                           "--models", "resnet20", "--formats", "torchscript", "--threads", "1",
                           "--readme", str(readme), "--out", str(tmp_path / "matrix.md")],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert text.startswith("# title\n\nintro\n\n<!-- export-matrix:start -->\n")
    assert text.endswith("<!-- export-matrix:end -->\n\ntail\n") and "old" not in text
    assert "| resnet20 | 32x32 | yes (" in text
    assert "| resnet20 | 32x32 | yes (" in (tmp_path / "matrix.md").read_text()
