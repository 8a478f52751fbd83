"""The README's "first five minutes" block runs exactly as written, and its tables say what the
library says (no network: the block's weights come from a pip package, its data from the
local Fashion-MNIST files)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import visionzoo as vz
from visionzoo.pretrained import pretrained_tags

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(name: str) -> str:
    m = re.search(rf"<!-- {name}:start -->\n```bash\n(.*?)```\n<!-- {name}:end -->", README,
                  re.S)
    assert m, f"README has no fenced bash block between the {name} markers"
    return m.group(1)


def test_readme_stays_short_and_has_its_sections():
    lines = README.splitlines()
    assert len(lines) <= 230, f"README is {len(lines)} lines; details belong in docs/guide.md"
    for heading in ("## Install", "## The first five minutes", "## Models", "## Speed",
                    "## Python API"):
        assert heading in lines, heading
    for path in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", README):
        assert (ROOT / path).exists(), f"README links {path}, which does not exist"


def test_models_table_counts_weights_as_the_pretrained_table_does():
    rows = [ln for ln in README.splitlines() if re.match(r"\| [A-Z][\w ]+ \| \[", ln)]
    assert len(rows) == 11
    family_of = {vz.model_info(n).family: n for n in vz.list_models()}
    assert len(family_of) == len(rows)
    for row in rows:
        m = re.search(r"\| (\d+) of (\d+) \|$", row)
        assert m, row
        names = [c for c in re.findall(r"`([a-z0-9_]+)`", row)]
        family = vz.model_info(next(n for n in names if n in vz.list_models())).family
        members = [n for n in vz.list_models() if vz.model_info(n).family == family]
        with_weights = sum(bool(pretrained_tags(n)) for n in members)
        assert (int(m.group(1)), int(m.group(2))) == (with_weights, len(members)), row


def test_first_five_minutes_run_as_written(tmp_path):
    """Each line of the block, in a fresh folder, with the installed `visionzoo` first on PATH;
    then the files it promises exist (the diagram, the Grad-CAM overlay, the checkpoint)."""
    block = _block("first-five-minutes")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "OMP_NUM_THREADS": "1"}  # the other xdist worker has the other core
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "70 models" in out or f"{len(vz.list_models())} models" in out
    assert "conv2_x" in out and "0 failed" in out
    assert re.search(r"(tabby|tiger cat|Egyptian cat)", out), out[-2000:]
    assert "<svg" in (tmp_path / "resnet50.svg").read_text()[:2000]
    with Image.open(tmp_path / "chelsea-cam.png") as im:
        assert min(im.size) >= 100
    assert (tmp_path / "runs" / "first" / "model.safetensors").is_file()
    top1 = re.findall(r"top-1 (\d+\.\d+)%", out)
    assert top1 and float(top1[-1]) > 60, out[-2000:]  # 100 steps of ResNet-20 learn something


@pytest.mark.parametrize("marker", ["ablations"])
def test_generated_blocks_are_filled(marker):
    body = README.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    assert body.count("\n| ") >= 10, f"the {marker} block is empty: run its generator"
