"""AlexNet: the paper's two-tower network and torchvision's one-weird-trick layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

import visionzoo as vz
from visionzoo.models.alexnet import ResponseNorm

from conftest import max_logit_diff, randomize_


@pytest.fixture(scope="module")
def tv_alexnet() -> nn.Module:
    with torch.device("meta"):
        ref = tvm.alexnet()
    return randomize_(ref.to_empty(device="cpu"))


def test_port_torchvision_equal_logits(tv_alexnet, rng_input):
    ours = vz.port("torchvision", "alexnet", tv_alexnet.state_dict())
    assert ours.fc_input == "adaptive" and ours.dropout_before_fc
    for size in (224, 160):  # the design size, and one only adaptive pooling allows
        x = rng_input(size)
        assert max_logit_diff(ours, tv_alexnet, x) <= 1e-4
        with torch.no_grad():
            assert ours(x).std() > 0  # not a degenerate comparison


def test_port_refuses_other_layouts(tv_alexnet):
    with pytest.raises(vz.PortError, match="fc_input"):  # same weights, other classifier input
        vz.port("torchvision", "alexnet", tv_alexnet.state_dict(),
                model=vz.create_model("alexnet_owt"))
    with pytest.raises(vz.PortError):  # the two-tower network has other shapes
        vz.port("torchvision", "alexnet", tv_alexnet.state_dict(), model=vz.create_model("alexnet"))


def test_figure2_sizes_and_neurons():
    """Figure 2: 55x55x96 after conv1 at the 227 input; its caption counts the neurons of conv2 ...
    fc8 as 186,624-64,896-64,896-43,264-4096-4096-1000 (its conv1 figure, 253,440, is not
    55*55*96 = 290,400, a known slip)."""
    model = vz.create_model("alexnet").eval()
    outs: list[torch.Tensor] = []
    modules = [layer.conv for layer in model.layers] + [model.head.fc6, model.head.fc7,
                                                         model.head.fc]
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in modules]
    with torch.no_grad():
        model(torch.randn(1, 3, 227, 227))
    for h in hooks:
        h.remove()
    assert tuple(outs[0].shape[1:]) == (96, 55, 55)
    assert [o[0].numel() for o in outs[1:]] == [186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
    assert sum(p.numel() for p in model.parameters()) // 10**6 == 60  # "60 million parameters"


def test_kernel_shapes_section_3_5():
    """§3.5: 96 kernels 11x11x3, 256 of 5x5x48, 384 of 3x3x256, 384 of 3x3x192, 256 of 3x3x192."""
    model = vz.create_model("alexnet")
    shapes = [tuple(layer.conv.weight.shape) for layer in model.layers]
    assert shapes == [(96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3),
                      (256, 192, 3, 3)]
    assert [layer.conv.stride[0] for layer in model.layers] == [4, 1, 1, 1, 1]


def test_towers_do_not_mix_in_conv2():
    """§3.2: conv2 (with its ReLU, response normalization and pooling) of one tower sees only
    the maps of that tower; changing tower 2's input leaves tower 1's output untouched."""
    stage = vz.create_model("alexnet").eval().layers[1]
    x = torch.randn(1, 96, 27, 27)
    y = x.clone()
    y[:, 48:] += torch.randn(1, 48, 27, 27)
    with torch.no_grad():
        a, b = stage(x), stage(y)
    torch.testing.assert_close(a[:, :128], b[:, :128], rtol=0, atol=0)
    assert not torch.allclose(a[:, 128:], b[:, 128:])


def _paper_lrn(a: torch.Tensor, n: int = 5, k: float = 2.0, alpha: float = 1e-4,
               beta: float = 0.75) -> torch.Tensor:
    """§3.3 written out:
    b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        denom = (k + alpha * a[:, lo:hi + 1].pow(2).sum(1)).pow(beta)
        out[:, i] = a[:, i] / denom
    return out


def test_response_norm_is_the_paper_formula():
    a = torch.rand(2, 12, 5, 5, dtype=torch.float64) * 30  # ReLU outputs, large enough to matter
    torch.testing.assert_close(ResponseNorm(towers=1)(a), _paper_lrn(a))
    two = ResponseNorm(towers=2)(a)  # each GPU normalises its own maps
    torch.testing.assert_close(two, torch.cat([_paper_lrn(a[:, :6]), _paper_lrn(a[:, 6:])], 1))
    assert not torch.allclose(two, _paper_lrn(a))  # and that differs at the tower boundary


def test_fixed_input_size_is_a_clear_error():
    model = vz.create_model("alexnet").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 227, 227)).shape == (1, 1000)
        with pytest.raises(ValueError, match=r"fc6 takes a 256x6x6 map.*fc_input='adaptive'"):
            model(torch.randn(1, 3, 224, 224))
        adaptive = vz.create_model("alexnet", fc_input="adaptive").eval()
        adaptive.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 227, 227)
        torch.testing.assert_close(adaptive(x), model(x))  # identity at the design size
        assert adaptive(torch.randn(1, 3, 96, 96)).shape == (1, 1000)
    with pytest.raises(ValueError, match="fc_input must be one of"):
        vz.create_model("alexnet", fc_input="dense")


@pytest.mark.parametrize("before, first_input", [(False, 4096), (True, 9216)])
def test_dropout_placement(before, first_input):
    """§4.2 drops the outputs of fc6 and fc7 (inputs of fc7, fc8); torchvision drops the inputs
    of fc6 and fc7 (vision #549)."""
    model = vz.create_model("alexnet_owt", dropout_before_fc=before).train()
    seen: list[int] = []
    model.head.drop.register_forward_hook(lambda _m, i, _o: seen.append(i[0].shape[1]))
    model(torch.randn(2, 3, 224, 224))
    assert seen == [first_input, 4096]


def test_paper_initialisation():
    """§5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers."""
    model = vz.create_model("alexnet")
    with torch.no_grad():
        biases = [float(layer.conv.bias.mean()) for layer in model.layers]
        biases += [float(model.head.fc6.bias.mean()), float(model.head.fc7.bias.mean()),
                   float(model.head.fc.bias.mean())]
        assert biases == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
        assert abs(float(model.head.fc6.weight.std()) - 0.01) < 1e-4


def test_features_only_keeps_no_fc_weights():
    backbone = vz.create_model("alexnet", features_only=True)
    assert [f["name"] for f in backbone.feature_info] == ["conv1", "conv2", "conv5", "pool5"]
    assert sum(p.numel() for p in backbone.parameters()) == 2_334_080  # the five conv layers
    maps = backbone(torch.randn(1, 3, 227, 227))
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 55, 55), (256, 27, 27), (256, 13, 13),
                                                  (256, 6, 6)]


def test_bad_input():
    model = vz.create_model("alexnet_owt").eval()
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\)"):
        model(torch.randn(3, 224, 224))
