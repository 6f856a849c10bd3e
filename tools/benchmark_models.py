"""Model table: parameters, FLOPs, CPU latency, and the cost of SoftPool over max pooling.

    python tools/benchmark_models.py                      # every video model
    python tools/benchmark_models.py --models r3d_18 c3d  # some

For each model, pool="soft" and pool="max" are built from the same seed and timed round-robin in one
process: inference per clip (batch 1, no grad) and a training step (batch 2: forward, backward, SGD
step). FLOPs come from torch.utils.flop_counter at batch 1 (one multiply-add = 2 FLOPs); it counts
convolutions and matrix products, and SoftPool is given 5 FLOPs per (window, element) pair (subtract,
exp, multiply, two adds), so the soft column includes the pooling. Clips are 16x112x112, X3D at its own
size (XS 4x160, S 13x160, M 16x224).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.models import build_model, list_models  # noqa: E402
from softpool3d.ops._geometry import pool_output_size  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list_models("video"))
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--infer", type=int, default=3, help="timed inference runs (after one warm-up)")
    args = parser.parse_args()
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
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
