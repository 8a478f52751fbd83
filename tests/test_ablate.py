"""`visionzoo ablate`: the verdict logic on synthetic runs, the shared data subset, and every
ready paper end to end at the smoke budget (on a small synthetic Fashion-MNIST)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from test_data import write_fashion_mnist
from visionzoo import ablate
from visionzoo.ablate import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, verdict
from visionzoo.cli import main


def test_verdicts_on_synthetic_runs() -> None:
    # a clear win: the paper's direction, far beyond two standard errors
    v, diff, se = verdict([0.91, 0.92, 0.915], [0.85, 0.86, 0.855])
    assert v == REPRODUCED and diff == pytest.approx(0.06) and 0 < 2 * se < diff
    # a clear loss: the opposite direction beyond two standard errors
    assert verdict([0.80, 0.81, 0.805], [0.90, 0.91, 0.905])[0] == NOT_REPRODUCED
    # overlapping seeds: the right direction but within the noise
    assert verdict([0.90, 0.86, 0.93], [0.89, 0.87, 0.90])[0] == INCONCLUSIVE
    # one seed cannot tell
    v, _, se = verdict([0.99], [0.10])
    assert v == INCONCLUSIVE and se != se  # nan
    # exactly at the threshold is not enough
    better, worse = [0.5, 0.7], [0.4, 0.6]  # diff 0.1, se = sqrt(0.02/2 + 0.02/2) = 0.1414
    assert verdict(better, worse)[0] == INCONCLUSIVE
    with pytest.raises(ValueError, match="at least one run"):
        verdict([], [0.5])


def test_the_subset_is_stratified_and_the_same_for_every_arm() -> None:
    labels = [i % 10 for i in range(1000)]
    a = ablate._subset_indices(labels, 100)
    assert a == ablate._subset_indices(labels, 100) and len(set(a)) == 100
    assert sorted({labels[i] for i in a}) == list(range(10))
    assert all(sum(labels[i] == c for i in a) == 10 for c in range(10))
    assert ablate._subset_indices(labels, None) == list(range(1000))


def test_list_and_errors(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["ablate", "--list"]) == 0
    out = capsys.readouterr().out
    for key in ("resnet", "senet", "mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "swin",
                "vgg", "densenet", "efficientnet"):
        assert key in out
    assert main(["ablate", "alexnet"]) == 1
    assert "unknown paper 'alexnet'" in capsys.readouterr().err
    monkeypatch.setitem(ablate.ABLATIONS, "lenet", ablate._pending("lenet", "LeNet", "Fig. 1",
                                                                   "needs a LeNet"))
    assert main(["ablate", "lenet", "--budget", "smoke"]) == 1
    assert "cannot run yet: needs a LeNet" in capsys.readouterr().err
    assert main(["ablate", "senet", "--seeds", "0"]) == 1
    assert "--seeds must be at least 1" in capsys.readouterr().err


READY = [a.key for a in ablate.list_ablations() if not a.pending]


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("abl") / "fashion-mnist", 96, 64)


@pytest.mark.parametrize("paper", READY)
def test_each_ready_paper_runs_end_to_end_at_smoke(paper: str, fmnist: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / paper
    assert main(["ablate", paper, "--data", str(fmnist), "--budget", "smoke", "--seeds", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ab = ablate.ABLATIONS[paper]
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 2 * len(ab.arms)
    assert {r["variant"] for r in rows} == {a.label for a in ab.arms}
    assert all(0 <= float(r["final_top1"]) <= 1 and int(r["params"]) > 0 for r in rows)
    md = (out / "ablation.md").read_text()
    for arm in ab.arms:
        assert f"| {arm.label} |" in md
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["claims"]) == len(ab.claims)
    for c in summary["claims"]:
        assert c["verdict"] in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
        assert f"{c['claim']}: {c['verdict']}" in printed
    assert (out / "ablation.png").stat().st_size > 10_000
    # the arms differ only by their flags: params differ where the flag removes parameters
    by = {a["label"]: a for a in summary["arms"]}
    assert all(by[a.label]["model"] == a.model for a in ab.arms)


def test_efficientnet_arms_follow_the_compound_rule_at_matched_macs() -> None:
    """Fig. 8's protocol: the compound arm is the paper's rule (Eq. 3, phi = 1) applied to the
    small base, and each one-dimension arm costs the same MACs as it (within 5 %), measured."""
    from visionzoo.models.efficientnet import ALPHA, BETA, GAMMA

    ab = ablate.ABLATIONS["efficientnet"]
    base, compound, depth, width, res = ab.arms
    w0, d0, r0 = ablate.BASE_EFFICIENTNET
    assert (base.args["width"], base.args["depth"], base.img_size) == (w0, d0, r0)
    assert compound.args["width"] == pytest.approx(w0 * BETA, abs=1e-3)
    assert compound.args["depth"] == pytest.approx(d0 * ALPHA, abs=1e-3)
    assert compound.img_size == round(r0 * GAMMA)
    # one dimension each: the other two stay at the base's
    assert (depth.args["width"], depth.img_size) == (w0, r0) and depth.args["depth"] > d0
    assert (width.args["depth"], width.img_size) == (d0, r0) and width.args["width"] > w0
    assert (res.args["width"], res.args["depth"]) == (w0, d0) and res.img_size > r0
    # the short-schedule settings are the same for every arm
    fit = ("bn_momentum", "drop_rate", "drop_path_rate")
    assert len({tuple(a.args[k] for k in fit) for a in ab.arms}) == 1

    def macs(arm: ablate.Arm) -> int:  # as ablation.md reports them
        return ablate._measure(arm, 10, 1, arm.img_size)[1]

    target = macs(compound)
    assert 2.0 < target / macs(base) < 2.6  # (alpha * beta^2 * gamma^2) ~ 2 per unit of phi
    for arm in (depth, width, res):
        assert abs(macs(arm) / target - 1) < 0.05, arm.label
