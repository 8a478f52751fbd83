"""The engine's parts: weight-decay groups, learning-rate schedules, TF-style RMSprop, EMA,
optimizer state without pickle, and the stop on a non-finite loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import visionzoo as vz
from test_data import write_fashion_mnist
from visionzoo.checkpoint import read_header
from visionzoo.data.datasets import ArraySplit, EpochSampler, open_dataset
from visionzoo.engine import TrainingDiverged, train
from visionzoo.optim import ModelEma, RMSpropTF, build_optimizer, lr_at, param_groups
from visionzoo.recipes import resolve_config
from visionzoo.train_state import pack_optimizer, unpack_optimizer

# ---------------------------------------------------------------------------------------------
# weight decay groups
# ---------------------------------------------------------------------------------------------


class _WithTables(nn.Module):
    """A model that lists parameters which must not decay (as Swin's bias tables)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.block = nn.Module()
        self.block.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 4))
        self.fc = nn.Linear(4, 2)

    def no_weight_decay(self) -> set[str]:
        return {"relative_position_bias_table", "pos_embed"}


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_no_weight_decay_on_norms_biases_and_listed_names() -> None:
    m = _WithTables()
    decay, no_decay = param_groups(m, 0.05)
    assert _names(m, decay) == {"conv.weight", "fc.weight"} and decay["weight_decay"] == 0.05
    assert _names(m, no_decay) == {"conv.bias", "norm.weight", "norm.bias", "fc.bias",
                                   "block.relative_position_bias_table", "pos_embed"}
    assert no_decay["weight_decay"] == 0.0
    (everything,) = param_groups(m, 0.05, decay_norm_bias=True)
    assert len(everything["params"]) == len(list(m.parameters()))


