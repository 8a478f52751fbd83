"""optimize's oneDNN step: fused conv + activation and conv + residual sum, against plain ops."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo as vz

from conftest import randomize_

opt = importlib.import_module("visionzoo.optimize")

pytestmark = pytest.mark.skipif(not opt.onednn_available(),
                                reason="this PyTorch build has no oneDNN (MKLDNN) CPU kernels")

ACTS = [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-1.0, 2.0), nn.SiLU(), nn.Hardswish(), nn.Sigmoid(),
        nn.Hardsigmoid(), nn.Tanh(), nn.LeakyReLU(0.2), nn.GELU(), nn.GELU("tanh")]
CONVS = [dict(kernel_size=3, padding=1), dict(kernel_size=1),
         dict(kernel_size=3, stride=2, padding=1, groups=4),
         dict(kernel_size=3, padding="same", dilation=2), dict(kernel_size=5, padding=(2, 1))]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("act", ACTS, ids=lambda a: repr(a))
@pytest.mark.parametrize("conv_kw", CONVS, ids=str)
def test_fused_conv_is_act_of_conv(act, conv_kw, monkeypatch):
    monkeypatch.setattr(opt, "SMALL_POINTWISE_MACS", 0)  # the 1x1 case through oneDNN too
    conv = nn.Conv2d(8, 12, **conv_kw).eval()
    seq = nn.Sequential(conv, nn.Identity(), act).eval()
    x = torch.randn(2, 8, 11, 13, generator=_gen())
    with torch.inference_mode():
        ref = seq(x)
    fused = nn.Sequential(*seq)  # the same modules, a new container to rewrite
    assert opt.fuse_onednn(fused) == (1, 1)
    assert isinstance(fused[0], opt.OneDNNConv2d) and type(fused[2]) is nn.Identity
    assert fused[0].post_op != "none" and fused[0].weight is conv.weight  # shared, not copied
    with torch.inference_mode():
        for xx in (x, x.contiguous(memory_format=torch.channels_last)):
            torch.testing.assert_close(fused(xx), ref, atol=1e-5, rtol=1e-5)
    # with gradients enabled it falls back to the plain ops: same value, real gradients
    xg = x.clone().requires_grad_()
    out = fused(xg)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert xg.grad is not None and conv.weight.grad is not None


def test_fused_conv_bf16_and_what_it_leaves_alone():
    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    seq = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(2, 8, 9, 9, generator=_gen(1))
    with torch.inference_mode():
        ref = seq(x)
    bf = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    bf.load_state_dict(seq.state_dict())
    bf = bf.to(torch.bfloat16).eval()
    assert opt.fuse_onednn(bf) == (1, 1)
    with torch.inference_mode():
        got = bf(x.to(torch.bfloat16)).float()
    torch.testing.assert_close(got, ref, atol=0.05 * ref.abs().max().item(), rtol=0)
    # reflect padding, an asymmetric "same", a Conv2d subclass: not rewritten
    keep = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                         nn.Conv2d(4, 4, 2, padding="same"),
                         type("MyConv", (nn.Conv2d,), {})(4, 4, 3))
    assert opt.fuse_onednn(keep) == (0, 0)
    # an activation that is not right after the conv is not taken in
    gap = nn.Sequential(nn.Conv2d(4, 4, 1), nn.MaxPool2d(2), nn.ReLU())
    assert opt.fuse_onednn(gap) == (1, 0) and type(gap[2]) is nn.ReLU


def _record_block_inputs(model: nn.Module) -> tuple[list[tuple[nn.Module, torch.Tensor]], list]:
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((m, a[0].clone())))
             for m in model.modules() if isinstance(m, torch.fx.GraphModule)]
    return seen, hooks


@pytest.mark.parametrize("name,adds,inplace,scaled", [
    ("resnet18", 8, 3, 0), ("resnet50", 16, 4, 0), ("mobilenet_v2", 10, 0, 0),
    # SE: the 4 projection shortcuts' convs take the sum (their `other` is the SE product, not
    # a conv output: no in-place); the 12 identity-shortcut blocks run a * s + x as one addcmul
    # written into the fresh conv output a
    ("se_resnet50", 4, 0, 12)])
def test_residual_sums_fused_and_exact(name, adds, inplace, scaled):
    model = randomize_(vz.create_model(name)).eval()
    fast = vz.optimize(model, example_input=torch.randn(1, 3, 64, 64, generator=_gen(2)))
    rep = fast.optimize_report
    assert rep.onednn_adds == adds + scaled
    fused = [m for m in fast.modules() if isinstance(m, opt.OneDNNConvAdd)]
    assert len(fused) == adds
    # only projection blocks write into their shortcut's fresh conv output
    assert sum(m.inplace for m in fused) == inplace
    scale_adds = [m for m in fast.modules() if isinstance(m, opt.ScaleAddAct)]
    assert len(scale_adds) == scaled and all(m.inplace for m in scale_adds)
    # the projection blocks' SE products (their sum went into the shortcut conv) run in place
    assert rep.scales_in_place == (4 if scaled else 0)
    assert rep.spatial_means == (16 if scaled else 0)  # every SE block's squeeze
    assert type(fast) is type(model) and hasattr(fast, "forward_features")
    # the identities folding left are gone from the rewritten blocks' graphs (a call each)
    graphs = [m for m in fast.modules() if isinstance(m, torch.fx.GraphModule)]
    assert graphs and not any(
        n.op == "call_module" and type(gm.get_submodule(n.target)) is nn.Identity
        for gm in graphs for n in gm.graph.nodes)
    # another batch and size than the example: nothing was baked in by tracing
    x = torch.randn(3, 3, 96, 80, generator=_gen(3))
    seen, hooks = _record_block_inputs(fast)
    x_before = x.clone()
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    for h in hooks:
        h.remove()
    atol, rtol = opt.FLOAT_TOLERANCE
    assert (got - ref).abs().max() <= atol + rtol * ref.abs().max()
    # no block wrote into its input (a tensor the caller or a feature list may still hold)
    assert len(seen) >= adds and torch.equal(x, x_before)
    with torch.inference_mode():
        for block, before in seen:
            before_call = before.clone()
            block(before)
            assert torch.equal(before, before_call)


def test_residual_sum_fusion_torchvision_and_fallbacks():
    torchvision = pytest.importorskip("torchvision")
    ref = randomize_(torchvision.models.resnet18()).eval()
    fast = vz.optimize(ref, example_input=torch.randn(1, 3, 64, 64, generator=_gen(4)))
    # torchvision's blocks call conv, BN and ReLU one by one (no Sequential): folded and fused
    # in the blocks' graphs; all 8 sums are fused. Only the root's stem BN stays (the model
    # itself is never traced, so it keeps its class)
    rep = fast.optimize_report
    assert (rep.onednn_adds, rep.bn_folded, rep.bn_left, rep.onednn_acts) == (8, 19, 1, 8)
    assert type(fast.bn1) is nn.BatchNorm2d
    x = torch.randn(2, 3, 64, 64, generator=_gen(5))
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref(x), atol=1e-4, rtol=1e-4)
    # gradients enabled: the plain ops, the same value, a gradient to the input
    xg = x.clone().requires_grad_()
    out = fast(xg)
    out.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    # an `other` that would broadcast falls back instead of reading past its end
    conv = opt.OneDNNConv2d(nn.Conv2d(4, 6, 3, padding=1).eval(), None, (1, 1))
    add = opt.OneDNNConvAdd(conv, nn.ReLU(), inplace=False)
    xs, bias = torch.randn(2, 4, 5, 5, generator=_gen(6)), torch.randn(1, 6, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(add(xs, bias), F.relu(F.conv2d(xs, conv.weight, conv.bias,
                                                                   padding=1) + bias))


def test_untraceable_block_keeps_its_forward():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y + x if x.sum() > 0 else y - x  # FX cannot trace a tensor-valued branch

    net = nn.Sequential(DataDependent()).eval()
    x = torch.randn(1, 4, 8, 8, generator=_gen(7))
    with torch.inference_mode():
        ref = net(x)
    fast = vz.optimize(net, example_input=x)
    assert type(fast[0]) is DataDependent and fast.optimize_report.onednn_adds == 0
    assert isinstance(fast[0].conv, opt.OneDNNConv2d)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref)
        torch.testing.assert_close(fast(-x), net(-x))


def test_packed_weight_follows_weight_changes_and_copies():
    conv = nn.Conv2d(6, 8, 3, padding=1).eval()
    fused = opt.OneDNNConv2d(conv, nn.ReLU(), (1, 1))
    x = torch.randn(1, 6, 7, 7, generator=_gen(8))
    with torch.inference_mode():
        first = fused(x)
        assert fused._packed is not None
    new = torch.randn_like(conv.weight)
    fused.load_state_dict({"weight": new, "bias": conv.bias.detach()})
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), F.relu(F.conv2d(x, new, conv.bias, padding=1)))
        assert not torch.allclose(fused(x), first)
    clone = copy.deepcopy(fused)
    assert clone._packed is None
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), fused(x))
    # another input shape is packed for anew (oneDNN's layout depends on the problem shape)
    x2 = torch.randn(3, 6, 12, 12, generator=_gen(9))
    packed = fused._packed
    with torch.inference_mode():
        torch.testing.assert_close(fused(x2), F.relu(F.conv2d(x2, new, conv.bias, padding=1)))
        assert fused._packed is not packed and fused._packed_key[-1] == tuple(x2.shape)
        again = fused._packed
        fused(x2)
        assert fused._packed is again  # the same shape reuses it


def test_small_calls_take_the_plain_ops(monkeypatch):
    """Where oneDNN's fixed cost per call outweighs its gain, the plain ops run: 1x1 maps
    (squeeze-and-excitation) and small pointwise convs (under SMALL_POINTWISE_MACS)."""
    calls = []
    real = torch.ops.mkldnn._convolution_pointwise
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise",
                        lambda *a: calls.append(tuple(a[0].shape)) or real(*a), raising=False)
    conv3 = opt.OneDNNConv2d(nn.Conv2d(16, 4, 3, padding=1).eval(), nn.SiLU(), (1, 1))
    conv1 = opt.OneDNNConv2d(nn.Conv2d(64, 256, 1).eval(), nn.ReLU(), (0, 0))
    with torch.inference_mode():
        for hw in (1, 3):
            x = torch.randn(2, 16, hw, hw, generator=_gen(9))
            torch.testing.assert_close(fused := conv3(x), F.silu(F.conv2d(
                x, conv3.weight, conv3.bias, padding=1)))
            assert fused.shape == (2, 4, hw, hw)
        assert calls == [(2, 16, 3, 3)]
        for n, hw in ((1, 8), (4, 32)):  # 1 * 64 * 64 * 256 = 1 M MACs; 4 * 1024 * ... = 67 M
            x = torch.randn(n, 64, hw, hw, generator=_gen(10))
            torch.testing.assert_close(conv1(x), F.relu(F.conv2d(x, conv1.weight, conv1.bias)),
                                       atol=1e-4, rtol=1e-4)
    assert calls == [(2, 16, 3, 3), (4, 64, 32, 32)]


def test_pointwise_conv_on_a_1x1_map_is_a_linear_layer(monkeypatch):
    """Squeeze-and-excitation's FCs: a 1x1 conv on a 1x1 map runs as F.linear (ATen's conv
    takes its im2col path there); the same values for any stride, with gradients too."""
    calls = []
    real = F.linear
    monkeypatch.setattr(F, "linear", lambda *a: calls.append(tuple(a[0].shape)) or real(*a))
    for stride, act in ((1, nn.ReLU()), (2, nn.Sigmoid()), (1, None)):
        conv = nn.Conv2d(32, 8, 1, stride=stride).eval()
        fused = opt.OneDNNConv2d(conv, act, (0, 0))
        x = torch.randn(3, 32, 1, 1, generator=_gen(11)).contiguous(
            memory_format=torch.channels_last)
        want = F.conv2d(x, conv.weight, conv.bias, stride=stride)
        want = act(want) if act is not None else want
        with torch.inference_mode():
            got = fused(x)
        assert got.shape == (3, 8, 1, 1)
        torch.testing.assert_close(got, want)
    assert calls == [(3, 32)] * 3
    x = torch.randn(2, 32, 1, 1, requires_grad=True, generator=_gen(12))
    fused(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    torch.testing.assert_close(x.grad.flatten(1), conv.weight.flatten(1).sum(0).expand(2, 32))
    # a padded 1x1 conv's output is 3x3 there: the conv itself
    padded = opt.OneDNNConv2d(nn.Conv2d(32, 8, 1, padding=1).eval(), None, (1, 1))
    with torch.inference_mode():
        assert padded(x).shape == (2, 8, 3, 3) and len(calls) == 4


def test_densenet_bn_after_conv_folded_in_the_graph():
    """DenseNet's H_l is BN-ReLU-conv1-BN-ReLU-conv2 in one module's forward (no Sequential):
    the BN after conv1 is folded and its ReLU fused; the pre-activation BN -> ReLU before each
    1x1 conv (58 layers, 3 transitions) becomes a clamp with its scale in the conv; only the
    final BN stays. The blocks fill one buffer instead of concatenating."""
    model = randomize_(vz.create_model("densenet121")).eval()
    a = model.blocks[0][0].norm1.weight
    assert (a < 0).any() and (a > 0).any()  # both branches of the clamp are exercised
    fast = vz.optimize(model, example_input=torch.randn(1, 3, 32, 32, generator=_gen(10)))
    rep = fast.optimize_report
    assert (rep.bn_folded, rep.bn_left, rep.onednn_acts) == (1 + 58 + 58 + 3, 1, 1 + 58)
    assert rep.dense_blocks_buffered == 4 and rep.pools_before_convs == 3
    assert sum(isinstance(m, opt.PreActClamp) for m in fast.modules()) == 58 + 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.blocks.modules())
    x = torch.randn(2, 3, 48, 48, generator=_gen(11))
    with torch.inference_mode():
        ref = model(x)
        assert (fast(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
        maps = fast.forward_intermediates(x)
        for r, g in zip(model.forward_intermediates(x), maps, strict=True):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    # with gradients the buffered blocks concatenate as DenseBlock does (same function)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)
    with torch.enable_grad():
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_preactivation_clamp_is_exact_for_every_sign_of_scale(stride, bias):
    """ReLU(BN(x)) -> 1x1 conv == clamp -> conv' with BN scales > 0, < 0 and == 0."""
    class PreAct(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(6)
            self.conv = nn.Conv2d(6, 5, 1, stride=stride, bias=bias)

        def forward(self, x):
            return self.conv(F.relu(self.bn(x)))

    block = nn.Sequential(PreAct()).eval()
    randomize_(block, seed=3)
    with torch.no_grad():
        block[0].bn.weight.copy_(torch.tensor([1.5, -0.7, 0.0, 0.3, -2.0, 0.0]))
        block[0].bn.bias.copy_(torch.tensor([0.2, 0.4, 0.5, -0.3, -0.1, -0.5]))
    fast = copy.deepcopy(block)
    opt.fuse_onednn(fast)
    assert opt.fuse_blocks(fast) == (1, 0, 0, 0, 0, 0, 0)
    assert isinstance(fast[0].get_submodule("preact_clamp_0"), opt.PreActClamp)
    x = torch.randn(3, 6, 9, 9, generator=_gen(20)) * 2
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), block(x), atol=1e-5, rtol=1e-5)


