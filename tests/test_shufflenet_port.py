"""OpenMMLab (mmpretrain) ShuffleNet V1 1x g=3 weights into ``shufflenet_v1_g3``. No network.

mmpretrain needs compiled mmcv, so the reference here is a functional forward of its
``ShuffleNetV1`` + global average pool + ``LinearClsHead`` that reads a state dict in its keys,
following its order: 1x1 (group) conv, BN, ReLU; 3x3 depthwise conv, BN; channel shuffle
((g, n) -> (n, g)); 1x1 group conv, BN; then ReLU(x + branch), or for the stride-2 first unit of a
stage cat([AvgPool(3, 2, 1)(x), ReLU(branch)]).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import visionzoo as vz
from visionzoo import pretrained
from visionzoo.ports import PortError, rename_keys
from visionzoo.ports import shufflenet as mm_port

GROUPS = 3
STAGES = ((240, 4), (480, 8), (960, 4))  # mmpretrain groups=3: channels, units per stage
CONV1 = 24

# ---------------------------------------------------------------------------------------------
# mmpretrain's network, functionally, on its own keys
# ---------------------------------------------------------------------------------------------


def _conv_bn(x: torch.Tensor, sd: dict, key: str, stride: int = 1, padding: int = 0,
             groups: int = 1, relu: bool = False) -> torch.Tensor:
    """mmcv ConvModule(conv, BN, act): a bias-free conv, eval-mode BN (eps 1e-5), optional ReLU."""
    x = F.conv2d(x, sd[f"{key}.conv.weight"], None, stride, padding, 1, groups)
    x = F.batch_norm(x, sd[f"{key}.bn.running_mean"], sd[f"{key}.bn.running_var"],
                     sd[f"{key}.bn.weight"], sd[f"{key}.bn.bias"], False, 0.0, 1e-5)
    return F.relu(x) if relu else x


def _mm_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _shuffle_index(c: int) -> torch.Tensor:
    """p with shuffle(v)[k] = v[p(k)]."""
    return _mm_shuffle(torch.arange(c).view(1, c, 1, 1), GROUPS).flatten()


def _mm_unit(x: torch.Tensor, sd: dict, key: str, first_block: bool, concat: bool,
             shuffle: bool = True) -> torch.Tensor:
    out = _conv_bn(x, sd, f"{key}.g_conv_1x1_compress", groups=1 if first_block else GROUPS,
                   relu=True)
    out = _conv_bn(out, sd, f"{key}.depthwise_conv3x3_bn", stride=2 if concat else 1, padding=1,
                   groups=out.shape[1])
    if shuffle:
        out = _mm_shuffle(out, GROUPS)  # after the depthwise conv + BN, as mmpretrain does
    out = _conv_bn(out, sd, f"{key}.g_conv_1x1_expand", groups=GROUPS)
    if concat:  # stride 2: pooled input first, ReLU on the branch only
        return torch.cat((F.avg_pool2d(x, 3, 2, 1), F.relu(out)), 1)
    return F.relu(x + out)


def mm_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x = _conv_bn(x, sd, "backbone.conv1", stride=2, padding=1, relu=True)
    x = F.max_pool2d(x, 3, 2, 1)
    for i, (_, units) in enumerate(STAGES):
        for j in range(units):
            x = _mm_unit(x, sd, f"backbone.layers.{i}.{j}", first_block=i == 0 and j == 0,
                         concat=j == 0)
    return F.linear(x.mean((2, 3)), sd["head.fc.weight"], sd["head.fc.bias"])


def mm_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in mmpretrain's keys and shapes, with non-trivial BN statistics."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv_bn(key: str, cin: int, cout: int, k: int, groups: int, gamma: float = 1.0) -> None:
        fan_in = cin // groups * k * k
        sd[f"{key}.conv.weight"] = torch.randn(cout, cin // groups, k, k, generator=g) \
            * (2.0 / fan_in) ** 0.5
        sd[f"{key}.bn.weight"] = gamma * (0.5 + torch.rand(cout, generator=g))
        sd[f"{key}.bn.bias"] = 0.2 * torch.randn(cout, generator=g)
        sd[f"{key}.bn.running_mean"] = 0.2 * torch.randn(cout, generator=g)
        sd[f"{key}.bn.running_var"] = 0.5 + torch.rand(cout, generator=g)
        sd[f"{key}.bn.num_batches_tracked"] = torch.tensor(1000)

    conv_bn("backbone.conv1", 3, CONV1, 3, 1)
    cin = CONV1
    for i, (out, units) in enumerate(STAGES):
        mid = out // 4
        for j in range(units):
            key = f"backbone.layers.{i}.{j}"
            conv_bn(f"{key}.g_conv_1x1_compress", cin, mid, 1, 1 if i == j == 0 else GROUPS)
            conv_bn(f"{key}.depthwise_conv3x3_bn", mid, mid, 3, mid)
            # a smaller scale on the residual branch keeps the activations O(1) over 16 units
            conv_bn(f"{key}.g_conv_1x1_expand", mid, out - cin if j == 0 else out, 1, GROUPS,
                    gamma=0.3)
            cin = out
    sd["head.fc.weight"] = 0.05 * torch.randn(1000, cin, generator=g)
    sd["head.fc.bias"] = 0.1 * torch.randn(1000, generator=g)
    return sd


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def mm() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    sd = mm_state_dict()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = mm_forward(sd, x)
    return sd, x, ref


# ---------------------------------------------------------------------------------------------
# the port
# ---------------------------------------------------------------------------------------------


def test_reference_is_sensitive_to_the_shuffle(mm) -> None:
    """The random weights make the shuffle matter (so a wrong permutation cannot pass)."""
    sd, x, ref = mm
    assert ref.abs().max() > 0.5 and ref.std() > 0.1
    no_shuffle = x
    no_shuffle = _conv_bn(no_shuffle, sd, "backbone.conv1", stride=2, padding=1, relu=True)
    no_shuffle = _mm_unit(F.max_pool2d(no_shuffle, 3, 2, 1), sd, "backbone.layers.0.0", True,
                          True, shuffle=False)
    shuffled = _conv_bn(x, sd, "backbone.conv1", stride=2, padding=1, relu=True)
    shuffled = _mm_unit(F.max_pool2d(shuffled, 3, 2, 1), sd, "backbone.layers.0.0", True, True)
    assert (no_shuffle - shuffled).abs().max() > 0.1


def test_port_gives_mmpretrain_logits(mm) -> None:
    sd, x, ref = mm
    m = vz.port("openmmlab", "shufflenet_v1_1x_g3", sd)
    assert m.model_name == "shufflenet_v1_g3" and (m.groups, m.scale) == (3, 1.0)
    out = _logits(m, x)
    assert out.shape == (2, 1000)
    assert (out - ref).abs().max().item() < 1e-4
    cfg = m.pretrained_cfg
    assert (cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]) == \
        ((3, 224, 224), 0.875, "bilinear")
    assert cfg["mean"] == pytest.approx((123.675 / 255, 116.28 / 255, 103.53 / 255))
    assert cfg["std"] == pytest.approx((58.395 / 255, 57.12 / 255, 57.375 / 255), abs=1e-6)


@pytest.mark.parametrize("wrong", ["none", "inverse"])
def test_a_wrong_depthwise_permutation_gives_other_logits(mm, wrong: str) -> None:
    """Negative controls: the keys renamed with no permutation, or with the inverse shuffle
    (the (n, g) -> (g, n) direction), give other logits than mmpretrain's."""
    sd, x, ref = mm
    ours = rename_keys(sd, mm_port._RULES)
    if wrong == "inverse":
        ours = {k: v[torch.argsort(_shuffle_index(len(v)))]
                if mm_port._DEPTHWISE.fullmatch(k) else v for k, v in ours.items()}
    m = vz.create_model("shufflenet_v1_g3")
    m.load_state_dict(ours, strict=True)
    assert (_logits(m, x) - ref).abs().max().item() > 0.1


