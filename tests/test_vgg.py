"""VGG: Table 1 configurations, dense evaluation (§3.2), ports, and VGG as a U-Net encoder."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

import visionzoo as vz
from visionzoo.models.vgg import TABLE1, VGG

from conftest import max_logit_diff, randomize_

NAMES = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def _references(name: str) -> dict[str, nn.Module]:
    """torchvision's and timm's ``name`` holding the same random weights.

    Built on the meta device and filled by randomize_ (this skips their own 130 M-weight init);
    timm's copy takes torchvision's tensors the way timm converts them itself (its classifier is
    a conv MLP: fc6 a 7x7 conv, fc7 a 1x1 conv), so each weight set is drawn once."""
    with torch.device("meta"):
        tv, tm = tvm.get_model(name), timm.create_model(name)
    tv = randomize_(tv.to_empty(device="cpu"))
    sd = {}
    for key, value in tv.state_dict().items():
        key = key.replace("classifier.0", "pre_logits.fc1").replace(
            "classifier.3", "pre_logits.fc2").replace("classifier.6", "head.fc")
        if key == "pre_logits.fc1.weight":
            value = value.reshape(-1, 512, 7, 7)  # (4096, 25088) -> (4096, 512, 7, 7)
        elif key == "pre_logits.fc2.weight":
            value = value.reshape(-1, 4096, 1, 1)  # (4096, 4096) -> (4096, 4096, 1, 1)
        sd[key] = value
    tm = tm.to_empty(device="cpu")
    tm.load_state_dict(sd)
    return {"torchvision": tv, "timm": tm}


@pytest.fixture(scope="module")
def vgg11() -> VGG:
    torch.manual_seed(0)
    return vz.create_model("vgg11", num_classes=5).eval()


@pytest.mark.parametrize("name", NAMES)
def test_port_equal_logits(name, rng_input):
    x = rng_input(32)
    for source, ref in _references(name).items():
        ours = vz.port(source, name, ref.state_dict())
        assert ours.fc_input == ("adaptive" if source == "torchvision" else "dense")
        assert max_logit_diff(ours, ref, x) <= 1e-4, source
        with torch.no_grad():
            assert ours(x).std() > 0
        if name == "vgg11":
            # Above 224 torchvision shrinks pool5 to 7x7 while timm slides fc6 (dense
            # evaluation): the flag each port sets keeps the logits equal there too.
            assert max_logit_diff(ours, ref, rng_input(256, batch=1)) <= 1e-4, source


def test_port_refuses_other_layout():
    with torch.device("meta"):
        ref = tvm.vgg11_bn()
    sd = ref.to_empty(device="cpu").state_dict()
    with pytest.raises(vz.PortError, match="batch_norm"):
        vz.port("torchvision", "vgg11_bn", sd, model=vz.create_model("vgg11", fc_input="adaptive"))


@pytest.mark.parametrize("config, depth", [("A", 11), ("B", 13), ("C", 16), ("D", 16),
                                           ("E", 19)])
def test_table1_depths_and_convs(config, depth):
    """Table 1: 'weight layers' = convs + 3 FC; 3x3 convs at stride 1 with 1-pixel padding keep
    the resolution (§2.1); C's extra layers are 1x1."""
    with torch.device("meta"):
        model = VGG(config)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 3 == depth
    assert all(c.stride == (1, 1) and c.padding[0] == (c.kernel_size[0] - 1) // 2 for c in convs)
    ones = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(ones) == (3 if config == "C" else 0)
    assert [len(stack) for stack in TABLE1[config]] == [len(s) for s in model.stages]


def test_dense_evaluation_is_the_fc_net_averaged_over_windows(vgg11):
    """§3.2: fc6 as a 7x7 conv over a larger pool5 map = the FC net on every 7x7 window, then the
    class scores averaged. At 256 pool5 is 8x8: four windows."""
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        feats = vgg11.forward_features(x)
        assert feats.shape[-2:] == (8, 8)
        windows = [vgg11.forward_head(feats[:, :, i:i + 7, j:j + 7]) for i in (0, 1)
                   for j in (0, 1)]
        torch.testing.assert_close(vgg11(x), torch.stack(windows).mean(0), atol=1e-5, rtol=1e-4)


def test_fc_input_modes_agree_up_to_224_and_differ_above(vgg11):
    try:
        outs = {}
        for mode in ("dense", "adaptive"):
            vgg11.head.fc_input = mode
            with torch.no_grad():
                outs[mode] = [vgg11(torch.ones(1, 3, s, s).mul_(k)) for s, k in
                              ((32, 1.0), (96, 0.5), (256, 0.25))]
    finally:
        vgg11.head.fc_input = "dense"
    for small in (0, 1):  # pool5 of 1x1 and 3x3: both repeat it up to 7x7
        torch.testing.assert_close(outs["dense"][small], outs["adaptive"][small])
    x = torch.randn(1, 3, 256, 256)
    vgg11.head.fc_input = "adaptive"
    try:
        with torch.no_grad():
            adaptive = vgg11(x)
    finally:
        vgg11.head.fc_input = "dense"
    with torch.no_grad():
        assert not torch.allclose(adaptive, vgg11(x), atol=1e-4)


def test_a_lrn_variant():
    """A-LRN: configuration A with LRN after the first conv; LRN has no parameters (Table 2: both
    133 M)."""
    with torch.device("meta"):
        a, a_lrn = vz.create_model("vgg11"), vz.create_model("vgg11", lrn=True)
    assert isinstance(a_lrn.stages[0][1], nn.LocalResponseNorm)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in a_lrn.parameters())


