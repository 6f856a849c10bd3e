"""Top-5 classes for video files, from a training checkpoint (which carries the class names).

    python tools/predict.py clip1.mp4 clip2.avi --checkpoint runs/synthmotion_r3d_18_soft/best.pt [--views 3x1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.datasets import VideoDecodeError  # noqa: E402
from softpool3d.engine import CheckpointError, model_from_checkpoint, predict  # noqa: E402
from softpool3d.engine.config import ConfigError, parse_views  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--views", default="1x1", help="CLIPSxCROPS averaged per video (default 1x1)")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        views = parse_views(args.views)
        model, config, classes = model_from_checkpoint(args.checkpoint)
    except (ConfigError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = 0
    for path in args.videos:
        try:
            (ranked,) = predict(model, classes, config, [path], views=views, top=args.top)
        except (VideoDecodeError, FileNotFoundError, IndexError) as error:
            print(f"{path}: cannot read: {error}", file=sys.stderr)
            status = 1
            continue
        print(path)
        for name, probability in ranked:
            print(f"  {probability:7.2%}  {name}")
    return status


if __name__ == "__main__":
    sys.exit(main())
