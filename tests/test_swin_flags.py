"""Swin Transformer's Table 4 ablation switches: ``shift`` ("w/o shifting") and ``rel_pos_bias``
("no pos."). Each changes exactly the module it names, trains, traces, survives a checkpoint, and
pretrained weights with bias tables are refused by a model without them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionzoo as vz
import visionzoo.models.swin as swin
from visionzoo.models.swin import SwinBlock, WindowAttention
from visionzoo.ports import PortError, load_strict
from visionzoo.registry import InvalidArgumentError, builder

TABLE = "relative_position_bias_table"
FLAGS = [{"shift": False}, {"rel_pos_bias": False}, {"shift": False, "rel_pos_bias": False}]


def image(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def table_keys(sd: dict) -> set[str]:
    return {k for k in sd if k.endswith(TABLE)}


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def default_sd() -> dict[str, torch.Tensor]:
    """Weights of the paper's swin_t (random init, bias tables non-zero)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in vz.create_model("swin_t").state_dict().items()}


def without_tables(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.endswith(TABLE)}


# ---------------------------------------------------------------------------------------------
# construction, defaults, training
# ---------------------------------------------------------------------------------------------


def test_defaults_are_the_paper_and_flags_are_attributes():
    model = vz.create_model("swin_t")
    assert model.shift is True and model.rel_pos_bias is True
    shifts = [b.shift for s in model.stages for b in s.blocks]
    assert shifts == [0, 3] * (len(shifts) // 2)  # W-MSA, SW-MSA alternating (Fig. 3(b))
    off = vz.create_model("swin_t", shift=False, rel_pos_bias=False)
    assert off.shift is False and off.rel_pos_bias is False
    assert off.model_config["shift"] is False and off.model_config["rel_pos_bias"] is False
    with pytest.raises(InvalidArgumentError, match="shift must be bool"):
        vz.create_model("swin_t", shift="no")


@pytest.mark.parametrize("name", vz.list_models("swin*"))
def test_every_builder_takes_the_flags(name):
    with torch.device("meta"):
        default = builder(name)()
        off = builder(name)(shift=False, rel_pos_bias=False)
    assert (off.shift, off.rel_pos_bias) == (False, False)
    assert all(b.shift == 0 for b in off.modules() if isinstance(b, SwinBlock))
    tables = sum(m.relative_position_bias_table.numel() for m in default.modules()
                 if isinstance(m, WindowAttention))
    expected = sum((2 * m.window_size - 1) ** 2 * m.num_heads for m in default.modules()
                   if isinstance(m, WindowAttention))
    assert tables == expected
    n_default = sum(p.numel() for p in default.parameters())
    assert n_default == vz.model_info(name).num_params
    assert sum(p.numel() for p in off.parameters()) == n_default - expected


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_flag_builds_and_trains(flags):
    torch.manual_seed(0)
    model = vz.create_model("swin_t", num_classes=10, **flags).train()
    x, y = image(2, 3, 32, 32), torch.tensor([1, 7])  # stage 1 is 8 x 8: shifted by default
    assert torch.isfinite(model(x)).all()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before["head.fc.weight"], model.head.fc.weight)
    assert not torch.equal(before["stages.0.blocks.1.attn.qkv.weight"],
                           model.stages[0].blocks[1].attn.qkv.weight)


# ---------------------------------------------------------------------------------------------
# shift=False: parameter-free, W-MSA everywhere
# ---------------------------------------------------------------------------------------------


def test_shift_false_changes_no_parameter_but_the_output(default_sd):
    ours = vz.create_model("swin_t", shift=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in default_sd.items()}
    ours.load_state_dict(default_sd)
    paper = vz.create_model("swin_t")
    paper.load_state_dict(default_sd)
    # 32 x 32: stage 1 is 8 x 8 > M = 7, so SW-MSA shifts there
    x = image(2, 3, 32, 32)
    assert (logits(paper, x) - logits(ours, x)).abs().max() > 1e-3
    # 28 x 28: the maps are 7, 4, 2, 1; a side no larger than M is never shifted (the authors'
    # rule), so the two layouts are the same function there
    x = image(2, 3, 28, 28)
    assert torch.equal(logits(paper, x), logits(ours, x))


def test_shift_false_computes_no_mask_and_is_w_msa_everywhere(default_sd, monkeypatch):
    ours = vz.create_model("swin_t", shift=False)
    ours.load_state_dict(default_sd)
    assert all(b.shift == 0 for s in ours.stages for b in s.blocks)
    # the manual computation: the paper's model with every block's shift set to 0 by hand
    manual = vz.create_model("swin_t")
    manual.load_state_dict(default_sd)
    for s in manual.stages:
        for b in s.blocks:
            b.shift = 0
    x = image(2, 3, 64, 64)
    expected = logits(manual, x)

    def no_mask(*args, **kwargs):
        raise AssertionError("shift_mask computed with shift=False")

    monkeypatch.setattr(swin, "shift_mask", no_mask)
    assert torch.equal(logits(ours, x), expected)
    paper = vz.create_model("swin_t")
    with pytest.raises(AssertionError, match="shift_mask computed"):  # the spy does catch it
        logits(paper, x)


# ---------------------------------------------------------------------------------------------
# rel_pos_bias=False: exactly the bias tables removed
# ---------------------------------------------------------------------------------------------


