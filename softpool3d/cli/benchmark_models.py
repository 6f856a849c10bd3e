"""Model table: parameters, FLOPs, CPU latency, and the cost of SoftPool over max pooling.

    softpool3d benchmark-models                      # every video model
    softpool3d benchmark-models --models r3d_18 c3d  # some
    softpool3d benchmark-models --conv-gradient      # Conv3d's per-tap weight gradient against nn.Conv3d's

For each model, pool="soft" and pool="max" are built from the same seed and timed round-robin in one
process: inference per clip (batch 1, no grad) and a training step (batch 2: forward, backward, SGD
step). FLOPs come from torch.utils.flop_counter at batch 1 (one multiply-add = 2 FLOPs); it counts
convolutions and matrix products, and SoftPool is given 5 FLOPs per (window, element) pair (subtract,
exp, multiply, two adds), so the soft column includes the pooling. Clips are 16x112x112, X3D at its own
size (XS 4x160, S 13x160, M 16x224).

``--conv-gradient`` times training steps of each model with ``softpool3d.models.Conv3d``'s per-tap weight
gradient (where it applies) and without it (every layer as ``nn.Conv3d``), round-robin on the same model
and batch, at the main job's clip (6x64x64, batch 8) unless ``--clip``/``--batch`` say otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula


from ..models import _conv, build_model, list_models
from ..ops._geometry import pool_output_size

CLIPS = {"x3d_xs": (4, 160, 160), "x3d_s": (13, 160, 160), "x3d_m": (16, 224, 224)}
DEFAULT_CLIP = (16, 112, 112)


@register_flop_formula(torch.ops.softpool3d.soft_pool)
def _soft_pool_flops(x_shape, kernel_size, stride, padding, ceil_mode, *args, out_shape=None, **kwargs) -> int:
    outputs = x_shape[0] * x_shape[1] * math.prod(
        pool_output_size(n, k, s, p, ceil_mode) for n, k, s, p in zip(x_shape[2:], kernel_size, stride, padding))
    return 5 * outputs * math.prod(kernel_size)


@register_flop_formula(torch.ops.softpool3d.adaptive_soft_pool)
def _adaptive_flops(x_shape, output_size, *args, out_shape=None, **kwargs) -> int:
    return 5 * math.prod(x_shape)  # adaptive windows tile the input (about once each)


def forward_gflops(model: torch.nn.Module, clip: tuple) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, *clip))
    return counter.get_total_flops() / 1e9


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def conv_gradient_table(names: list[str], clip: tuple, batch: int, steps: int) -> None:
    """Training step time with and without Conv3d's per-tap weight gradient, round-robin on one model."""
    print(f"\n| model | clip | batch | layers on the tap path | train step ms (tap) | train step ms (nn.Conv3d) "
          f"| tap / nn.Conv3d |")
    print("|---|---|---:|---:|---:|---:|---:|")
    ratio = _conv.TAP_GRADIENT_RATIO
    for name in names:
        torch.manual_seed(0)
        model = build_model(name, num_classes=10, pool="soft").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        x, labels = torch.randn(batch, 3, *clip), torch.randint(10, (batch,))
        on_tap_path = []
        hooks = [m.register_forward_pre_hook(lambda m, a: on_tap_path.append(m.uses_tap_gradient(a[0])))
                 for m in model.modules() if isinstance(m, _conv.Conv3d)]
        model(x)
        for hook in hooks:
            hook.remove()

        def train_step(tap: bool) -> None:
            _conv.TAP_GRADIENT_RATIO = ratio if tap else math.inf
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), labels).backward()
            optimizer.step()

        times = {True: [], False: []}
        for round_index in range(steps + 1):               # round-robin, first round is warm-up
            for tap in (True, False):
                elapsed = timed(lambda: train_step(tap))
                if round_index:
                    times[tap].append(elapsed * 1e3)
        _conv.TAP_GRADIENT_RATIO = ratio
        tap, plain = statistics.median(times[True]), statistics.median(times[False])
        print(f"| {name} | {'x'.join(map(str, clip))} | {batch} | {sum(on_tap_path)} of {len(on_tap_path)} | "
              f"{tap:.0f} | {plain:.0f} | {tap / plain:.2f}x |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="default: every video model (--conv-gradient: "
                        "the 3D ResNets and C3D)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--infer", type=int, default=3, help="timed inference runs (after one warm-up)")
    parser.add_argument("--conv-gradient", action="store_true",
                        help="time Conv3d's per-tap weight gradient against nn.Conv3d's instead")
    parser.add_argument("--clip", type=int, nargs=3, default=(6, 64, 64), help="--conv-gradient: T H W")
    parser.add_argument("--batch", type=int, default=8, help="--conv-gradient: clips per step")
    args = parser.parse_args(argv)
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if args.conv_gradient:
        conv_gradient_table(args.models or ["r3d_10", "r3d_18", "r3d_50", "c3d"], tuple(args.clip), args.batch,
                            args.steps)
        return
    args.models = args.models or list_models("video")
    print("\n| model | clip | params | GFLOPs (soft) | GFLOPs (max) | inference ms/clip (soft) "
          "| train step s (soft) | train step s (max) | soft / max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        clip = CLIPS.get(name, DEFAULT_CLIP)
        models = {}
        for kind in ("soft", "max"):
            torch.manual_seed(0)
            models[kind] = build_model(name, num_classes=400, pool=kind)
        params = sum(p.numel() for p in models["soft"].parameters())
        flops = {kind: forward_gflops(model.eval(), clip) for kind, model in models.items()}
        clip1, clip2 = torch.randn(1, 3, *clip), torch.randn(2, 3, *clip)
        labels = torch.randint(400, (2,))
        optimizers = {kind: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for kind, m in models.items()}

        def infer(kind):
            models[kind].eval()
            with torch.no_grad():
                models[kind](clip1)

        def train_step(kind):
            model = models[kind].train()
            optimizers[kind].zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(clip2), labels).backward()
            optimizers[kind].step()

        infer("soft")
        infer_ms = statistics.median(timed(lambda: infer("soft")) for _ in range(args.infer)) * 1e3
        steps = {"soft": [], "max": []}
        for round_index in range(args.steps + 1):          # round-robin, first round is warm-up
            for kind in ("soft", "max"):
                elapsed = timed(lambda: train_step(kind))
                if round_index:
                    steps[kind].append(elapsed)
        soft, maxed = statistics.median(steps["soft"]), statistics.median(steps["max"])
        print(f"| {name} | {'x'.join(map(str, clip))} | {params / 1e6:.2f}M | {flops['soft']:.1f} | "
              f"{flops['max']:.1f} | {infer_ms:.0f} | {soft:.2f} | {maxed:.2f} | {soft / maxed:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
