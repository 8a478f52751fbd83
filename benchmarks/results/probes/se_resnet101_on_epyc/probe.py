"""Where SE-ResNet-101's optimized time goes on the run-8 machine (AMD EPYC, one thread).

    python probe.py layers MODEL BATCH       # time per conv shape inside the optimized network
    python probe.py winograd                 # WinogradConv2d against oneDNN's direct 3x3 conv
    python probe.py pointwise                # 1x1 convs: hot, cold (40 copies cycled), torch.mm
    python probe.py ab MODEL BATCH ROUNDS    # optimize() with and without Winograd vs timm

Outputs of the commit's run are in outputs.txt. Random weights: speed does not depend on them.
"""

import collections
import importlib
import statistics
import sys
import time

import timm
import torch
from torch import nn

import visionzoo as vz

opt = importlib.import_module("visionzoo.optimize")
REFERENCE = {"se_resnet101": "legacy_seresnet101", "resnet50": "resnet50",
             "efficientnet_b0": "efficientnet_b0", "mobilenet_v2": "mobilenetv2_100",
             "densenet121": "densenet121", "vgg16": "vgg16"}


def median_time(f, x, repeats=7, calls=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            f(x)
        times.append((time.perf_counter() - t) / calls)
    return statistics.median(times)


def layers(name, batch):
    """Each conv module of the optimized model timed by hooks, summed per shape."""
    model = opt.optimize(vz.create_model(name).eval())
    x = torch.randn(batch, 3, 224, 224)
    times, macs, calls, start = collections.defaultdict(float), {}, collections.Counter(), {}

    def pre(mod, inp):
        start[mod] = time.perf_counter()

    def post(mod, inp, out):
        key = (type(mod).__name__, mod.in_channels, mod.out_channels, mod.kernel_size,
               mod.stride, tuple(out.shape[-2:]))
        times[key] += time.perf_counter() - start[mod]
        calls[key] += 1
        macs[key] = (out.numel() * mod.in_channels // mod.groups
                     * mod.kernel_size[0] * mod.kernel_size[1])

    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):  # OneDNNConv2d and WinogradConv2d too
            mod.register_forward_pre_hook(pre)
            mod.register_forward_hook(post)
    rounds = 5
    with torch.inference_mode():
        model(x), model(x)
        times.clear()
        calls.clear()
        t = time.perf_counter()
        for _ in range(rounds):
            model(x)
        total = (time.perf_counter() - t) / rounds
    for key in sorted(times, key=lambda k: -times[k]):
        per_call, n = times[key] / rounds, calls[key] // rounds
        print(f"{key!s:75} x{n:3d} {per_call * 1e3:7.2f} ms "
              f"{macs[key] * n / per_call / 1e9:6.1f} GMAC/s")
    print(f"total {total * 1e3:.1f} ms, convs {sum(times.values()) / rounds * 1e3:.1f} ms")


def winograd():
    shapes = [(256, 14, 1), (256, 14, 8), (256, 56, 1), (256, 28, 8), (512, 14, 1),
              (512, 28, 1), (512, 14, 8), (256, 28, 1)]
    with torch.inference_mode():
        for c, hw, b in shapes:
            direct = opt.OneDNNConv2d(nn.Conv2d(c, c, 3, padding=1).eval(), nn.ReLU(), (1, 1))
            wino = opt.WinogradConv2d(direct)
            x = torch.randn(b, c, hw, hw).to(memory_format=torch.channels_last)
            td, tw = median_time(direct, x), median_time(wino, x)
            print(f"3x3 {c}->{c} {hw}x{hw} b{b}: direct {td * 1e3:6.2f} ms "
                  f"winograd {tw * 1e3:6.2f} ms, speed-up {td / tw:.2f}")


def pointwise():
    with torch.inference_mode():
        for c, k, hw in [(256, 1024, 14), (1024, 256, 14), (64, 256, 56), (512, 2048, 7)]:
            convs = [opt.OneDNNConv2d(nn.Conv2d(c, k, 1).eval(), None, (0, 0))
                     for _ in range(41)]
            x = torch.randn(1, c, hw, hw).to(memory_format=torch.channels_last)
            w = convs[0].weight.view(k, c).t()
            hot = median_time(convs[0], x, calls=10)
            cold = median_time(lambda x, convs=convs: [m(x) for m in convs[1:]], x,
                               repeats=3, calls=1) / 40
            mm = median_time(lambda x, c=c, w=w: torch.mm(x.permute(0, 2, 3, 1).reshape(-1, c),
                                                          w), x)
            rate = hw * hw * c * k / 1e9
            print(f"1x1 {c}->{k} {hw}x{hw} b1: hot {hot * 1e3:.3f} ms ({rate / hot:.1f} G/s), "
                  f"cold {cold * 1e3:.3f} ({rate / cold:.1f}), torch.mm hot {mm * 1e3:.3f} "
                  f"({rate / mm:.1f})")


def ab(name, batch, rounds):
    """Interleaved rounds of 0.5 s: timm's model, optimize(), optimize(winograd=False)."""
    model = vz.create_model(name).eval()
    variants = {"timm": timm.create_model(REFERENCE[name]).eval(),
                "optimize": opt.optimize(model),
                "optimize(winograd=False)": opt.optimize(model, winograd=False)}
    x = torch.randn(batch, 3, 224, 224)

    def seconds_per_call(f):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 0.5:
            f(x)
            n += 1
        return (time.perf_counter() - t) / n

    res = {k: [] for k in variants}
    with torch.inference_mode():
        for f in variants.values():
            f(x)
        for _ in range(rounds):
            for k, f in variants.items():
                res[k].append(seconds_per_call(f))
    for k, v in res.items():
        ratio = statistics.median(r / t for r, t in zip(res["timm"], v, strict=True))
        print(f"{name} b{batch} {k:26} {statistics.median(v) * 1e3:8.1f} ms, "
              f"timm / this {ratio:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "layers":
        layers(args[0], int(args[1]))
    elif cmd == "ab":
        ab(args[0], int(args[1]), int(args[2]))
    else:
        {"winograd": winograd, "pointwise": pointwise}[cmd]()