def test_preactivation_left_alone_where_it_cannot_be_exact():
    """A 3x3 conv (padding sees the zeros, not clamp(0)), a BN output read twice, and a
    threshold that overflows float32 keep BN -> ReLU."""
    class TwoReaders(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            self.conv = nn.Conv2d(4, 4, k, padding=k // 2)

        def forward(self, x):
            y = self.bn(x)
            return self.conv(F.relu(y)) + (y if k == 1 else 0)

    for k in (3, 1):
        block = nn.Sequential(TwoReaders(k)).eval()
        opt.fuse_onednn(block)
        assert opt.fuse_blocks(block)[0] == 0
    block = nn.Sequential(nn.Identity()).eval()
    pre = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 1)).eval()
    with torch.no_grad():
        pre[0].weight.copy_(torch.tensor([1e-40, 1.0]))  # -b/a = -1e40
        pre[0].bias.copy_(torch.tensor([1.0, 0.0]))
    block[0] = pre
    opt.fuse_onednn(block)
    assert opt.fuse_blocks(block)[0] == 0


def test_optimize_a_features_only_backbone():
    """A backbone returns a list of stage maps: the check compares each (it used to assume one
    logits tensor and failed)."""
    model = randomize_(vz.create_model("resnet18", features_only=True)).eval()
    x = torch.randn(1, 3, 64, 64, generator=_gen(12))
    fast = vz.optimize(model, example_input=x)
    assert fast.optimize_report.onednn_adds == 8
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    assert [t.shape for t in got] == [t.shape for t in ref]
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def test_preactivation_clamp_is_a_maximum_where_no_scale_is_negative():
    """With every upper bound infinite the clamp runs as a maximum; a new bound loaded into
    the buffer (a version bump) is seen on the next call."""
    inf = float("inf")
    clamp = opt.PreActClamp(torch.tensor([0.5, -1.0, -inf]), torch.full((3,), inf))
    x = torch.randn(2, 3, 4, 4, generator=_gen(21)) * 2
    with torch.inference_mode():
        torch.testing.assert_close(clamp(x), x.clamp_min(clamp.lo), atol=0, rtol=0)
    assert clamp._one_sided
    with torch.no_grad():
        clamp.hi[1] = 0.25  # a negative BN scale in channel 1
    with torch.inference_mode():
        got = clamp(x)
    assert not clamp._one_sided
    torch.testing.assert_close(got, torch.clamp(x, clamp.lo, clamp.hi), atol=0, rtol=0)
    assert got[:, 1].max() == 0.25


