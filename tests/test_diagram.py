"""The architecture diagram (visionzoo.diagram, `visionzoo info MODEL --plot OUT`): the stage
table drawn as boxes; what it prints comes from `profile`, at the size and flags asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from visionzoo.cli import main
from visionzoo.diagram import layer_lines, plot_architecture
from visionzoo.profile import format_info, human, profile


def _svg_texts(path) -> list[str]:
    """Every text element of an SVG (the diagram keeps text as text, not as glyph paths)."""
    return [el.text or "" for el in ET.parse(path).iter() if el.tag.endswith("}text")]


def _row_labels(prof) -> list[str]:
    """What each stage box must say about its output, from the profile's shapes."""
    labels = []
    for s in prof.stages:
        size = f"{s.output[1]}x{s.output[2]}" if len(s.output) == 3 else "1x1"
        labels.append(f"{size}, {s.output[0]} ch")
    return labels


def test_resnet50_png(tmp_path):
    out = plot_architecture("resnet50", tmp_path / "sub" / "resnet50.png")
    assert out == tmp_path / "sub" / "resnet50.png"
    with Image.open(out) as img:
        assert img.format == "PNG"
        # 11 inches at 120 dpi; six stage rows plus input, output and title: taller than half
        # the width, shorter than three widths
        assert img.width == 1320 and 660 < img.height < 3 * 1320
        assert len(img.getcolors(1 << 16) or range(1 << 16)) > 20  # drawn, not a blank page


def test_swin_svg_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(["info", "swin_t", "--size", "256", "--set", "num_classes=10",
                   "--plot", "swin.svg"])
    out = capsys.readouterr().out
    assert status == 0
    # the table as `info` prints it, then where the diagram went
    assert out.startswith(format_info("swin_t", (3, 256, 256), num_classes=10))
    assert out.rstrip().endswith("wrote swin.svg")
    prof = profile("swin_t", (3, 256, 256), num_classes=10)
    texts = _svg_texts(tmp_path / "swin.svg")
    for s, label in zip(prof.stages, _row_labels(prof), strict=True):
        assert label in texts, (s.name, label)
        assert s.name in texts
        assert f"{human(s.params)} params, {human(s.macs)} MACs" in texts
    assert "input 3x256x256" in texts and "10 class scores" in texts
    assert "flags: num_classes=10" in texts
    assert any(t.startswith(f"swin_t: {human(prof.params)} parameters") for t in texts)


def test_part_rows_and_pdf(tmp_path):
    """SE-ResNet's SE rows (``part_of`` their stage) get their own dashed box; PDF works."""
    plot_architecture("se_resnet50", tmp_path / "se.svg")
    texts = _svg_texts(tmp_path / "se.svg")
    prof = profile("se_resnet50")
    parts = [s for s in prof.stages if s.part_of]
    assert parts
    for s in parts:
        assert s.name in texts and f"included in {s.part_of}" in texts
    for label in _row_labels(prof):
        assert label in texts
    pdf = plot_architecture("mobilenet_v2_x0_35", tmp_path / "m.pdf", (3, 96, 96))
    assert pdf.read_bytes().startswith(b"%PDF")


def test_layer_lines():
    lines = layer_lines("3x3 max pool, stride 2; [1x1, 64; 3x3, 64; 1x1, 256] x3")
    assert lines == [("3x3 max pool, stride 2", None, ""), ("1x1, 64", 0, "×3"),
                     ("3x3, 64", 0, "×3"), ("1x1, 256", 0, "×3")]
    # nested brackets stay inside their item; a leading repeat ("5x [...]") counts too
    assert [t for t, _, _ in layer_lines("[1x1, 64; fc, [16, 256]] x3")] == ["1x1, 64",
                                                                             "fc, [16, 256]"]
    assert {r for _, _, r in layer_lines("5x [Conv dw; Conv]")} == {"×5"}
    # a bracket that is not a repeat is plain text, wrapped
    assert layer_lines("fc, [16, 256]") == [("fc, [16, 256]", None, "")]
    long = layer_lines("a" * 30 + " " + "b" * 30, width=40)
    assert [t for t, _, _ in long] == ["a" * 30, "b" * 30]


def test_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"must end in \.png, \.svg, \.pdf"):
        plot_architecture("resnet50", tmp_path / "x.gif")
    monkeypatch.chdir(tmp_path)
    assert main(["info", "resnet50", "--plot", "x.jpg"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["visionzoo info: error: --plot x.jpg: the diagram must end in .png, .svg "
                   "or .pdf"]
    assert main(["info", "no_such_model", "--plot", "x.png"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_both_plots_fail_in_one_line(tmp_path):
    """`info --plot` and `predict --cam` without the [plots] extra: one line naming it, before
    any model is built or loaded (a fresh interpreter where matplotlib cannot be imported)."""
    code = ("import sys\nsys.modules['matplotlib'] = None\nfrom visionzoo.cli import main\n"
            "rc = main(['info', 'resnet50', '--plot', 'd.png'])\n"
            "rc2 = main(['predict', 'x.png', '--model', 'resnet18', '--weights', 'w.pth', "
            "'--cam', 'c.png'])\nprint(rc, rc2)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.split() == ["1", "1"], proc.stderr
    hint = "pip install 'visionzoo[plots]'"
    assert proc.stderr.splitlines() == [
        f"visionzoo info: error: the architecture diagram needs matplotlib: {hint}",
        f"visionzoo predict: error: Grad-CAM overlays needs matplotlib: {hint}"]
    assert not list(tmp_path.iterdir())
