from __future__ import annotations

import pytest

import visionzoo as vz
from visionzoo.registry import ModelInfo, Published, register_model


def test_unknown_model_suggests_close_names():
    with pytest.raises(vz.UnknownModelError, match="did you mean.*resnet50"):
        vz.create_model("resnet05")
    with pytest.raises(ValueError, match="unknown model 'nonsense-net'"):
        vz.model_info("nonsense-net")


def test_duplicate_registration_refused():
    info = ModelInfo(paper="p", arxiv="0", family="x")
    before = vz.list_models()

    def resnet18(**kw):  # pragma: no cover - never built
        return None

    with pytest.raises(ValueError, match="'resnet18' is already registered"):
        register_model(info)(resnet18)
    assert vz.list_models() == before
    assert vz.create_model("resnet18").__class__.__name__ == "ResNet"


def test_list_models_patterns_and_order():
    names = vz.list_models("resnet*")
    assert names[:2] == ["resnet18", "resnet20"]  # numbers sort as numbers
    assert names.index("resnet101") > names.index("resnet56")
    assert vz.list_models(["resnet18", "resnet34"]) == ["resnet18", "resnet34"]
    assert vz.list_models("no-such-*") == []


def test_model_info_fields():
    info = vz.model_info("resnet50")
    assert info.name == "resnet50" and info.arxiv == "1512.03385"
    assert info.references == {"torchvision": "resnet50", "timm": "resnet50"}
    assert any(d.flag == "stride_in_1x1=False" for d in info.deviations)
    macs = next(p for p in info.published if p.metric == "macs")
    assert macs.text == "3.8" and "Table 1" in macs.source


def test_published_matching_rules():
    p = Published("macs", "7.6", "G", "Table 1")
    assert p.matches(7.57e9) and p.matches(7.64e9) and not p.matches(7.66e9)
    t = Published("macs", "3.8", "G", "Table 1", rounding="truncate")
    assert t.matches(3.86e9) and not t.matches(3.79e9) and not t.matches(3.9e9)
    exact = Published("params", "25557032", "", "meta")
    assert exact.matches(25557032) and not exact.matches(25557033)


def test_create_model_records_config():
    m = vz.create_model("resnet18", num_classes=5, drop_rate=0.1)
    assert m.model_name == "resnet18"
    assert m.model_config == {"num_classes": 5, "in_chans": 3, "drop_rate": 0.1}
    assert m.pretrained_cfg["input_size"] == (3, 224, 224)


def test_in_chans():
    import torch

    m = vz.create_model("resnet20", in_chans=1).eval()
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
