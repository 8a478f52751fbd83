"""matplotlib is the ``[plots]`` extra: without it visionzoo imports, trains and evaluates (the
by-product plots skipped with a one-line warning naming the extra), and a command whose purpose
is a plot fails naming it. Each check runs in a fresh interpreter where ``import matplotlib``
fails (``sys.modules["matplotlib"] = None``), as on an install without the extra."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

from test_data import write_fashion_mnist

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
BLOCK = "import sys\nsys.modules['matplotlib'] = None  # as if not installed\n"
HINT = "pip install 'visionzoo[plots]'"


def _python(code: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_importing_visionzoo_does_not_import_matplotlib() -> None:
    import visionzoo

    modules = sorted(m.name for m in pkgutil.walk_packages(visionzoo.__path__, "visionzoo.")
                     if not m.name.endswith("__main__"))
    assert "visionzoo.engine" in modules and "visionzoo.data.download" in modules
    code = textwrap.dedent("""
        import importlib, sys
        for name in sys.argv[1:]:
            importlib.import_module(name)
            if "matplotlib" in sys.modules:
                sys.exit(f"importing {name} imported matplotlib")
    """)
    proc = _python(code, "visionzoo", *modules)
    assert proc.returncode == 0, proc.stderr


def test_train_and_eval_without_matplotlib_skip_their_plots_with_one_warning(
        tmp_path: Path) -> None:
    data = write_fashion_mnist(tmp_path / "fashion-mnist", 48, 24)
    out = tmp_path / "run"
    code = BLOCK + textwrap.dedent("""
        import json, warnings
        from types import SimpleNamespace
        from pathlib import Path
        from visionzoo.cli import main
        data, out = sys.argv[1], Path(sys.argv[2])
        rc = main(["train", "resnet20", "--data", data, "--epochs", "2", "--batch-size", "16",
                   "--workers", "0", "--progress", "off", "--out", str(out)])
        rc += main(["eval", "resnet20", "--checkpoint", str(out / "model.safetensors"),
                    "--data", data, "--workers", "0"])
        # ablate's plot, on the results of two made-up seeds per arm
        from visionzoo import ablate
        ab = next(a for a in ablate.list_ablations() if not a.pending)
        rows = [{"paper": ab.key, "variant": arm.label, "model": arm.model, "args": "{}",
                 "seed": s, "params": 1, "macs": 1, "img_size": 28, "epochs": 1,
                 "final_top1": 0.5 + 0.01 * s, "best_top1": 0.5, "final_train_loss": 1.0,
                 "seconds": 0.1, "curve": [0.5]} for arm in ab.arms for s in range(2)]
        src = SimpleNamespace(name="fake", train_split="train", eval_split="test",
                              split=lambda name: [0] * 10)
        summary = ablate.summarize(ab, rows, {"epochs": 1, "seeds": 2}, "smoke", src, 1.0)
        (out / "abl").mkdir()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ablate.write_outputs(out / "abl", ab, rows, summary)
        print(json.dumps({"rc": rc, "ablate": [f"{w.category.__name__}: {w.message}"
                                               for w in caught]}))
    """)
    proc = _python(code, str(data), str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["rc"] == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if "warning:" in ln]
    # one line per skipped plot (not one per epoch), each naming the extra
    assert warned == [
        f"visionzoo train: warning: skipped curves.png: the training-curves plot needs "
        f"matplotlib: {HINT}",
        f"visionzoo eval: warning: skipped eval_fashion-mnist_test_confusion.png: the "
        f"confusion-matrix plot needs matplotlib: {HINT}"], proc.stderr
    assert result["ablate"] == [f"MissingExtraWarning: skipped ablation.png: the ablation plot "
                                f"needs matplotlib: {HINT}"]
    # the job itself is done: weights, metrics, results; only the PNGs are missing
    assert (out / "model.safetensors").is_file() and not (out / "curves.png").exists()
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and "curves" not in summary["files"]
    ev = json.loads((out / "eval_fashion-mnist_test.json").read_text())
    assert ev["confusion_png"] is None and sum(map(sum, ev["confusion"])) == 24
    assert "results: " in proc.stdout and "confusion matrix:" not in proc.stdout
    assert (out / "abl" / "ablation.md").is_file() and not (out / "abl" / "ablation.png").exists()
    assert not list(out.rglob("*.png"))


def test_bench_plot_without_matplotlib_fails_naming_the_extra(tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    code = BLOCK + "from visionzoo.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = _python(code, "bench", "resnet20", "--batch", "1", "--plot", str(png), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"visionzoo bench: error: bench --plot needs matplotlib: {HINT}"]
    assert proc.stdout == "" and not png.exists()  # refused before any timing
