"""Pretrained tags: the table, Hub repos through huggingface_hub's offline cache, URLs through
file:// and a local HTTP server, in_chans adaptation, and the one-way imports. No network."""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import visionzoo as vz
from visionzoo import pretrained
from visionzoo.cli import main
from visionzoo.registry import list_models

from conftest import max_logit_diff, randomize_

SRC = Path(vz.__file__).parent


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


def test_every_tag_resolves_to_a_port_whose_flags_build_its_model() -> None:
    built = set()
    for name in list_models():
        for tag in pretrained.pretrained_tags(name):
            spec = tag.port_spec  # raises PortError for a port that does not exist
            assert spec.model == name or spec.resolve is not None, tag.name
            assert tag.kind in ("url", "hf-hub") and tag.location and tag.license, tag.name
            assert tag.top1 is None or 0 < tag.top1 < 100, tag.name
            # the source's eval config, unless it publishes none (then the model's own applies)
            assert {"input_size", "interpolation", "crop_pct"} <= set(tag.cfg) or \
                tag.top1 is None and tag.unverified, tag.name
            key = (name, tuple(sorted(tag.flags.items())))
            if key not in built:  # its layout flags build the model (no memory: meta device)
                with torch.device("meta"):
                    vz.create_model(name, **tag.flags)
                built.add(key)
    assert len(built) >= 49


def test_models_with_weights_and_why_the_others_have_none() -> None:
    names = list_models()
    with_weights = [n for n in names if pretrained.pretrained_tags(n)]
    assert len(with_weights) >= 49, len(with_weights)
    for n in names:
        reason = pretrained.no_weights_reason(n)
        assert (reason is None) == (n in with_weights), n
        if reason:
            assert "\n" not in reason and len(reason) > 20
    assert "CIFAR" in pretrained.no_weights_reason("resnet56")
    assert "Torch" in pretrained.no_weights_reason("densenet264")
    assert "caffe" in pretrained.no_weights_reason("alexnet")
    # every family the issue names can be loaded by name
    for n in ("se_resnet50", "senet154", "mobilenet_v1", "efficientnet_lite0", "resnext101_32x4d",
              "mobilenet_v2_x0_5", "swin_t"):
        assert pretrained.get_pretrained(n).model == n
    with pytest.raises(vz.PretrainedError, match="has no pretrained weights: CIFAR"):
        vz.create_model("resnet20", pretrained=True)
    with pytest.raises(vz.PretrainedError, match="its tags: legacy_in1k, ra2_in1k"):
        vz.create_model("se_resnet50", pretrained="nope_in1k")