def test_depthwise_permutation_is_the_shuffle_of_their_channels() -> None:
    # c = 6, g = 3 (n = 2): (g, n) -> (n, g) puts their channels 0, 2, 4, 1, 3, 5 in our order
    sd = {"stages.0.1.dwconv.norm.running_mean": torch.arange(6.0),
          "stages.0.1.dwconv.norm.num_batches_tracked": torch.tensor(7),
          "stages.0.1.gconv2.norm.running_mean": torch.arange(6.0)}
    out = mm_port._shuffled_depthwise(sd, 3)
    assert out["stages.0.1.dwconv.norm.running_mean"].tolist() == [0, 2, 4, 1, 3, 5]
    key = "stages.2.0.dwconv.conv.weight"  # 60 channels: the test's own shuffle agrees
    assert mm_port._shuffled_depthwise({key: torch.arange(60)}, 3)[key].equal(_shuffle_index(60))
    assert out["stages.0.1.gconv2.norm.running_mean"].tolist() == list(range(6))
    assert out["stages.0.1.dwconv.norm.num_batches_tracked"].item() == 7


def test_the_wrapped_checkpoint_and_unknown_keys(mm) -> None:
    sd, x, ref = mm
    m = vz.port("openmmlab", "shufflenet_v1_1x_g3", {"meta": {}, "state_dict": sd})
    assert (_logits(m, x) - ref).abs().max().item() < 1e-4
    with pytest.raises(PortError, match="no counterpart, e.g. backbone.extra.weight"):
        vz.port("openmmlab", "shufflenet_v1_1x_g3", {**sd, "backbone.extra.weight": x})
    missing = {k: v for k, v in sd.items() if not k.startswith("backbone.layers.2.3.")}
    with pytest.raises(PortError, match="missing"):
        vz.port("openmmlab", "shufflenet_v1_1x_g3", missing)