class _SEProjection(nn.Module):
    """EfficientNet's MBConv tail in small: a = act(conv(x)), s = sigmoid(fc(mean(a))),
    project(a * s) (+ x). ``read_after`` reads a again after the product."""

    def __init__(self, residual: bool, bias: bool, read_after: bool = False):
        super().__init__()
        self.conv, self.act = nn.Conv2d(6, 12, 3, padding=1), nn.SiLU()
        self.fc = nn.Conv2d(12, 12, 1)
        self.project = nn.Conv2d(12, 6, 1, bias=bias)
        self.residual, self.read_after = residual, read_after

    def forward(self, x):
        a = self.act(self.conv(x))
        s = torch.sigmoid(self.fc(a.mean((2, 3), keepdim=True)))
        y = self.project(a * s)
        if self.residual:
            y = y + x
        if self.read_after:
            y = y * a.mean()
        return y


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("read_after", [False, True])
def test_se_scale_moves_into_the_pointwise_conv(residual, bias, read_after, monkeypatch):
    """a * s -> 1x1 conv becomes ScaledPointwiseConv: at batch 1 on a channels_last map wider
    than the conv's outputs the scale goes into the weights (one GEMM), else the product is
    taken, in place only where nothing reads a afterwards. Same function on every path."""
    block = nn.Sequential(_SEProjection(residual, bias, read_after)).eval()
    randomize_(block, seed=4)
    fast = copy.deepcopy(block)
    opt.fuse_onednn(fast)
    counts = opt.fuse_blocks(fast)
    assert counts.scales == 1 and counts.sums == int(residual)
    (mod,) = [m for m in fast.modules() if isinstance(m, opt.ScaledPointwiseConv)]
    assert isinstance(mod.conv, opt.OneDNNConvAdd if residual else opt.OneDNNConv2d)
    assert mod.inplace == (not read_after)
    folds = []
    real = opt.ScaledPointwiseConv._fold_ok
    monkeypatch.setattr(opt.ScaledPointwiseConv, "_fold_ok",
                        lambda self, *a: folds.append(real(self, *a)) or folds[-1])
    cl = torch.channels_last
    cases = [(torch.randn(1, 6, 9, 7, generator=_gen(40)).contiguous(memory_format=cl), True),
             (torch.randn(3, 6, 9, 7, generator=_gen(42)).contiguous(memory_format=cl), False),
             (torch.randn(1, 6, 2, 3, generator=_gen(43)).contiguous(memory_format=cl), False)]
    for x, folded in cases:  # the last: 6 pixels, not more than the 6 output channels
        folds.clear()
        with torch.inference_mode():
            want = block(x)
            torch.testing.assert_close(fast(x), want, atol=1e-5, rtol=1e-5)
        assert folds == [folded]
    x = cases[0][0].clone().requires_grad_()
    fast(x).sum().backward()  # gradients enabled: the plain ops
    assert x.grad is not None and folds[-1] is False
    monkeypatch.setattr(opt, "SMALL_POINTWISE_MACS", 0)  # a conv that oneDNN runs: no fold
    folds.clear()
    with torch.inference_mode():
        torch.testing.assert_close(fast(cases[0][0]), block(cases[0][0]), atol=1e-5, rtol=1e-5)
    assert folds == [False]
    monkeypatch.undo()
    a, s = torch.randn(1, 12, 9, 7), torch.rand(1, 12, 1, 1)  # an NCHW map: no GEMM view
    with torch.inference_mode():
        assert not mod._fold_ok(a, s, torch.randn(1, 6, 9, 7) if residual else None)
        assert mod._fold_ok(a.contiguous(memory_format=cl), s,
                            torch.randn(1, 6, 9, 7).contiguous(memory_format=cl)
                            if residual else None)