class UNetDecoder(nn.Module):
    """A small U-Net decoder: from the deepest map up, upsample x2, concatenate the skip of the
    same resolution, 3x3 conv-BN-ReLU; a 1x1 conv gives per-pixel class scores."""

    def __init__(self, channels: list[int], num_classes: int, width: int = 16):
        super().__init__()
        deep = channels[-1]
        self.blocks = nn.ModuleList()
        for skip in reversed(channels[:-1]):
            self.blocks.append(nn.Sequential(nn.Conv2d(deep + skip, width, 3, padding=1),
                                             nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
            deep = width
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = maps[-1]
        for skip, block in zip(reversed(maps[:-1]), self.blocks, strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], 1))
        return self.classifier(x)


def test_unet_on_vgg_stage_maps_trains():
    """VGG as the U-Net encoder: the stage maps before each pool are the skips (reductions 1 ...
    16) and pool5 the bottleneck; one decoder on top learns a segmentation-shaped target."""
    torch.manual_seed(0)
    encoder = vz.create_model("vgg11_bn", features_only=True)
    assert encoder.reductions == [1, 2, 4, 8, 16, 32]
    decoder = UNetDecoder(encoder.channels, num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    target = ((yy >= 32).long() + (xx >= 32).long()).expand(2, 64, 64)  # (N, H, W) labels 0..2
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    first_conv = encoder.model.stages[0][0].conv.weight
    before = first_conv.detach().clone()
    losses = []
    for _ in range(4):
        logits = decoder(encoder(x))
        assert logits.shape == (2, 3, 64, 64)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in params)
        opt.step()
        losses.append(loss.item())
    assert not torch.equal(before, first_conv)  # the encoder is trained, not frozen
    assert losses[-1] < losses[0]


def test_features_only_stores_no_fc_layers():
    with torch.device("meta"):
        backbone = vz.create_model("vgg16", features_only=True)
        full = vz.create_model("vgg16")
    convs = sum(p.numel() for p in full.stages.parameters())
    assert sum(p.numel() for p in backbone.parameters()) == convs  # fc6/fc7 (120 M) are gone


def test_bad_arguments():
    with pytest.raises(ValueError, match="config must be one of"):
        VGG("F")
    with pytest.raises(ValueError, match="vgg16 is configuration D"):
        vz.create_model("vgg16", config="E")
    with pytest.raises(ValueError, match="fc_input must be one of"):
        vz.create_model("vgg11", fc_input="fixed")