# ---------------------------------------------------------------------------------------------
# create_model(pretrained=True): the tag's URL through the hash-checked downloader
# ---------------------------------------------------------------------------------------------


def test_the_tag_points_at_the_published_file() -> None:
    assert vz.list_pretrained("shufflenet*") == ["shufflenet_v1_g3.mm_in1k"]
    tag = pretrained.get_pretrained("shufflenet_v1_g3")
    assert tag.location == mm_port.MM_URL and tag.kind == "url"
    assert tag.port == "openmmlab:shufflenet_v1_1x_g3" and tag.top1 == 68.13


def test_create_model_pretrained_from_a_local_copy(mm, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sd, x, ref = mm
    tmp = tmp_path / "tmp.pth"
    torch.save({"meta": {}, "state_dict": sd}, tmp)  # mmpretrain's wrapping
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    src = tmp.rename(tmp_path / f"shufflenet_v1_batch1024_imagenet_20200804-{digest}.pth")
    table = {k: dict(v) for k, v in pretrained._table().items()}
    table["shufflenet_v1_g3"]["tags"] = [{**t, "location": src.as_uri()}
                                         for t in table["shufflenet_v1_g3"]["tags"]]
    monkeypatch.setattr(pretrained, "_table", lambda: table)
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    m = vz.create_model("shufflenet_v1_g3", pretrained=True)
    assert (_logits(m, x) - ref).abs().max().item() < 1e-4
    assert (tmp_path / "cache" / src.name).is_file()
    assert m.pretrained_cfg["tag"] == "mm_in1k" and m.pretrained_cfg["url"] == src.as_uri()
    assert m.pretrained_cfg["crop_pct"] == 0.875
    # a copy whose name carries another hash is refused
    bad = tmp_path / "shufflenet_v1_batch1024_imagenet_20200804-5d6cec73.pth"
    bad.write_bytes(src.read_bytes())
    table["shufflenet_v1_g3"]["tags"] = [{**t, "location": bad.as_uri()}
                                         for t in table["shufflenet_v1_g3"]["tags"]]
    with pytest.raises(vz.PretrainedError, match="does not match its published hash 5d6cec73"):
        vz.create_model("shufflenet_v1_g3", pretrained=True)