def test_efficientnet_se_scales_taken_by_the_projection(monkeypatch):
    """In EfficientNet-B0 all 16 MBConv projections take their SE scale; at batch 1 the blocks
    whose map is wider than their outputs scale the weights, and the logits match eager."""
    model = randomize_(vz.create_model("efficientnet_b0")).eval()
    fast = vz.optimize(model, example_input=torch.randn(1, 3, 64, 64, generator=_gen(44)))
    assert fast.optimize_report.scales_into_convs == 16
    folds = []
    real = opt.ScaledPointwiseConv._fold_ok
    monkeypatch.setattr(opt.ScaledPointwiseConv, "_fold_ok",
                        lambda self, *a: folds.append(real(self, *a)) or folds[-1])
    atol, rtol = opt.FLOAT_TOLERANCE
    for batch, n_folded in [(1, 5), (2, 0)]:  # 64x64: maps of 32x32 to 8x8 have more pixels
        folds.clear()
        x = torch.randn(batch, 3, 64, 64, generator=_gen(45))
        with torch.inference_mode():
            ref, got = model(x), fast(x)
        assert (got - ref).abs().max() <= atol * 1e-2 + rtol * 1e-2 * ref.abs().max()
        assert (len(folds), sum(folds)) == (16, n_folded)


@pytest.mark.parametrize("tail,moved", [
    ([nn.Conv2d(8, 4, 1), nn.AvgPool2d(2)], True),
    ([nn.Conv2d(8, 4, 1, bias=False), nn.Dropout(0.2), nn.AvgPool2d(3, stride=2)], True),
    ([nn.Conv2d(8, 4, 1, groups=2), nn.AvgPool2d(2)], True),
    ([nn.Conv2d(8, 4, 1), nn.AvgPool2d(2, padding=1)], False),  # pads see 0, not the bias
    ([nn.Conv2d(8, 4, 1), nn.ReLU(), nn.AvgPool2d(2)], False),  # not linear
    ([nn.Conv2d(8, 4, 3, padding=1), nn.AvgPool2d(2)], False),  # mixes pixels
    ([nn.Conv2d(8, 4, 1, stride=2), nn.AvgPool2d(2)], False)])