def test_rel_pos_bias_false_removes_exactly_the_tables(default_sd):
    ours = vz.create_model("swin_t", rel_pos_bias=False)
    sd = ours.state_dict()
    assert set(default_sd) - set(sd) == table_keys(default_sd)
    assert len(table_keys(default_sd)) == 12  # one per block of Swin-T (2 + 2 + 6 + 2)
    assert set(sd) <= set(default_sd)
    assert all(sd[k].shape == default_sd[k].shape for k in sd)
    # the index buffer is not in any state dict (recomputed), and absent from this model
    assert not any("relative_position_index" in k for k in default_sd)
    assert not any("relative_position_index" in n for n, _ in ours.named_buffers())
    assert not any(n.endswith(TABLE) for n, _ in ours.named_parameters())
    assert not ours.no_weight_decay()
    removed = sum(default_sd[k].numel() for k in table_keys(default_sd))
    assert removed == 169 * (2 * 3 + 2 * 6 + 6 * 12 + 2 * 24)  # (2M-1)^2 x heads per block
    assert sum(p.numel() for p in ours.parameters()) == 28_288_354 - removed == 28_265_032


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "explicit"])
def test_zeroed_tables_give_the_no_pos_model(default_sd, fused):
    """B is the only difference: with the tables zeroed the paper's model is the 'no pos.' one."""
    x = image(2, 3, 64, 64)  # 16 x 16 in stage 1: padded, shifted and masked windows
    ours = vz.create_model("swin_t", rel_pos_bias=False, fused_attn=fused)
    ours.load_state_dict(without_tables(default_sd))
    paper = vz.create_model("swin_t", fused_attn=fused)
    paper.load_state_dict(default_sd)
    assert (logits(paper, x) - logits(ours, x)).abs().max() > 1e-3  # the tables matter
    paper.load_state_dict({k: torch.zeros_like(v) if k.endswith(TABLE) else v
                           for k, v in default_sd.items()})
    torch.testing.assert_close(logits(ours, x), logits(paper, x), atol=1e-5, rtol=1e-5)


def test_no_pos_attention_paths_agree(default_sd):
    """The SDPA path (shift mask only, broadcast over heads) and the explicit softmax agree."""
    x = image(2, 3, 64, 64)
    fused = vz.create_model("swin_t", rel_pos_bias=False)
    explicit = vz.create_model("swin_t", rel_pos_bias=False, fused_attn=False)
    for m in (fused, explicit):
        m.load_state_dict(without_tables(default_sd))
    torch.testing.assert_close(logits(fused, x), logits(explicit, x), atol=1e-5, rtol=1e-5)


def test_weights_with_tables_are_refused_by_a_no_pos_model(default_sd, tmp_path):
    ours = vz.create_model("swin_t", rel_pos_bias=False)
    for strict in (True, False):  # an error even with strict=False, naming the flag
        with pytest.raises(RuntimeError, match="rel_pos_bias=False"):
            ours.load_state_dict(default_sd, strict=strict)
    with pytest.raises(PortError, match=r"12 unexpected \(e\.g\. .*relative_position_bias_table"):
        load_strict(ours, default_sd)
    # the port path (adapt_state_dict, then the strict loader): timm's layout is ours with
    # ``layers`` for ``stages``
    timm_sd = {k.replace("stages.", "layers.", 1): v for k, v in default_sd.items()}
    with pytest.raises(PortError, match="unexpected.*relative_position_bias_table"):
        vz.port("timm", "swin_tiny_patch4_window7_224", timm_sd, model=ours)
    paper = vz.port("timm", "swin_tiny_patch4_window7_224", timm_sd,
                    model=vz.create_model("swin_t"))
    assert torch.equal(paper.stages[0].blocks[0].attn.relative_position_bias_table,
                       default_sd[f"stages.0.blocks.0.attn.{TABLE}"])
    # create_model(pretrained=<a reference library's weights file>)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(timm_sd, path)
    with pytest.raises(PortError, match="relative_position_bias_table"):
        vz.create_model("swin_t", pretrained=path, rel_pos_bias=False)
    # deliberately dropping the tables is how the ablation starts from such weights
    ours.load_state_dict(without_tables(default_sd))


# ---------------------------------------------------------------------------------------------
# checkpoints and tracing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_flags_survive_a_checkpoint(flags, tmp_path):
    torch.manual_seed(0)
    model = vz.create_model("swin_t", **flags).eval()
    path = vz.save_checkpoint(model, tmp_path / "swin.safetensors")
    loaded = vz.load_checkpoint(path).eval()
    for k, v in flags.items():
        assert getattr(loaded, k) is v and loaded.model_config[k] is v
    assert set(loaded.state_dict()) == set(model.state_dict())
    x = image(2, 3, 32, 32)
    assert torch.equal(logits(loaded, x), logits(model, x))
    with pytest.raises(vz.CheckpointError, match="another configuration"):
        vz.load_checkpoint(path, model=vz.create_model("swin_t"))


def test_fx_symbolic_trace_with_both_flags_off(default_sd):
    model = vz.create_model("swin_t", shift=False, rel_pos_bias=False).eval()
    model.load_state_dict(without_tables(default_sd))
    gm = torch.fx.symbolic_trace(model)
    for size in (32, 64, 28):  # one graph serves every size (the window function is wrapped)
        x = image(2, 3, size, size)
        assert torch.equal(logits(gm, x), logits(model, x))
