"""The checks of ``visionzoo train`` / ``eval`` that need a GPU, one PASS/FAIL/SKIP line each.

    scripts/gpu_check.sh                          # a GPU machine: ResNet-50 at 224x224, < 5 min
    scripts/gpu_check.sh --device cpu --smoke     # the same steps, tiny, on a CPU (a dry run)

The data are class-coded random images held in memory: noise with a bright block whose position
is the label (learnable in a few dozen steps, no files, no network). Checks, in order:

  fp16     float16 autocast + GradScaler: the training loss falls (last epoch below the first
           and below chance, ln classes), no inf/NaN in losses or weights, the scaler state is
           in last.safetensors
  bf16     bfloat16 autocast + channels_last: the same, and no scaler in the checkpoint
  resume   the fp16 run stopped after epoch 1 (SIGINT, as Ctrl-C) and resumed on the device: it
           continues at epoch 2 with the saved loss scale and ends near the uninterrupted run
           (GPU kernels are not bit-reproducible, so "near": the distance between the two final
           weights relative to how far training moved them)
  ddp      with 2 GPUs (on a CPU: gloo): torchrun, NCCL, sync_bn; 2 processes x half the batch
           against 1 process with the whole batch, same relative distance
  eval     vz.evaluate of the bf16 checkpoint reproduces the run's top-1; img/s of evaluation
           (loader included) and of the bare model (channels_last, fp16 and bf16)
  compile  one bf16 epoch under torch.compile (skipped when under 2 minutes of the budget remain,
           and in --smoke unless --with-compile)

Exit status 0 when no check failed. The runs and a log per check stay in --out (default: a new
temporary folder, printed).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

import torch  # noqa: E402

import visionzoo as vz  # noqa: E402
from visionzoo.checkpoint import read_header  # noqa: E402
from visionzoo.data.datasets import ArraySplit, DataSource  # noqa: E402
from visionzoo.engine import TrainingDiverged, TrainingInterrupted  # noqa: E402

# per mode: the network, its input, the data, the budget of each run. ResNet-50's residual
# branches start at zero (Goyal et al.): from scratch it is then stable from the first steps
# (without, lr 0.01..0.05 sent its loss to 5..16 in the first epoch); the tiny smoke network
# learns faster without.
SETTINGS = {
    "full": {"model": "resnet50", "model_args": {"zero_init_residual": True}, "size": 224,
             "classes": 10, "n_train": 1024, "n_val": 256, "batch": 64, "epochs": 2, "lr": 0.02,
             "workers": 6, "bench_batch": 256, "bench_iters": 30, "min_img_per_s": 1000.0,
             "budget_s": 300},
    # float16 backward is slow on CPUs (no fast kernels), hence 8x8 images
    "smoke": {"model": "resnet20", "model_args": {}, "size": 8, "classes": 4, "n_train": 128,
              "n_val": 32, "batch": 16, "epochs": 2, "lr": 0.05, "workers": 0,
              "bench_batch": 16, "bench_iters": 3, "min_img_per_s": 1.0, "budget_s": 300},
}
CHECKS = ["fp16", "bf16", "resume", "ddp", "eval", "compile"]


class Skip(Exception):
    """A check that does not apply here (its reason is printed)."""


def blocks(n: int, classes: int, size: int, seed: int) -> ArraySplit:
    """uint8 (n, 3, size, size) noise with a bright block at the label's cell of a 4x4 grid."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    x = torch.randint(0, 60, (n, 3, size, size), dtype=torch.uint8, generator=g)
    cell = size // 4
    for c in range(classes):
        r, q = divmod(c, 4)
        x[labels == c, :, r * cell:(r + 1) * cell, q * cell:(q + 1) * cell] = 220
    return ArraySplit(x, labels.tolist())


def dataset(s: dict[str, Any]) -> DataSource:
    return DataSource(name="blocks", root="", layout="memory",
                      classes=[f"cell{c}" for c in range(s["classes"])],
                      splits={"train": blocks(s["n_train"], s["classes"], s["size"], 0),
                              "val": blocks(s["n_val"], s["classes"], s["size"], 1)},
                      eval_split="val", channels=3, native_size=s["size"])


