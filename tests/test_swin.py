"""Swin Transformer: ports, eq. (2) costs, shifted windows, any input size, bias resampling,
features, timm's model contract, tracing (fx, feature extraction, export, jit, compile), ONNX."""

from __future__ import annotations

import copy
import math
import re

import pytest
import timm
import torch
import torchvision
from timm.models.swin_transformer import checkpoint_filter_fn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import visionzoo as vz
from visionzoo.models.swin import (
    ARCHS,
    SwinBlock,
    WindowAttention,
    pad_to_multiple,
    resample_relative_position_bias,
    shift_mask,
    shifted_window_attention,
)
from visionzoo.ports.swin import convert_timm
from visionzoo.profile import format_info, profile

from conftest import max_logit_diff, randomize_

TIMM = {  # timm name -> (ours, test input size)
    "swin_tiny_patch4_window7_224": ("swin_t", 224),
    "swin_small_patch4_window7_224": ("swin_s", 224),
    "swin_base_patch4_window7_224": ("swin_b", 224),
    "swin_base_patch4_window12_384": ("swin_b_384", 384),
    "swin_large_patch4_window7_224": ("swin_l", 224),
    "swin_large_patch4_window12_384": ("swin_l_384", 384),
}


def image(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def empty(build, *args, **kwargs) -> torch.nn.Module:
    """Build on the meta device and allocate uninitialised: random weights come next anyway,
    and initialising Swin-L twice costs ~10 s per model on one core."""
    with torch.device("meta"):
        model = build(*args, **kwargs)
    return model.to_empty(device="cpu")


def timm_ref(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    ref = randomize_(empty(timm.create_model, name, pretrained=False, **kwargs), seed=seed)
    # the buffers timm recomputes (index, SW-MSA masks; randomize_ overwrote the float masks)
    for m in ref.modules():
        if hasattr(m, "init_non_persistent_buffers"):
            m.init_non_persistent_buffers()
    return ref.eval()


def tv_ref(name: str, seed: int = 0) -> torch.nn.Module:
    ref = randomize_(empty(torchvision.models.get_model, name), seed=seed)
    for m in ref.modules():
        if hasattr(m, "define_relative_position_index"):
            m.define_relative_position_index()
    return ref.eval()


def port_into_empty(source: str, name: str, ours_name: str, sd: dict) -> torch.nn.Module:
    """port() into a preallocated model (the large ones; swin_t/s take port's own build path)."""
    ours = empty(vz.create_model, ours_name)
    ours.init_non_persistent_buffers()
    return vz.port(source, name, sd, model=ours)


@pytest.fixture(scope="module")
def tv_swin_t():
    ref = tv_ref("swin_t", seed=3)
    return ref, vz.port("torchvision", "swin_t", ref.state_dict()).eval()


@pytest.fixture(scope="module")
def timm_swin_t():
    ref = timm_ref("swin_tiny_patch4_window7_224", seed=4)
    return ref, vz.port("timm", "swin_tiny_patch4_window7_224", ref.state_dict()).eval()


# ---------------------------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["swin_t", "swin_s", "swin_b"])
def test_port_torchvision(name, tv_swin_t):
    if name == "swin_t":
        ref, ours = tv_swin_t
    elif name == "swin_s":
        ref = tv_ref(name, seed=5)
        ours = vz.port("torchvision", name, ref.state_dict())
    else:
        ref = tv_ref(name, seed=5)
        ours = port_into_empty("torchvision", name, name, ref.state_dict())
    assert max_logit_diff(ours, ref, image(1, 3, 224, 224)) <= 1e-4


@pytest.mark.parametrize("name", list(TIMM))
def test_port_timm(name, timm_swin_t):
    ours_name, size = TIMM[name]
    if name == "swin_tiny_patch4_window7_224":
        ref, ours = timm_swin_t
    elif name == "swin_small_patch4_window7_224":
        ref = timm_ref(name, seed=6)
        ours = vz.port("timm", name, ref.state_dict())
        assert ours.model_name == ours_name
    else:
        ref = timm_ref(name, seed=6)
        ours = port_into_empty("timm", name, ours_name, ref.state_dict())
    assert ours.window_size == (12 if size == 384 else 7)
    assert max_logit_diff(ours, ref, image(1, 3, size, size)) <= 1e-4


def test_port_authors_original_checkpoint_layout(timm_swin_t):
    """The files timm's URLs point at are the authors': merging at the *end* of stages 0-2,
    ``head.weight``, index and mask buffers stored. Build that layout from timm's and check that
    timm's own loader reads it back to timm's keys, then port it."""
    ref, _ = timm_swin_t
    sd = ref.state_dict()
    authors = {}
    for k, v in sd.items():
        m = re.fullmatch(r"layers\.(\d)\.downsample\.(.+)", k)
        k = f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else k.replace("head.fc.", "head.")
        authors[k] = v
    authors.update(dict(ref.named_buffers()))  # relative_position_index, attn_mask
    back = checkpoint_filter_fn(dict(authors), ref)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    ours = vz.port("timm", "swin_tiny_patch4_window7_224", authors)
    assert max_logit_diff(ours, ref, image(1, 3, 224, 224)) <= 1e-4


# ---------------------------------------------------------------------------------------------
# the paper's costs and table
# ---------------------------------------------------------------------------------------------


def eq2_macs(name: str, window: int, size: int) -> int:
    """Multiply-adds from the paper: eq. (2) Omega(W-MSA) = 4hwC^2 + 2M^2hwC per block, the
    MLP 2 * hw * C * 4C, patch merging (h/2)(w/2) * 4C * 2C, the 4x4 patch embedding and fc."""
    stages = ARCHS[name]
    r = size // 4
    macs = r * r * stages[0].dim * 3 * 4 * 4
    for i, s in enumerate(stages):
        if i:
            r //= 2
            macs += r * r * (2 * s.dim) * s.dim
        hw, C = r * r, s.dim
        macs += s.layers * (4 * hw * C * C + 2 * window**2 * hw * C + 8 * hw * C * C)
    return macs + stages[-1].dim * 1000


@pytest.mark.parametrize(("name", "arch", "window", "size"),
                         [("swin_t", "swin_t", 7, 224), ("swin_b_384", "swin_b", 12, 384)])
def test_macs_follow_eq2_with_attention_counted(name, arch, window, size):
    expected = eq2_macs(arch, window, size)
    assert profile(name).macs == expected  # meta device, fused attention (SDPA)
    if name == "swin_t":
        assert profile(name, fused_attn=False).macs == expected  # explicit matmuls


def test_macs_of_a_real_cpu_model_count_attention():
    """On CPU, SDPA runs the fused CPU kernel that flop_counter does not know by itself."""
    model = vz.create_model("swin_t").eval()
    assert profile(model).macs == eq2_macs("swin_t", 7, 224)


def test_info_prints_table7():
    text = format_info("swin_t")
    assert re.search(r"stage1 \(4x\)\s+56x56\s+96\s+concat 4x4, 96-d, LN; "
                     r"\[win\. sz\. 7x7, dim 96, head 3\] x2", text)
    assert re.search(r"stage2 \(8x\)\s+28x28\s+192\s+concat 2x2, 192-d, LN; "
                     r"\[win\. sz\. 7x7, dim 192, head 6\] x2", text)
    assert re.search(r"stage3 \(16x\)\s+14x14\s+384\s+concat 2x2, 384-d, LN; "
                     r"\[win\. sz\. 7x7, dim 384, head 12\] x6", text)
    assert re.search(r"stage4 \(32x\)\s+7x7\s+768\s+concat 2x2, 768-d, LN; "
                     r"\[win\. sz\. 7x7, dim 768, head 24\] x2", text)
    with torch.device("meta"):
        rows = vz.create_model("swin_b_384").stage_specs()
    assert rows[3].layers == "concat 2x2, 1024-d, LN; [win. sz. 12x12, dim 1024, head 32] x2"


def test_stochastic_depth_grows_linearly_to_the_configured_rate():
    with torch.device("meta"):
        model = vz.create_model("swin_s")
    probs = [getattr(b.drop_path, "drop_prob", 0.0) for s in model.stages for b in s.blocks]
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.3) and len(probs) == 24
    assert all(b > a for a, b in zip(probs, probs[1:], strict=False))


def test_no_weight_decay_names_the_bias_tables():
    with torch.device("meta"):
        model = vz.create_model("swin_t")
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert len(names) == sum(s.layers for s in ARCHS["swin_t"])
    assert all(n in params and n.endswith("relative_position_bias_table") for n in names)
    assert all(params[n].shape == (13 * 13, params[n].shape[1]) for n in names)


# ---------------------------------------------------------------------------------------------
# shifted windows and attention paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("H", "W", "M"), [(14, 14, 7), (24, 36, 12), (14, 21, 7)])
def test_shift_mask_blocks_exactly_the_wrapped_pairs(H, W, M):
    """Fig. 4: after the cyclic shift a window may hold tokens that were not neighbours; they
    must not attend to each other. Ground truth from the unshifted coordinates."""
    s = M // 2
    mask = shift_mask(H, W, M, M, s, s)  # (nW, N, N)
    # original (unshifted) coordinates of each token of each window, window-major
    r = (torch.arange(H)[:, None].expand(H, W) + s) % H
    c = (torch.arange(W)[None, :].expand(H, W) + s) % W
    r = r.view(H // M, M, W // M, M).permute(0, 2, 1, 3).reshape(-1, M * M)  # (nW, N)
    c = c.view(H // M, M, W // M, M).permute(0, 2, 1, 3).reshape(-1, M * M)
    together = (((r[:, :, None] - r[:, None, :]).abs() < M)
                & ((c[:, :, None] - c[:, None, :]).abs() < M))  # (nW, N, N)
    assert torch.equal(mask == 0, together)
    assert (mask != 0).any()  # the last window row/column does mix regions


def test_sdpa_equals_explicit_softmax_module_level():
    attn = WindowAttention(64, 4, 7)
    torch.nn.init.normal_(attn.relative_position_bias_table)
    x = image(2 * 4, 49, 64)  # 2 images x 4 windows
    mask = shift_mask(14, 14, 7, 7, 3, 3)
    fused = attn(x, (7, 7), mask)
    attn.fused = False
    explicit = attn(x, (7, 7), mask)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


def test_sdpa_equals_explicit_whole_model_forward_and_backward():
    """A size that pads, shifts and shrinks (72 x 100: maps 18x25, 9x13, 5x7, 3x4)."""
    torch.manual_seed(0)
    fused = vz.create_model("swin_t", drop_path_rate=0.0)
    explicit = vz.create_model("swin_t", drop_path_rate=0.0, fused_attn=False)
    explicit.load_state_dict(fused.state_dict())
    assert all(not m.fused for m in explicit.modules() if isinstance(m, WindowAttention))
    x = image(2, 3, 72, 100)
    grads = []
    for model in (fused, explicit):
        xi = x.clone().requires_grad_(True)
        out = model.train()(xi)
        out.square().mean().backward()
        grads.append((out.detach(), xi.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)
    for (n, p), q in zip(fused.named_parameters(), explicit.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=n)


# ---------------------------------------------------------------------------------------------
# any input size
# ---------------------------------------------------------------------------------------------


def test_padding_matches_the_authors_at_sizes_off_the_window_grid(tv_swin_t):
    """256 x 288: maps 64x72, 32x36, 16x18, 8x9, none a multiple of 7. torchvision pads as the
    authors' detection backbone does (after LN, before the shift, padding unmasked)."""
    ref, ours = tv_swin_t
    assert max_logit_diff(ours, ref, image(1, 3, 256, 288)) <= 1e-4


def test_windows_shrink_as_the_authors_build_them():
    """timm, like the authors, builds a model for 56 x 56 with the windows of stages 3-4 shrunk
    to their maps (4x4 and 2x2, no shift) and smaller bias tables. Our swin_t shrinks at run time
    and reads the centre of its 13 x 13 table: with timm's tables there, the logits agree."""
    ref = timm_ref("swin_tiny_patch4_window7_224", seed=7, img_size=56)
    shrunk = ref.layers[2].blocks[1]
    assert shrunk.window_size == (4, 4) and shrunk.shift_size == (0, 0)
    sd = convert_timm(ref.state_dict())
    for k, v in sd.items():
        if k.endswith("relative_position_bias_table") and v.shape[0] != 13 * 13:
            side, heads = math.isqrt(v.shape[0]), v.shape[1]
            full = torch.randn(13, 13, heads)  # offsets a shrunk window never uses: random
            o = (13 - side) // 2
            full[o:o + side, o:o + side] = v.view(side, side, heads)
            sd[k] = full.view(13 * 13, heads)
    ours = vz.create_model("swin_t")
    ours.load_state_dict(sd)
    assert max_logit_diff(ours, ref, image(2, 3, 56, 56)) <= 1e-4


def test_block_window_and_shift_per_map_size():
    block = SwinBlock(32, 2, window_size=7, shift=3)
    assert block.windows_for(56, 56) == (7, 7, 3, 3)
    assert block.windows_for(7, 7) == (7, 7, 0, 0)  # map = window: one window, no shift
    assert block.windows_for(4, 10) == (4, 7, 0, 3)


@pytest.fixture(scope="module")
def swin_t7():
    torch.manual_seed(0)
    return vz.create_model("swin_t", num_classes=7).eval()


@pytest.mark.parametrize(("H", "W"), [(225, 225), (97, 131), (1, 1)])
def test_any_input_size_gives_logits(swin_t7, H, W):
    """Patch partition pads to multiples of 4 (as the authors' detection backbone): the same
    logits as the zero-padded image; merging pads odd sides, so 1 x 1 is one patch, then 1 x 1
    maps (57 x 57 -> 29 -> 15 -> 8; 25 x 33 -> 13 x 17 -> 7 x 9 -> 4 x 5)."""
    x = image(2, 3, H, W)
    padded = torch.nn.functional.pad(x, (0, (-W) % 4, 0, (-H) % 4))
    with torch.no_grad():
        out = swin_t7(x)
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        torch.testing.assert_close(out, swin_t7(padded), rtol=0, atol=1e-6)
        feats = swin_t7.forward_features(x)
    assert feats.shape[2:] == swin_t7.feature_size((H, W)) == (-(-H // 32), -(-W // 32))


def test_min_input_size_and_wrong_channels(swin_t7):
    assert vz.model_info("swin_t").min_input_size == swin_t7.min_input_size() == 4
    assert swin_t7.pretrained_cfg["min_input_size"] == (3, 4, 4)
    assert swin_t7.pretrained_cfg["fixed_input_size"] is False
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\).*got .* \(1, 4, 8, 8\)"):
        swin_t7(image(1, 4, 8, 8))


@pytest.mark.parametrize(("name", "size"), [("swin_t", 224), ("swin_b_384", 384)])
def test_pretrained_cfg_pool_size_is_the_feature_map(name, size):
    with torch.device("meta"):
        model = vz.create_model(name).eval()
        feats = model.forward_features(torch.empty(1, 3, size, size))
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, size, size)
    assert cfg["pool_size"] == tuple(feats.shape[2:]) == (size // 32, size // 32)
    assert cfg["first_conv"] == "patch_embed.proj" and cfg["classifier"] == "head.fc"


def test_features_only_nchw_maps():
    """features_only gives the raw stage maps, as timm's (forward_intermediates, norm=False);
    forward_features is the last one after the final LayerNorm."""
    backbone = vz.create_model("swin_t", features_only=True).eval()
    assert [f["reduction"] for f in backbone.feature_info] == [4, 8, 16, 32]
    assert [f["channels"] for f in backbone.feature_info] == [96, 192, 384, 768]
    assert [f["module"] for f in backbone.feature_info] == [f"stages.{i}" for i in range(4)]
    x = image(1, 3, 64, 96)
    with torch.no_grad():
        maps = backbone(x)
        last = backbone.model.forward_features(x)
    assert [tuple(m.shape) for m in maps] == [(1, 96, 16, 24), (1, 192, 8, 12),
                                              (1, 384, 4, 6), (1, 768, 2, 3)]
    torch.testing.assert_close(backbone.model.final_norm(maps[-1]), last, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# timm's contract: forward_intermediates, pruning, head, checkpointing
# ---------------------------------------------------------------------------------------------


def test_forward_intermediates_semantics(swin_t7):
    x = image(2, 3, 64, 64)
    with torch.no_grad():
        final, maps = swin_t7.forward_intermediates(x)
        assert torch.equal(final, swin_t7.forward_features(x))  # normed last map, NCHW
        assert [tuple(m.shape) for m in maps] == [(2, 96, 16, 16), (2, 192, 8, 8),
                                                  (2, 384, 4, 4), (2, 768, 2, 2)]
        assert torch.equal(swin_t7.final_norm(maps[3]), final)  # maps are the raw outputs
        # an int takes the last n; a list those positions, negative from the end
        last2 = swin_t7.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last2, maps[2:], strict=True))
        picked = swin_t7.forward_intermediates(x, indices=[0, -2], intermediates_only=True)
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[2])
        # norm=True: the final LayerNorm on the last stage's map, only there
        normed = swin_t7.forward_intermediates(x, norm=True, intermediates_only=True)
        assert torch.equal(normed[3], final)
        assert all(torch.equal(a, b) for a, b in zip(normed[:3], maps[:3], strict=True))
        early = swin_t7.forward_intermediates(x, indices=[1], norm=True, intermediates_only=True)
        assert len(early) == 1 and torch.equal(early[0], maps[1])
        # stop_early: the final output is the last map asked for, raw
        stopped, got = swin_t7.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert torch.equal(stopped, maps[1]) and len(got) == 2
        full, _ = swin_t7.forward_intermediates(x, indices=[3], stop_early=True)
        assert torch.equal(full, final)
        # channels-last maps
        _, nhwc = swin_t7.forward_intermediates(x, norm=True, output_fmt="NHWC")
    assert torch.equal(nhwc[0], maps[0].permute(0, 2, 3, 1))
    assert torch.equal(nhwc[3], final.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="out of range"):
        swin_t7.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match="output_fmt"):
        swin_t7.forward_intermediates(x, output_fmt="NLC")


def test_prune_intermediate_layers():
    torch.manual_seed(0)
    full = vz.create_model("swin_t").eval()
    x = image(1, 3, 64, 64)
    with torch.no_grad():
        maps = full.forward_intermediates(x, intermediates_only=True)
        final = full.forward_features(x)
    model = copy.deepcopy(full)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert isinstance(model.stages[2], torch.nn.Identity)
    assert isinstance(model.stages[3], torch.nn.Identity)
    assert isinstance(model.head, torch.nn.Identity) and model.num_classes == 0
    assert len(model.feature_info) == 2
    assert isinstance(model.norm, torch.nn.LayerNorm)  # prune_norm=False keeps it (unused)
    with torch.no_grad():
        kept = model.forward_intermediates(x, intermediates_only=True)
        assert torch.equal(model.forward_features(x), maps[1])  # no norm of stage 2's width
        assert torch.equal(model(x), maps[1])  # no head
    assert all(torch.equal(a, b) for a, b in zip(kept, maps[:2], strict=True))
    # keeping the last stage keeps the final LayerNorm, unless prune_norm
    model = copy.deepcopy(full)
    assert model.prune_intermediate_layers([-1], prune_head=False) == [3]
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), final)
    model.prune_intermediate_layers(1, prune_norm=True)  # an int: the last n
    assert isinstance(model.norm, torch.nn.Identity)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), maps[3])