def test_average_pool_moves_before_a_pointwise_conv(tail, moved):
    """conv1x1 -> avg pool == avg pool -> conv1x1 where the pool is unpadded and the conv is
    linear per pixel (DenseNet's transitions)."""
    block = nn.Sequential(nn.Sequential(*tail)).eval()
    randomize_(block, seed=5)
    fast = copy.deepcopy(block)
    opt.fuse_onednn(fast)
    assert opt.fuse_blocks(fast).pools_first == int(moved)
    if moved:  # the graph now pools first
        order = [n.target for n in fast[0].graph.nodes if n.op == "call_module"]
        assert type(fast[0].get_submodule(order[0])) is nn.AvgPool2d
    for shape in [(2, 8, 10, 10), (1, 8, 9, 11)]:
        x = torch.randn(*shape, generator=_gen(46))
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), block(x), atol=1e-5, rtol=1e-5)


class _SEThenSum(nn.Module):
    """SE-ResNet's projection block, reduced: the SE product is the other operand of a sum
    whose first is a conv output (fused into that conv), so no ScaleAddAct takes the product."""

    def __init__(self, read_after: bool):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.shortcut, self.read_after = nn.Conv2d(6, 8, 1), read_after

    def forward(self, x):
        a = self.conv(x)
        s = torch.sigmoid(self.fc(a.mean((2, 3), keepdim=True)))
        y = torch.relu(self.shortcut(x) + a * s)
        return y * a.mean() if self.read_after else y


@pytest.mark.parametrize("read_after", [False, True])
def test_se_scale_without_a_taker_runs_in_place(read_after):
    """a * s that no fused module takes becomes ScaleInPlace, only where nothing reads a after
    the product; it writes into a at inference and is the plain product otherwise."""
    block = nn.Sequential(_SEThenSum(read_after)).eval()
    randomize_(block, seed=6)
    fast = copy.deepcopy(block)
    opt.fuse_onednn(fast)
    counts = opt.fuse_blocks(fast)
    assert counts.sums == 1 and counts.scales_in_place == int(not read_after)
    assert counts.spatial_means == 1
    x = torch.randn(2, 6, 7, 9, generator=_gen(47)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), block(x), atol=1e-5, rtol=1e-5)
    mod = opt.ScaleInPlace()
    a, s = torch.randn(2, 8, 3, 3, generator=_gen(48)), torch.rand(2, 8, 1, 1, generator=_gen(49))
    want, a_in = a * s, a.clone()
    with torch.inference_mode():
        got = mod(a_in, s)
    assert torch.equal(got, want) and got.data_ptr() == a_in.data_ptr()
    ag = a.clone().requires_grad_()
    got = mod(ag, s)  # gradients enabled: a new tensor, and a gradient
    got.sum().backward()
    assert got.data_ptr() != ag.data_ptr() and torch.equal(ag.grad, s.expand_as(a))
    with torch.inference_mode():  # a scale that is not per-sample, per-channel: the product
        row, a_in = torch.rand(1, 8, 1, 3, generator=_gen(50)), a.clone()
        assert torch.equal(mod(a_in, row), a * row) and torch.equal(a_in, a)