def recipe(s: dict[str, Any], device: str, **more: Any) -> dict[str, Any]:
    """The runs' overrides of the default recipe: a short warm-up, no label smoothing, no flip
    or shifted crop (either would move the block towards another class's cell)."""
    return {"epochs": s["epochs"], "batch_size": s["batch"], "lr": s["lr"], "warmup_epochs": 0.5,
            "label_smoothing": 0.0, "hflip": 0.0, "train_crop": "none", "img_size": s["size"],
            "in_chans": 3,
            "model_args": s["model_args"], "workers": s["workers"], "device": device,
            "progress": "off", **more}


def ddp_recipe(s: dict[str, Any], device: str) -> dict[str, Any]:
    return recipe(s, device, epochs=1, warmup_epochs=0.0, sync_bn=True,
                  workers=s["workers"] // 2)


def state(path: Path) -> dict[str, Any]:
    return read_header(path)["extra"]["train_state"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.double() for k, v in load_file(str(path)).items() if v.is_floating_point()}


def relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                      start: dict[str, torch.Tensor]) -> float:
    """|a - b| / |b - start| over all float tensors: 0 for equal runs, ~1 for unrelated ones."""
    keys = [k for k in b if k in a and k in start and "running" not in k]
    diff = math.sqrt(sum(((a[k] - b[k]) ** 2).sum().item() for k in keys))
    moved = math.sqrt(sum(((b[k] - start[k]) ** 2).sum().item() for k in keys))
    return diff / max(moved, 1e-12)