def test_head_global_pool_and_reset_classifier():
    torch.manual_seed(0)
    model = vz.create_model("swin_t", global_pool="max").eval()
    assert model.global_pool == "max" and model.head_hidden_size == model.num_features == 768
    x = image(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True),
                                   feats.amax((2, 3)), rtol=0, atol=0)
        model.reset_classifier(0, "")
        assert model.num_classes == 0 and model.global_pool == ""
        assert torch.equal(model(x), feats)  # no pool, no classifier: the map
        model.reset_classifier(5, "avg")
        assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
    assert model.pretrained_cfg["num_classes"] == 5


def test_grad_checkpointing_gives_equal_gradients():
    torch.manual_seed(0)
    model = vz.create_model("swin_t", num_classes=7, drop_path_rate=0.0).train()
    x = image(2, 3, 48, 40)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=n)


# ---------------------------------------------------------------------------------------------
# tracing: torch.fx, feature extraction, torch.export, TorchScript, torch.compile
# ---------------------------------------------------------------------------------------------


def test_fx_trace_serves_every_input_size(swin_t7):
    """Size-dependent Python (padding, windows, shift masks) lives in fx-wrapped functions: one
    graph traced without an input gives exactly the eager logits at any size."""
    graph = torch.fx.symbolic_trace(swin_t7)
    targets = {n.target for n in graph.graph.nodes if n.op == "call_function"}
    assert shifted_window_attention in targets and pad_to_multiple in targets
    with torch.no_grad():
        for H, W in [(64, 64), (97, 131), (225, 225), (1, 1)]:
            x = image(2, 3, H, W)
            assert torch.equal(graph(x), swin_t7(x)), (H, W)


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing:UserWarning")
def test_create_feature_extractor_on_feature_info_modules(swin_t7):
    nodes = [f["module"] for f in swin_t7.feature_info]
    _, eval_nodes = get_graph_node_names(swin_t7)  # a module's nodes: "stages.0.<op>"
    assert all(any(n.startswith(m + ".") for n in eval_nodes) for m in nodes)
    extractor = create_feature_extractor(swin_t7, return_nodes={n: n for n in nodes})
    with torch.no_grad():
        for H, W in [(64, 64), (50, 70)]:
            x = image(2, 3, H, W)
            out = extractor(x)
            maps = swin_t7.forward_intermediates(x, intermediates_only=True)
            assert list(out) == nodes
            assert all(torch.equal(out[n], m) for n, m in zip(nodes, maps, strict=True))