def test_spatial_mean_is_the_mean_on_every_path():
    """SpatialMean sums rows first on a float32 channels_last map of at most MAX_PIXELS pixels;
    every other input takes mean. Equal to mean up to float32 rounding either way."""
    mod, cl = opt.SpatialMean(), torch.channels_last
    calls = []
    real_mean = torch.Tensor.mean
    for shape in [(3, 16, 7, 9), (1, 8, 14, 14), (2, 4, 32, 32), (2, 4, 33, 32), (2, 1, 5, 5)]:
        x = torch.randn(*shape, generator=_gen(51))
        for layout, two_sums in [(cl, shape[2] * shape[3] <= 1024 and shape[1] > 1),
                                 (torch.contiguous_format, False)]:
            xin = x.contiguous(memory_format=layout)
            calls.clear()
            with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
                mp.setattr(torch.Tensor, "mean",
                           lambda self, *a, **k: calls.append(1) or real_mean(self, *a, **k))
                got = mod(xin)
            torch.testing.assert_close(got, x.mean((2, 3), keepdim=True), atol=1e-6, rtol=1e-5)
            assert got.shape == (shape[0], shape[1], 1, 1)
            assert (not calls) == two_sums, (shape, layout)
    x = torch.randn(2, 8, 6, 6, generator=_gen(52)).contiguous(memory_format=cl)
    with torch.inference_mode():  # bfloat16: one reduction, not two roundings
        torch.testing.assert_close(mod(x.bfloat16()), x.bfloat16().mean((2, 3), keepdim=True))
    xg = x.clone().requires_grad_()
    mod(xg).sum().backward()  # gradients enabled: mean's own backward
    torch.testing.assert_close(xg.grad, torch.full_like(x, 1 / 36))


@pytest.mark.parametrize("act", [nn.ReLU(), nn.SiLU(), None], ids=repr)
def test_scale_add_matches_the_plain_ops_and_falls_back(act):
    a = torch.randn(2, 8, 5, 5, generator=_gen(30)).contiguous(memory_format=torch.channels_last)
    s = torch.rand(2, 8, 1, 1, generator=_gen(31))
    other = torch.randn(2, 8, 5, 5, generator=_gen(32))
    want = (act or nn.Identity())(a * s + other)
    for inplace in (False, True):
        mod = opt.ScaleAddAct(act, inplace)
        a_in, other_in = a.clone(), other.clone()
        with torch.inference_mode():
            got = mod(a_in, s, other_in)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        assert torch.equal(other_in, other)  # the shortcut is never written
        if not isinstance(act, nn.SiLU):  # ReLU runs in place; another activation allocates
            assert (got.data_ptr() == a_in.data_ptr()) == inplace
    # gradients enabled, or an `other` that broadcasts: the plain ops
    mod = opt.ScaleAddAct(act, True)
    ag = a.clone().requires_grad_()
    mod(ag, s, other).sum().backward()
    assert ag.grad is not None
    row = torch.randn(1, 8, 1, 5, generator=_gen(33))
    with torch.inference_mode():
        a_in = a.clone()
        torch.testing.assert_close(mod(a_in, s, row), (act or nn.Identity())(a * s + row))
        assert torch.equal(a_in, a)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "se_resnet50"])
def test_stage_specs_and_profile_of_an_optimized_model(name):
    """The rewritten blocks (GraphModules, DenseBlockBuffer) lose the attributes stage_specs()
    reads; the optimized model answers with the rows read before the rewrite, and profile()
    finds every row's modules: the same output shapes and MACs per row (the oneDNN convs are
    counted like ATen's, an SE module whose convs the block's graph calls directly through its
    children; DenseNet's transition convs, which now run after the pool, a quarter), and
    parameters less only the folded BNs'."""
    import pickle

    from visionzoo.profile import profile

    model = vz.create_model(name).eval()
    fast = vz.optimize(model, example_input=torch.randn(1, 3, 64, 64, generator=_gen(12)))
    assert fast.optimize_report.onednn_convs > 0
    rewritten = [m for m in fast.modules()
                 if isinstance(m, (torch.fx.GraphModule, opt.DenseBlockBuffer))]
    assert rewritten  # the case this is about
    assert fast.stage_specs() == model.stage_specs()
    got, ref = profile(fast, input_size=(3, 64, 64)), profile(model, input_size=(3, 64, 64))
    # DenseNet's transitions pool before their 1x1 conv: that conv sees a quarter of the pixels
    moved = fast.optimize_report.pools_before_convs
    assert moved == (3 if name == "densenet121" else 0)
    want = [s.macs // 4 if s.name.startswith("transition") else s.macs for s in ref.stages]
    assert got.macs == ref.macs - sum(s.macs for s in ref.stages) + sum(want)
    assert [(s.name, s.blocks, s.macs) for s in got.stages] == \
        [(s.name, s.blocks, m) for s, m in zip(ref.stages, want, strict=True)]
    for g, r in zip(got.stages, ref.stages, strict=True):
        assert (g.params > 0) == (r.params > 0) and g.params <= r.params
        # an SE module's product is fused into the block's ScaleAddAct: that breakdown row
        # (part_of its stage) has no output of its own any more; every stage has its shape
        assert g.output == r.output or (g.part_of and "SE" in g.name and g.output == ())
    assert got.params == ref.params - sum(  # a folded BN leaves a conv bias of its width
        2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)) + sum(
        m.bias.numel() for m in fast.modules()
        if isinstance(m, nn.Conv2d) and m.bias is not None) - sum(
        m.bias.numel() for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.bias is not None) + sum(
        2 * m.num_features for m in fast.modules() if isinstance(m, nn.BatchNorm2d))
    assert pickle.loads(pickle.dumps(fast.stage_specs)).func is opt._cached_stage_specs


