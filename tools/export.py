"""Export a SoftPool model to a torch.export program (.pt2) and to ONNX, and check both against eager PyTorch.

    python tools/export.py --checkpoint runs/synthmotion_r3d_10_soft/last.pt --shape 1,3,8,64,64 --out exported/r3d_10
    python tools/export.py --model r3d_18 --num-classes 400 --pool soft --head-pool soft --shape 1,3,16,112,112 \
        --out exported/r3d_18 --benchmark 10

Writes <out>.pt2 and <out>.onnx (opset 18, standard ONNX operators: it runs in a stock ONNX Runtime)
with a dynamic batch, then prints the max abs difference of each against eager PyTorch on random clips
at batch 1 and 3. --benchmark N times eager PyTorch and ONNX Runtime (CPU) at batch 1, N runs each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.engine import CheckpointError, ConfigError, model_from_checkpoint  # noqa: E402
from softpool3d.export import (OPSET, export_onnx, export_program, latency, max_differences,  # noqa: E402
                               onnx_session, random_clips)
from softpool3d.models import build_model, list_models  # noqa: E402


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