def test_export_with_a_dynamic_batch(swin_t7):
    x = image(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(swin_t7, (x,), dynamic_shapes=({0: batch},), strict=True)
    exported = program.module()
    with torch.no_grad():
        for n in (1, 3):
            xb = image(n, 3, 32, 32, seed=n)
            torch.testing.assert_close(exported(xb), swin_t7(xb), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # sizes baked in, as it says
@pytest.mark.filterwarnings("ignore:.*torch.jit.trace.* is deprecated:FutureWarning")
def test_jit_trace_and_compile_fullgraph(swin_t7):
    x = image(2, 3, 32, 32)
    with torch.no_grad():
        ref = swin_t7(x)
        traced = torch.jit.trace(swin_t7, x)
        torch.testing.assert_close(traced(x), ref, rtol=0, atol=1e-5)
        torch._dynamo.reset()
        compiled = torch.compile(swin_t7, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), ref, rtol=0, atol=1e-5)
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# 224 -> 384: bias tables resampled on load
# ---------------------------------------------------------------------------------------------


def test_resample_bias_table_layout():
    """Per-head planes of the (2M-1)^2 table are resized as images: a per-head constant stays
    constant, a table varying only with the row offset still does, offset (0, 0) is kept."""
    heads = 3
    dy = torch.arange(13.0)[:, None, None].expand(13, 13, heads)  # depends on the row offset
    table = (dy * torch.tensor([1.0, -2.0, 0.5]) + torch.tensor([0.0, 10.0, -5.0]))
    new = resample_relative_position_bias(table.reshape(169, heads), 12).view(23, 23, heads)
    assert torch.allclose(new, new[:, :1, :].expand_as(new), atol=1e-5)  # still only dy
    torch.testing.assert_close(new[11, 11], table[6, 6])  # the centre: zero offset
    const = torch.tensor([1.0, 2.0, 3.0]).expand(169, heads)
    torch.testing.assert_close(resample_relative_position_bias(const, 12),
                               torch.tensor([1.0, 2.0, 3.0]).expand(529, heads))


def test_window7_weights_load_into_a_window12_model(timm_swin_t, tmp_path):
    ref, ours7 = timm_swin_t
    sd = ref.state_dict()
    m12 = vz.create_model("swin_t", window_size=12)
    vz.port("timm", "swin_tiny_patch4_window7_224", sd, model=m12)  # through port()
    own7, own12 = ours7.state_dict(), m12.state_dict()
    for k, v in own12.items():
        if k.endswith("relative_position_bias_table"):
            assert v.shape == (23 * 23, own7[k].shape[1])
            torch.testing.assert_close(v, resample_relative_position_bias(own7[k], 12))
        else:
            assert torch.equal(v, own7[k]), k
    # ... through create_model(pretrained=<file>) and plain load_state_dict
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(sd, path)
    m12b = vz.create_model("swin_t", pretrained=path, window_size=12)
    m12c = vz.create_model("swin_t", window_size=12)
    m12c.load_state_dict(own7)
    for other in (m12b, m12c):
        assert all(torch.equal(a, b) for a, b in zip(own12.values(), other.state_dict().values(),
                                                       strict=True))
    with torch.no_grad():  # a model built for 224 runs at 384 (maps 96, 48, 24, 12)
        out = m12.eval()(image(1, 3, 384, 384))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def test_onnx_export_swin_t(tmp_path):
    from visionzoo.export import export_onnx, onnx_max_abs_diff

    torch.manual_seed(0)
    model = vz.create_model("swin_t").eval()
    path = export_onnx(model, tmp_path / "swin_t.onnx", (3, 224, 224), dynamic_batch=True)
    for batch in (1, 2):
        assert onnx_max_abs_diff(model, path, image(batch, 3, 224, 224)) <= 1e-4