@pytest.mark.parametrize("name,pools", [("vgg11", 5), ("se_resnet50", 1), ("resnet18", 0)])
def test_optimize_strides_unpadded_max_pools(name, pools):
    model = vz.create_model(name, num_classes=10).eval()
    randomize_(model)
    fast = vz.optimize(model, example_input=torch.randn(1, 3, 64, 64))
    assert fast.optimize_report.max_pools_strided == pools
    assert sum(isinstance(m, opt.StridedMaxPool2d) for m in fast.modules()) == pools
    x = torch.randn(2, 3, 67, 61, generator=_gen(3))
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    assert (got - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


@pytest.fixture
def small_winograd(monkeypatch):
    """Winograd thresholds low enough for test-sized convs."""
    monkeypatch.setattr(opt, "WINOGRAD_MIN_IN", 4)
    monkeypatch.setattr(opt, "WINOGRAD_MIN_OUT", 4)
    monkeypatch.setattr(opt, "WINOGRAD_MIN_TILES", 4)


def _winograd_conv(cin: int, cout: int, act: nn.Module | None, bias: bool = True):
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias).eval()
    with torch.no_grad():
        conv.weight.normal_(0, 1 / (3 * cin ** 0.5), generator=_gen(20))
    fused = opt.OneDNNConv2d(conv, act, (1, 1))
    assert opt.WinogradConv2d.applies_to(fused)
    return conv, opt.WinogradConv2d(fused)


@pytest.mark.parametrize("act,bias", [(nn.ReLU(), True), (None, True), (nn.ReLU(), False)],
                         ids=["relu", "none", "relu-nobias"])
