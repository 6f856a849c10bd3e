r"""Export a SoftPool model to a torch.export program (.pt2) and to ONNX, and check both against eager PyTorch.

    softpool3d export --checkpoint runs/synthmotion_r3d_10_soft/last.pt --shape 1,3,8,64,64 --out exported/r3d_10
    softpool3d export --model r3d_18 --num-classes 400 --pool soft --head-pool soft --shape 1,3,16,112,112 \
        --out exported/r3d_18 --benchmark 10

Writes <out>.pt2 and <out>.onnx (opset 18, standard ONNX operators: it runs in a stock ONNX Runtime)
with a dynamic batch, then prints the max abs difference of each against eager PyTorch on random clips
at batch 1 and 3. --benchmark N times eager PyTorch and ONNX Runtime (CPU) at batch 1, N runs each.

A shape the model cannot take (a wrong number of dimensions or channels, or a clip too small for its
strides and pools) is a one-line error that names the shape and the smallest T, H and W the model
takes, found by running the model on shape-only ("meta") tensors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call


from ..engine import CheckpointError, ConfigError, model_from_checkpoint
from ..export import (OPSET, export_onnx, export_program, latency, max_differences,
                               onnx_session, random_clips)
from ..models import build_model, list_models


PROBE_SIZE = 512        # the other axes' size while one axis's minimum is searched


def meta_runner(model: nn.Module) -> Callable[[tuple[int, ...]], bool]:
    """A test of whether ``model`` runs on an input shape: a forward pass on shape-only (meta) tensors."""
    meta = {name: t.to("meta") for name, t in [*model.named_parameters(), *model.named_buffers()]}

    def runs_on(shape: tuple[int, ...]) -> bool:
        try:
            with torch.no_grad():
                functional_call(model, meta, (torch.empty(shape, device="meta"),))
        except (RuntimeError, ValueError):
            return False
        return True

    return runs_on


def smallest_sizes(runs_on: Callable[[tuple[int, ...]], bool], ndim: int, channels: int) -> list[int]:
    """Per axis after (N, C), the smallest size the model runs on with the other axes at PROBE_SIZE.

    Sizes that work on an axis form a range upward (conv and pool outputs only grow with their input),
    so each is a doubling search then a bisection. An axis that fails even at PROBE_SIZE gives 0.
    """
    sizes = []
    for axis in range(ndim - 2):
        def works(size: int) -> bool:
            shape = [1, channels, *[PROBE_SIZE] * (ndim - 2)]
            shape[2 + axis] = size
            return runs_on(tuple(shape))

        high = 1
        while high < PROBE_SIZE and not works(high):
            high *= 2
        high = min(high, PROBE_SIZE)
        if not works(high):
            sizes.append(0)
            continue
        low = high // 2                          # fails (or 0); high works
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if works(middle) else (middle, high)
        sizes.append(high)
    return sizes


def shape_error(model: nn.Module, shape: tuple[int, ...], text: str) -> str:
    """'' when ``model`` runs on ``shape``, else one line naming the shape and what the model takes."""
    runs_on = meta_runner(model)
    if all(v >= 1 for v in shape) and runs_on(shape):
        return ""
    stem = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if stem is None:
        return f"--shape {text}: the model does not run on this shape"
    ndim, channels = stem.weight.dim(), stem.in_channels
    axes = ("N", "C", "T", "H", "W") if ndim == 5 else ("N", "C", "H", "W")[: ndim]
    minimum = smallest_sizes(runs_on, ndim, channels)
    takes = ", ".join(f"{axis} >= {size}" for axis, size in zip(axes[2:], minimum) if size)
    layout = f"{','.join(axes)} with C = {channels}, N >= 1" + (f", {takes}" if takes else "")
    if len(shape) != ndim:
        return f"--shape {text} has {len(shape)} numbers; the model takes {ndim}: {layout}"
    if shape[1] != channels:
        return f"--shape {text} has C = {shape[1]}; the model takes {layout}"
    small = [f"{axis} = {value}" for axis, value, size in zip(axes[2:], shape[2:], minimum) if value < size]
    if small or shape[0] < 1:
        return f"--shape {text} is too small ({', '.join(small) or f'N = {shape[0]}'}); the model takes {layout}"
    return f"--shape {text}: the model does not run on it, though each axis is at least its minimum ({layout})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a training checkpoint (its own network and classes)")
    source.add_argument("--model", choices=list_models(), help="a model with random weights")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--pool", default="soft")
    parser.add_argument("--head-pool", default="soft")
    parser.add_argument("--shape", required=True, help="the input shape, e.g. 1,3,16,112,112 (the batch is dynamic)")
    parser.add_argument("--out", type=Path, required=True, help="writes <out>.pt2 and <out>.onnx")
    parser.add_argument("--benchmark", type=int, default=0, metavar="N", help="time eager vs ONNX Runtime, N runs")
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape must be comma-separated ints, got {args.shape!r}")
    try:
        if args.checkpoint:
            model, _, _ = model_from_checkpoint(args.checkpoint)
        else:
            model = build_model(args.model, num_classes=args.num_classes, pool=args.pool, head_pool=args.head_pool)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model.eval()
    error = shape_error(model, shape, args.shape)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(max(2, shape[0]), *shape[1:])
    program = export_program(model, example, args.out.with_suffix(".pt2"))
    export_onnx(model, example, args.out.with_suffix(".onnx"))
    session = onnx_session(args.out.with_suffix(".onnx"))
    print(f"wrote {args.out.with_suffix('.pt2')} and {args.out.with_suffix('.onnx')} (ONNX opset {OPSET})")
    print("| batch | max abs diff, torch.export | max abs diff, ONNX Runtime |")
    print("|---:|---:|---:|")
    for row in max_differences(model, program, session, random_clips(shape)):
        print(f"| {row['batch']} | {row['export']:.2e} | {row['onnx']:.2e} |")
    if args.benchmark:
        ms = latency(model, session, random_clips(shape, (1,))[0], reps=args.benchmark)
        print(f"\nbatch 1, median of {args.benchmark}: eager {ms['eager']:.1f} ms, ONNX Runtime "
              f"{ms['onnxruntime']:.1f} ms ({ms['eager'] / ms['onnxruntime']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