def test_list_pretrained_and_the_cli(capsys: pytest.CaptureFixture) -> None:
    tags = vz.list_pretrained("se_resnet50*")
    assert tags[0] == "se_resnet50.legacy_in1k" and "se_resnet50.a1_in1k" in tags
    assert {"alexnet_owt.tv_in1k", "vgg11.tv_in1k"} <= set(vz.list_pretrained("*.tv_in1k"))
    assert main(["list", "--pretrained", "se_resnet50", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "se_resnet50.legacy_in1k  *" in out and "77.65" in out
    assert "hf-hub:timm/seresnet50.a1_in1k" in out
    assert "no weights: resnet20: CIFAR-10 network" in out


def test_a_tag_in_the_name_sets_the_eval_config() -> None:
    m = vz.create_model("resnet50.a1_in1k")  # no weights: the tag's config, as timm does
    cfg = m.pretrained_cfg
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["test_input_size"]) == \
        (0.95, "bicubic", (3, 288, 288))
    assert cfg["hf_hub_id"] == "timm/resnet50.a1_in1k" and cfg["license"] == "apache-2.0"
    assert vz.resolve_data_config(m)["crop_pct"] == 0.95


# ---------------------------------------------------------------------------------------------
# Hub repos: a local huggingface_hub cache, offline
# ---------------------------------------------------------------------------------------------


def _hub_cache(root: Path, repo: str, state: dict[str, torch.Tensor],
               config: dict | None = None, fname: str = "model.safetensors") -> Path:
    """The layout huggingface_hub keeps on disk: models--org--name/{refs/main, snapshots/SHA}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    if fname.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(snap / fname))
    else:
        torch.save(state, snap / fname)
    if config is not None:
        (snap / "config.json").write_text(json.dumps(config))
    return snap / fname


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return cache


def _timm(arch: str, **kw) -> torch.nn.Module:
    return randomize_(timm.create_model(arch, pretrained=False, **kw)).eval()


# one Hub repo per timm family we port: (our name, tag or hf-hub id, timm arch, input size)
HUB_CASES = [
    ("resnet18", "a1_in1k", "resnet18", 64),
    ("se_resnext50_32x4d", "gluon_in1k", "seresnext50_32x4d", 64),
    ("densenet121", "hf-hub:timm/densenet121.tv_in1k", "densenet121", 64),
    ("vgg11_bn", "hf-hub:timm/vgg11_bn.tv_in1k", "vgg11_bn", 64),
    ("mobilenet_v1", "ra4_e3600_r224_in1k", "mobilenetv1_100", 64),
    ("mobilenet_v2_x0_5", "lamb_in1k", "mobilenetv2_050", 64),
    ("efficientnet_lite0", "tf_in1k", "tf_efficientnet_lite0", 64),
    ("swin_t", "ms_in1k", "swin_tiny_patch4_window7_224", 224),
]


@pytest.mark.parametrize(("name", "tag", "arch", "size"), HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_hub_tag_from_the_offline_cache_gives_timm_logits(offline_hub: Path, name: str, tag: str,
                                                           arch: str, size: int) -> None:
    t = pretrained.hub_tag(tag) if tag.startswith("hf-hub:") else \
        pretrained.get_pretrained(name, tag)
    assert t.kind == "hf-hub" and t.port == f"timm:{arch}", t
    ref = _timm(arch)
    _hub_cache(offline_hub, t.location, ref.state_dict())
    ours = vz.create_model(name, pretrained=tag) if tag.startswith("hf-hub:") else \
        vz.create_model(f"{name}.{tag}", pretrained=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    assert max_logit_diff(ours, ref, x) < 1e-4
    assert ours.pretrained_cfg["hf_hub_id"] == t.location
    if "interpolation" in t.cfg:  # the source's eval config (a repo without one: our default)
        assert ours.pretrained_cfg["interpolation"] == t.cfg["interpolation"]


def test_any_timm_hub_repo_of_a_ported_architecture(offline_hub: Path) -> None:
    ref = _timm("resnet34")
    repo = "timm/resnet34.someone_elses_in1k"  # not in our table: config.json gives the cfg
    _hub_cache(offline_hub, repo, ref.state_dict(), config={
        "architecture": "resnet34", "pretrained_cfg": {"input_size": [3, 192, 192],
                                                       "crop_pct": 0.9, "interpolation": "bicubic",
                                                       "license": "mit"}})
    m = vz.create_model("resnet34", pretrained=f"hf-hub:{repo}")
    assert max_logit_diff(m, ref, torch.randn(1, 3, 64, 64)) < 1e-4
    assert (m.pretrained_cfg["input_size"], m.pretrained_cfg["crop_pct"]) == ((3, 192, 192), 0.9)
    # a known repo by its Hub id, and the pytorch_model.bin fallback
    t = pretrained.get_pretrained("resnet50", "a1_in1k")
    ref50 = _timm("resnet50")
    _hub_cache(offline_hub, t.location, ref50.state_dict(), fname="pytorch_model.bin")
    m = vz.create_model("resnet50", pretrained="hf-hub:timm/resnet50.a1_in1k")
    assert max_logit_diff(m, ref50, torch.randn(1, 3, 64, 64)) < 1e-4
    with pytest.raises(vz.PretrainedError, match="for our resnet50, not resnet34"):
        vz.create_model("resnet34", pretrained="hf-hub:timm/resnet50.a1_in1k")
    with pytest.raises(vz.PretrainedError, match="no port for the timm architecture 'convnext_t"):
        vz.create_model("resnet50", pretrained="hf-hub:timm/convnext_tiny.in12k")


def test_hub_errors_are_one_line_naming_the_tag_and_file(offline_hub: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    # an offline cache miss
    with pytest.raises(vz.PretrainedError) as e:
        vz.create_model("resnet18", pretrained="a1_in1k")
    msg = str(e.value)
    assert msg.startswith("resnet18.a1_in1k: timm/resnet18.a1_in1k: model.safetensors not in "
                          "the local Hub cache") and "\n" not in msg
    # a corrupt cached file
    path = _hub_cache(offline_hub, "timm/resnet18.a1_in1k", _timm("resnet18").state_dict())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(vz.PretrainedError, match=r"resnet18.a1_in1k: cannot read weights from "
                                                 r".*model.safetensors: truncated"):
        vz.create_model("resnet18", pretrained="a1_in1k")
    # huggingface_hub missing: the tag says which extra it needs
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(vz.PretrainedError, match=r"needs huggingface_hub: pip install "
                                                 r"'visionzoo\[hub\]'"):
        vz.create_model("resnet18", pretrained="a1_in1k")
    capsys.readouterr()


def test_offline_env_in_a_fresh_process(tmp_path: Path) -> None:
    """HF_HOME + HF_HUB_OFFLINE=1 as a user sets them, read by huggingface_hub at import."""
    t = pretrained.get_pretrained("efficientnet_lite0", "ra_in1k")
    ref = _timm("efficientnet_lite0")
    _hub_cache(tmp_path / "hf" / "hub", t.location, ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    code = ("import torch, visionzoo as vz; m = vz.create_model('efficientnet_lite0', "
            "pretrained='ra_in1k').eval(); "
            f"torch.save(m(torch.load(r'{tmp_path / 'x.pt'}')), r'{tmp_path / 'y.pt'}')")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with torch.no_grad():
        assert (torch.load(tmp_path / "y.pt") - ref(x)).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------
# URL tags: file:// and a local HTTP server through the hash-checked downloader
# ---------------------------------------------------------------------------------------------


def _published(directory: Path, stem: str, state: dict[str, torch.Tensor]) -> Path:
    tmp = directory / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    return tmp.rename(directory / f"{stem}-{digest}.pth")


def _with_location(monkeypatch: pytest.MonkeyPatch, model: str, tag: str, location: str) -> None:
    table = {k: dict(v) for k, v in pretrained._table().items()}
    table[model]["tags"] = [{**t, "location": location} if t["tag"] == tag else t
                            for t in table[model]["tags"]]
    monkeypatch.setattr(pretrained, "_table", lambda: table)


@pytest.mark.parametrize(("name", "tag", "make_ref"), [
    ("se_resnet50", "legacy_in1k", lambda: _timm("legacy_seresnet50")),
    ("densenet121", "tv_in1k", lambda: randomize_(torchvision.models.densenet121()).eval()),
], ids=["timm-legacy-github", "torchvision"])
def test_url_tag_through_the_hash_checked_downloader(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, name: str,
                                                     tag: str, make_ref) -> None:
    ref = make_ref()
    src = _published(tmp_path, name, ref.state_dict())
    _with_location(monkeypatch, name, tag, src.as_uri())
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    m = vz.create_model(name, pretrained=True)
    assert max_logit_diff(m, ref, torch.randn(1, 3, 64, 64)) < 1e-4
    assert (tmp_path / "cache" / src.name).is_file()
    assert m.pretrained_cfg["url"] == src.as_uri() and m.pretrained_cfg["tag"] == tag


@pytest.fixture
def http_dir(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_errors_are_one_line_naming_the_tag_and_file(tmp_path: Path, http_dir,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    root, base = http_dir
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    ref = randomize_(torchvision.models.resnet18()).eval()
    good = _published(root, "resnet18", ref.state_dict())
    # served over HTTP: works, and is cached
    _with_location(monkeypatch, "resnet18", "tv_in1k", f"{base}/{good.name}")
    assert max_logit_diff(vz.create_model("resnet18", pretrained=True), ref,
                          torch.randn(1, 3, 64, 64)) < 1e-4
    # 404
    _with_location(monkeypatch, "resnet18", "tv_in1k", f"{base}/resnet18-0123abcd.pth")
    with pytest.raises(vz.PretrainedError, match=r"^resnet18.tv_in1k: resnet18-0123abcd.pth: "
                                                 r"HTTP 404"):
        vz.create_model("resnet18", pretrained=True)
    # a file that does not match its published hash is refused and not kept
    bad = root / "resnet18-deadbeef.pth"
    bad.write_bytes(good.read_bytes())
    _with_location(monkeypatch, "resnet18", "tv_in1k", f"{base}/{bad.name}")
    with pytest.raises(vz.PretrainedError, match="resnet18.tv_in1k: download of .*deadbeef.pth "
                                                 "does not match its published hash"):
        vz.create_model("resnet18", pretrained=True)
    assert not (tmp_path / "cache" / bad.name).exists()
    # no server at all (a network failure)
    _with_location(monkeypatch, "resnet18", "tv_in1k", "http://127.0.0.1:9/resnet18-0123abcd.pth")
    with pytest.raises(vz.PretrainedError, match=r"resnet18.tv_in1k: cannot download "
                                                 r"resnet18-0123abcd.pth \("):
        vz.create_model("resnet18", pretrained=True)
    # through the CLI: one line on stderr, exit 1
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (120, 30, 200)).save(img)
    assert main(["predict", "--model", "resnet18", "--pretrained", "true", str(img)]) == 1
    err = capsys.readouterr().err
    assert "resnet18.tv_in1k: cannot download" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# fine-tuning: in_chans and num_classes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans", [1, 4, 7])
def test_in_chans_adapts_the_first_conv_as_timm_does(tmp_path: Path, in_chans: int) -> None:
    from timm.models import adapt_input_conv

    ref = randomize_(torchvision.models.resnet18()).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    m = vz.create_model("resnet18", pretrained=path, in_chans=in_chans, num_classes=5)
    want = adapt_input_conv(in_chans, ref.conv1.weight.detach().clone())
    assert torch.equal(m.stem.conv.weight.detach(), want)
    assert m.pretrained_cfg["input_size"][0] == in_chans and len(m.pretrained_cfg["mean"]) == \
        in_chans
    with torch.no_grad():
        assert m.eval()(torch.randn(2, in_chans, 64, 64)).shape == (2, 5)
    if in_chans == 1:  # a grey image gives what the RGB network gives for it
        grey = torch.rand(1, 1, 64, 64)
        full = vz.create_model("resnet18", pretrained=path).eval()
        m.reset_classifier(1000)
        m.head.fc.load_state_dict(full.head.fc.state_dict())
        with torch.no_grad():
            assert (m(grey) - full(grey.expand(1, 3, 64, 64))).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------
# one-way imports
# ---------------------------------------------------------------------------------------------

LAYERS = {"layers": 0, "checkpoint": 0, "registry": 1, "models": 2, "ports": 3, "pretrained": 4,
          "factory": 5, "cli": 7, "__main__": 8}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else "", 6)


def _imports(path: Path) -> set[str]:
    """Every visionzoo module the file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "visionzoo" or m.startswith("visionzoo.")}


def test_imports_run_one_way() -> None:
    """layers <- registry <- models <- ports <- pretrained <- factory <- (the rest) <- cli, with
    no import hidden in a function going the other way."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if module == "visionzoo":  # the package's public face imports everything
            continue
        mine = _layer(module)
        for target in _imports(path):
            if target == "visionzoo" and mine < 7 or _layer(target) > mine:
                wrong.append(f"{module} -> {target}")
    assert wrong == []