@pytest.mark.parametrize("shape", [(1, 8, 6, 10), (3, 16, 12, 8)], ids=str)
def test_winograd_conv_equals_the_direct_conv(small_winograd, act, bias, shape):
    conv, wino = _winograd_conv(shape[1], 12, act, bias)
    x = torch.randn(*shape, generator=_gen(21)).contiguous(memory_format=torch.channels_last)
    opt.free_winograd_workspace()
    direct = F.conv2d(x, conv.weight, conv.bias, padding=1)
    direct = F.relu(direct) if act is not None else direct
    with torch.inference_mode():
        got = wino(x)
        assert wino._wino is not None  # the Winograd path ran
    assert got.shape == direct.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, direct, atol=1e-5, rtol=1e-5)
    # the scratch: the padded input, then two buffers each holding two stages in turn
    n, c, h, w = shape
    k, tiles = 12, n * (h // 2) * (w // 2)
    floats = n * (h + 2) * (w + 2) * c + 16 * tiles * max(c, k) + max(16 * tiles * c, 4 * tiles * k)
    assert opt.free_winograd_workspace() == 4 * floats
    assert opt.free_winograd_workspace() == 0


def test_winograd_falls_back_where_it_does_not_apply(small_winograd, monkeypatch):
    conv, wino = _winograd_conv(8, 8, nn.ReLU())
    ran = []
    real = opt.WinogradConv2d.transformed_weight
    monkeypatch.setattr(opt.WinogradConv2d, "transformed_weight",
                        lambda self: ran.append(1) or real(self))
    for x in (torch.randn(1, 8, 7, 8), torch.randn(1, 8, 2, 2)):  # odd height; 1 tile < 4
        with torch.inference_mode():
            torch.testing.assert_close(wino(x), F.relu(F.conv2d(x, conv.weight, conv.bias,
                                                                 padding=1)))
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    wino(x).sum().backward()  # autograd: the plain ops
    assert x.grad is not None and not ran
    # what it is not for: 1x1, strided, grouped, bfloat16, another activation
    for c, act in ((nn.Conv2d(8, 8, 1), None), (nn.Conv2d(8, 8, 3, 2, 1), None),
                   (nn.Conv2d(8, 8, 3, padding=1, groups=2), None),
                   (nn.Conv2d(8, 8, 3, padding=1).bfloat16(), None),
                   (nn.Conv2d(8, 8, 3, padding=1), nn.SiLU())):
        pad = tuple(c.padding)
        assert not opt.WinogradConv2d.applies_to(opt.OneDNNConv2d(c, act, pad))
    monkeypatch.setattr(opt, "WINOGRAD_MIN_IN", 9)
    assert not opt.WinogradConv2d.applies_to(opt.OneDNNConv2d(nn.Conv2d(8, 8, 3, padding=1),
                                                              None, (1, 1)))


def test_winograd_narrow_convs_only_on_small_maps(small_winograd, monkeypatch):
    """Below WINOGRAD_MIN_OUT output channels (ResNet's 128-channel stage) Winograd runs only
    up to WINOGRAD_NARROW_MAX_TILES tiles, and only where in channels <= out channels."""
    monkeypatch.setattr(opt, "WINOGRAD_MIN_OUT", 16)
    monkeypatch.setattr(opt, "WINOGRAD_NARROW_OUT", 8)
    monkeypatch.setattr(opt, "WINOGRAD_NARROW_MAX_TILES", 12)
    for cin, cout in ((16, 8), (4, 4)):  # more in than out; out under WINOGRAD_NARROW_OUT
        assert not opt.WinogradConv2d.applies_to(
            opt.OneDNNConv2d(nn.Conv2d(cin, cout, 3, padding=1), None, (1, 1)))
    ran = []
    real = opt.WinogradConv2d.transformed_weight
    monkeypatch.setattr(opt.WinogradConv2d, "transformed_weight",
                        lambda self: ran.append(self.out_channels) or real(self))
    narrow, wide = _winograd_conv(8, 8, nn.ReLU()), _winograd_conv(8, 16, nn.ReLU())
    # 9 and 12 tiles: Winograd; 16 tiles: the direct conv for the narrow one only
    for shape, expect in (((1, 8, 6, 6), [8, 16]), ((2, 8, 6, 4), [8, 16]),
                          ((1, 8, 8, 8), [16])):
        ran.clear()
        x = torch.randn(*shape, generator=_gen(24))
        for conv, wino in (narrow, wide):
            with torch.inference_mode():
                got = wino(x)
            torch.testing.assert_close(got, F.relu(F.conv2d(x, conv.weight, conv.bias,
                                                              padding=1)), atol=1e-5, rtol=1e-5)
        assert ran == expect


def test_winograd_scratch_views_follow_the_shape(small_winograd):
    """The scratch views are kept per shape; a shape that another one's input overwrote gets
    its zero border back, and growing the buffers drops the old views."""
    conv, wino = _winograd_conv(8, 8, None)
    opt.free_winograd_workspace()
    for shape in ((1, 8, 6, 10), (1, 8, 10, 6), (1, 8, 6, 10), (2, 8, 12, 12), (1, 8, 10, 6)):
        x = torch.randn(*shape, generator=_gen(25)) + 3  # no zeros at the border
        with torch.inference_mode():
            got = wino(x)
        torch.testing.assert_close(got, F.conv2d(x, conv.weight, conv.bias, padding=1),
                                   atol=1e-4, rtol=1e-5)
    assert opt.free_winograd_workspace() > 0


def test_winograd_weight_follows_changes_copies_and_threads(small_winograd):
    conv, wino = _winograd_conv(8, 8, None)
    x = torch.randn(2, 8, 8, 8, generator=_gen(22))
    with torch.inference_mode():
        wino(x)
    new = torch.randn_like(conv.weight)
    wino.load_state_dict({"weight": new, "bias": conv.bias.detach()})
    want = F.conv2d(x, new, conv.bias, padding=1)
    with torch.inference_mode():
        torch.testing.assert_close(wino(x), want, atol=1e-4, rtol=1e-4)
    clone = copy.deepcopy(wino)
    assert clone._wino is None and clone._packed is None
    # each thread has its own scratch: concurrent calls on different inputs stay right
    import threading
    xs = [torch.randn(4, 8, 16, 16, generator=_gen(30 + i)) for i in range(4)]
    outs: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        with torch.inference_mode():
            for _ in range(5):
                outs[i] = clone(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, xi in enumerate(xs):
        torch.testing.assert_close(outs[i], F.conv2d(xi, new, conv.bias, padding=1),
                                   atol=1e-4, rtol=1e-4)


def test_optimize_runs_large_3x3_convs_by_winograd(small_winograd):
    model = vz.create_model("vgg11", num_classes=10).eval()
    randomize_(model)
    fast = vz.optimize(model, example_input=torch.randn(1, 3, 64, 64))
    # vgg11: every 3x3 conv but the first (3 input channels < 4)
    assert fast.optimize_report.winograd_convs == 7
    assert "Winograd" in fast.optimize_report.summary()
    x = torch.randn(2, 3, 64, 64, generator=_gen(23))
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    assert (got - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()
    off = vz.optimize(model, example_input=torch.randn(1, 3, 64, 64), winograd=False)
    assert off.optimize_report.winograd_convs == 0
    # a residual block's last conv stays a oneDNN conv with its fused sum
    res = vz.optimize(vz.create_model("resnet18", num_classes=10).eval(),
                      example_input=torch.randn(1, 3, 64, 64))
    # conv1 of the 8 basic blocks, less the 3 with stride 2 (the first of stages 2-4)
    assert res.optimize_report.winograd_convs == 5
    assert all(type(m.conv) is opt.OneDNNConv2d for m in res.modules()
               if isinstance(m, opt.OneDNNConvAdd))