def initial_weights(s: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights every run starts from (the engine seeds, then builds)."""
    torch.manual_seed(0)
    m = vz.create_model(s["model"], num_classes=s["classes"], in_chans=3, **s["model_args"])
    return {k: v.double() for k, v in m.state_dict().items() if v.is_floating_point()}


def loss_falls(r: vz.TrainResult, classes: int) -> bool:
    """The last epoch's training loss is below the first's and below chance (ln classes)."""
    loss = [h["train_loss"] for h in r.history]
    return loss[-1] < min(loss[0], math.log(classes))


def all_finite(r: vz.TrainResult) -> bool:
    values = [h[k] for h in r.history for k in ("train_loss", "val_loss")]
    return all(math.isfinite(v) for v in values) and all(
        torch.isfinite(t).all() for t in weights(r.model_path).values())


class Context:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.s = dict(SETTINGS["smoke" if args.smoke else "full"])
        if args.model:
            self.s["model"] = args.model
        self.device = args.device
        base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="vz_gpu_check_"))
        self.out = base / time.strftime("%Y%m%d-%H%M%S")  # fresh: runs never collide
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = dataset(self.s)
        self.runs: dict[str, vz.TrainResult] = {}
        self.start = time.monotonic()

    def train(self, name: str, *, resume: bool = False, callbacks: Any = (),
              **more: Any) -> vz.TrainResult:
        with open(self.out / f"{name}.log", "a") as log, contextlib.redirect_stdout(log):
            return vz.train(self.s["model"], self.data, out=self.out / name, resume=resume,
                            callbacks=callbacks, **recipe(self.s, self.device, **more))

    def run(self, name: str, **more: Any) -> vz.TrainResult:
        """A named run, trained once and shared by the checks that need it."""
        if name not in self.runs:
            self.runs[name] = self.train(name, **more)
        return self.runs[name]

    def left_s(self) -> float:
        return self.s["budget_s"] - (time.monotonic() - self.start)


# ---------------------------------------------------------------------------------------------
# the checks: each returns (passed, one line of numbers) or raises Skip
# ---------------------------------------------------------------------------------------------


def check_fp16(ctx: Context) -> tuple[bool, str]:
    r = ctx.run("fp16", amp="fp16")
    loss = [h["train_loss"] for h in r.history]
    scaler = state(r.checkpoint_path)["scaler"] or {}
    ok = (all_finite(r) and loss_falls(r, ctx.s["classes"])
          and math.isfinite(scaler.get("scale", math.nan)) and scaler["scale"] > 0)
    return ok, (f"train loss {loss[0]:.3f} -> {loss[-1]:.3f}, val top-1 {r.final_top1:.1%}, "
                f"loss scale {scaler.get('scale')} (growth tracker "
                f"{scaler.get('_growth_tracker')}), {r.summary['train_img_per_s']:.0f} img/s")


def check_bf16(ctx: Context) -> tuple[bool, str]:
    r = ctx.run("bf16", amp="bf16", channels_last=True)
    loss = [h["train_loss"] for h in r.history]
    no_scaler = state(r.checkpoint_path)["scaler"] is None
    ok = all_finite(r) and loss_falls(r, ctx.s["classes"]) and no_scaler
    return ok, (f"train loss {loss[0]:.3f} -> {loss[-1]:.3f}, val top-1 {r.final_top1:.1%}, "
                f"channels_last, no scaler in checkpoint: {no_scaler}, "
                f"{r.summary['train_img_per_s']:.0f} img/s")


def _stop_after_epoch_1(metrics: dict[str, Any]) -> None:
    if metrics["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the run stops after this epoch


def check_resume(ctx: Context) -> tuple[bool, str]:
    if ctx.s["epochs"] < 2:
        raise Skip("needs 2 epochs")
    ref = ctx.run("fp16", amp="fp16")
    try:
        ctx.train("resume", amp="fp16", callbacks=_stop_after_epoch_1)
        return False, "the run was not interrupted by SIGINT"
    except TrainingInterrupted:
        pass
    cut = state(ctx.out / "resume" / "last.safetensors")
    if (cut["epoch"], cut["step"]) != (1, 0) or not cut["scaler"]:
        return False, (f"checkpoint at epoch {cut['epoch']} step {cut['step']}, scaler "
                       f"{cut['scaler']}")
    r = ctx.train("resume", resume=True, amp="fp16")
    end, ref_end = state(r.checkpoint_path), state(ref.checkpoint_path)
    rel = relative_distance(weights(r.model_path), weights(ref.model_path), initial_weights(ctx.s))
    same_scaler = end["scaler"] == ref_end["scaler"]
    ok = r.epochs == ref.epochs and all_finite(r) and same_scaler and rel < 0.25
    scales = [(st["scaler"]["scale"], st["scaler"]["_growth_tracker"]) for st in (end, ref_end)]
    return ok, (f"resumed at epoch 2 with loss scale {cut['scaler']['scale']}; final scaler "
                f"{'equals' if same_scaler else 'differs from'} the uninterrupted run's (scale, "
                f"growth tracker {scales[0]} vs {scales[1]}); weight distance {rel:.2e} of the "
                f"training displacement (pass < 0.25); val top-1 {r.final_top1:.1%} vs "
                f"{ref.final_top1:.1%}")


def check_ddp(ctx: Context) -> tuple[bool, str]:
    if ctx.device.startswith("cuda") and torch.cuda.device_count() < 2:
        raise Skip(f"{torch.cuda.device_count()} GPU (needs 2)")
    two = ctx.out / "ddp_two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(Path(__file__).resolve()), "--ddp-worker", str(two), "--device", ctx.device,
           "--model", ctx.s["model"], *(["--smoke"] if ctx.args.smoke else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    with open(ctx.out / "ddp_two.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                              timeout=max(60.0, min(240.0, ctx.left_s())))
        log.write(proc.stdout)
    if proc.returncode != 0:
        return False, f"torchrun exit status {proc.returncode} (see {ctx.out / 'ddp_two.log'})"
    with open(ctx.out / "ddp_one.log", "w") as log, contextlib.redirect_stdout(log):
        one = vz.train(ctx.s["model"], ctx.data, out=ctx.out / "ddp_one",
                       **ddp_recipe(ctx.s, ctx.device))
    import json

    summary = json.loads((two / "summary.json").read_text())
    rel = relative_distance(weights(two / "model.safetensors"), weights(one.model_path),
                            initial_weights(ctx.s))
    reports = proc.stdout.count("epoch 1/1")
    ok = summary["world_size"] == 2 and reports == 1 and rel < 0.1
    backend = "NCCL" if ctx.device.startswith("cuda") else "gloo"
    return ok, (f"{backend}, world size {summary['world_size']}, epoch lines {reports} (rank 0 "
                f"only); weight distance to 1 process {rel:.2e} of the displacement (pass < "
                f"0.1); val loss {summary['final']['loss']:.4f} vs {one.final['loss']:.4f}")


def ddp_worker(args: argparse.Namespace) -> int:
    """One torchrun rank of check_ddp (``--ddp-worker DIR``)."""
    s = dict(SETTINGS["smoke" if args.smoke else "full"], model=args.model)
    vz.train(s["model"], dataset(s), out=args.ddp_worker, **ddp_recipe(s, args.device))
    return 0


def _model_img_per_s(ctx: Context, path: Path, amp: str) -> float:
    from visionzoo.engine import autocast

    dev = torch.device(ctx.device)
    net = vz.load_checkpoint(path).to(dev).eval().to(memory_format=torch.channels_last)
    b, size = ctx.s["bench_batch"], ctx.s["size"]
    x = torch.randn(b, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode(), autocast(dev, amp):
        for _ in range(3):
            net(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(ctx.s["bench_iters"]):
            net(x)
        sync()
    return b * ctx.s["bench_iters"] / (time.perf_counter() - t0)


def check_eval(ctx: Context) -> tuple[bool, str]:
    r = ctx.run("bf16", amp="bf16", channels_last=True)
    res = vz.evaluate(r.model_path, ctx.data, batch_size=ctx.s["bench_batch"],
                      workers=ctx.s["workers"], device=ctx.device)
    same = abs(res["top1"] - r.final_top1) <= 2 / ctx.s["n_val"]  # batch size may flip one
    speed = {amp: _model_img_per_s(ctx, r.model_path, amp) for amp in ("fp16", "bf16")}
    fast = min(speed.values()) >= ctx.s["min_img_per_s"]
    return same and fast, (
        f"top-1 {res['top1']:.1%} (the run's {r.final_top1:.1%}), evaluate {res['img_per_s']:.0f} "
        f"img/s with its loader; bare {ctx.s['model']} batch {ctx.s['bench_batch']}: "
        f"{speed['fp16']:.0f} img/s fp16, {speed['bf16']:.0f} img/s bf16 (pass >= "
        f"{ctx.s['min_img_per_s']:g})")


def check_compile(ctx: Context) -> tuple[bool, str]:
    if ctx.args.smoke and not ctx.args.with_compile:
        raise Skip("--smoke (add --with-compile)")
    if ctx.left_s() < 120:
        raise Skip(f"{ctx.left_s():.0f} s of the budget left (needs 120)")
    t0 = time.monotonic()
    r = ctx.train("compile", amp="bf16", channels_last=True, compile=True, epochs=1)
    return all_finite(r), (f"1 epoch in {time.monotonic() - t0:.0f} s (compilation included), "
                           f"train loss {r.history[0]['train_loss']:.3f}")


# ---------------------------------------------------------------------------------------------


def run_check(name: str, fn: Callable[[Context], tuple[bool, str]], ctx: Context) -> str:
    t0 = time.monotonic()
    try:
        ok, detail = fn(ctx)
        status = "PASS" if ok else "FAIL"
    except Skip as e:
        status, detail = "SKIP", str(e)
    except TrainingDiverged as e:
        status, detail = "FAIL", f"diverged: {str(e)[:300]}"
    except Exception as e:  # noqa: BLE001 - a crash is a failed check; the next ones still run
        with open(ctx.out / f"{name}.log", "a") as log:
            traceback.print_exc(file=log)
        status = "FAIL"
        detail = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''} " \
                 f"(traceback in {ctx.out / f'{name}.log'})"
    print(f"{status}  {name:8s} {detail} ({time.monotonic() - t0:.0f} s)", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny settings: a dry run on a CPU")
    p.add_argument("--model", help="network (default: resnet50; resnet20 with --smoke)")
    p.add_argument("--out", help="folder for the runs and logs (default: a new temporary one)")
    p.add_argument("--only", action="append", choices=CHECKS, help="run only these checks")
    p.add_argument("--with-compile", action="store_true", help="--smoke: also the compile check")
    p.add_argument("--ddp-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL  setup    no CUDA device visible to torch (use --device cpu --smoke for a "
              "dry run)")
        return 1
    ctx = Context(args)
    s = ctx.s
    gpus = (f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
            if args.device.startswith("cuda") else "CPU")
    print(f"gpu_check: {gpus}, torch {torch.__version__}, {s['model']} at {s['size']}x{s['size']}, "
          f"batch {s['batch']}, {s['epochs']} epochs of {s['n_train'] // s['batch']} steps; "
          f"runs and logs in {ctx.out}", flush=True)
    fns = {"fp16": check_fp16, "bf16": check_bf16, "resume": check_resume, "ddp": check_ddp,
           "eval": check_eval, "compile": check_compile}
    statuses = [run_check(n, fns[n], ctx) for n in CHECKS if not args.only or n in args.only]
    failed = statuses.count("FAIL")
    print(f"gpu_check: {statuses.count('PASS')} passed, {failed} failed, "
          f"{statuses.count('SKIP')} skipped in {time.monotonic() - ctx.start:.0f} s -> "
          f"{'FAIL' if failed else 'PASS'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