def test_resnet_groups_cover_every_parameter_once() -> None:
    m = vz.create_model("resnet20", num_classes=10)
    groups = param_groups(m, 1e-4)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in m.parameters())
    assert all(p.ndim > 1 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"])


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------


def test_resnet_paper_schedule_divides_by_ten_at_30_and_60() -> None:
    cfg = resolve_config("resnet")
    spe = 100  # steps per epoch
    assert lr_at(cfg, 0, spe) == pytest.approx(0.1)
    assert lr_at(cfg, 30 * spe - 1, spe) == pytest.approx(0.1)
    assert lr_at(cfg, 30 * spe, spe) == pytest.approx(0.01)
    assert lr_at(cfg, 60 * spe, spe) == pytest.approx(0.001)
    assert lr_at(cfg, 90 * spe - 1, spe) == pytest.approx(0.001)
    small = resolve_config("resnet", {"batch_size": 64})  # linear scaling to the batch
    assert lr_at(small, 0, spe) == pytest.approx(0.025)


def test_warmup_then_cosine() -> None:
    cfg = resolve_config("swin", {"batch_size": 1024})
    spe = 10
    assert lr_at(cfg, 0, spe) == pytest.approx(1e-6)  # warm-up start
    assert lr_at(cfg, 10 * spe, spe) == pytest.approx((1e-6 + 1e-3) / 2)  # half-way
    assert lr_at(cfg, 20 * spe, spe) == pytest.approx(1e-3)  # peak after 20 epochs
    mid = 20 + (300 - 20) / 2
    assert lr_at(cfg, int(mid * spe), spe) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(cfg, 300 * spe, spe) == pytest.approx(1e-5)
    lrs = [lr_at(cfg, s, spe) for s in range(20 * spe, 300 * spe, 97)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone after warm-up


def test_efficientnet_staircase_decay() -> None:
    cfg = resolve_config("efficientnet", {"warmup_epochs": 0})
    spe = 10
    assert lr_at(cfg, 23, spe) == pytest.approx(0.256)  # epoch 2.3 < 2.4
    assert lr_at(cfg, 24, spe) == pytest.approx(0.256 * 0.97)
    assert lr_at(cfg, 49, spe) == pytest.approx(0.256 * 0.97 ** 2)


# ---------------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------------


def test_rmsprop_tf_follows_tensorflow_update() -> None:
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([w], lr=0.1, decay=0.9, momentum=0.9, eps=1.0, weight_decay=0.01)
    ms, mom, ref = torch.ones(2), torch.zeros(2), w.detach().clone()
    for g in (torch.tensor([0.5, 1.5]), torch.tensor([-1.0, 0.25])):
        w.grad = g.clone()
        opt.step()
        g = g + 0.01 * ref  # L2 term, as TF's regularization loss
        ms = 0.9 * ms + 0.1 * g * g  # square average starts at one
        mom = 0.9 * mom + 0.1 * g / torch.sqrt(ms + 1.0)  # eps inside the root
        ref = ref - mom
        assert torch.allclose(w.detach(), ref, atol=1e-7)


@pytest.mark.parametrize("opt", ["sgd", "adamw", "rmsprop", "rmsprop_tf"])
def test_optimizer_state_round_trips_without_pickle(opt: str) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    cfg = resolve_config(None, {"opt": opt, "lr": 0.01})
    a = build_optimizer(m, cfg)
    for _ in range(2):
        a.zero_grad()
        m(torch.randn(5, 3)).square().mean().backward()
        a.step()
    meta, tensors = pack_optimizer(a)
    import json

    json.dumps(meta)  # everything that is not a tensor is JSON
    b = build_optimizer(m, cfg)
    b.load_state_dict(unpack_optimizer(json.loads(json.dumps(meta)), tensors))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for pid, st in sa["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["state"][pid][k]))


def test_ema_average_and_warmup() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEma(m, decay=0.999)
    start = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
        m[1].num_batches_tracked.fill_(7)
    ema.update(m)
    d = min(0.999, 2 / 11)  # (1 + n) / (10 + n) after one update
    assert torch.allclose(ema.module[0].weight, d * start + (1 - d) * (start + 1))
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())


# ---------------------------------------------------------------------------------------------
# non-finite loss
# ---------------------------------------------------------------------------------------------


class _NaNAt(ArraySplit):
    """A training split whose image ``bad`` is all NaN (a broken preprocessing step)."""

    def __init__(self, images: torch.Tensor, labels: list[int], bad: int):
        super().__init__(images, labels)
        self.bad = bad

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = super().load(index)
        if index == self.bad:
            return torch.full(img.shape, float("nan")), label
        return img, label


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    src = open_dataset(str(write_fashion_mnist(tmp_path / "fashion-mnist", 64, 16)))
    batch, bad_step = 8, 5  # the NaN image is in the 5th batch of the first epoch
    order = [i for i, _ in EpochSampler(64, seed=0)]
    train_split = src.splits["train"]
    src.splits["train"] = _NaNAt(train_split.images, train_split.labels,
                                 bad=order[(bad_step - 1) * batch])
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="last good checkpoint") as e:
        train("resnet20", src, overrides={"batch_size": batch, "epochs": 2, "workers": 0,
                                          "checkpoint_every": 1, "progress": "off"}, out=out)
    assert f"step {bad_step}" in str(e.value) and "nan" in str(e.value)
    state = read_header(out / "last.safetensors")["extra"]["train_state"]
    assert (state["epoch"], state["step"]) == (0, bad_step - 1)
    weights = vz.load_checkpoint(out / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.state_dict().values()
               if t.is_floating_point())
    import json

    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    assert not (out / "model.safetensors").exists()



# ---------------------------------------------------------------------------------------------
# evaluation with flip test-time augmentation
# ---------------------------------------------------------------------------------------------


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror() -> None:
    from visionzoo.engine import evaluate_loader

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4, 3))
    x, y = torch.randn(6, 2, 3, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    loader = [(x, y, [])]
    with torch.no_grad():
        mean = (net(x) + net(x.flip(-1))) / 2
    ref = torch.nn.functional.cross_entropy(mean, y).item()
    res = evaluate_loader(net, loader, num_classes=3, hflip_tta=True)
    assert res["loss"] == pytest.approx(ref, rel=1e-5)
    assert res["top1"] == pytest.approx((mean.argmax(1) == y).double().mean().item())
    plain = evaluate_loader(net, loader, num_classes=3)
    assert plain["loss"] != pytest.approx(ref, rel=1e-5)
