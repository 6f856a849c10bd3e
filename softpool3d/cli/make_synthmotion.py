"""Generate SynthMotion (UCF-101 layout) under a folder.

    softpool3d make-synthmotion data/synthmotion --videos-per-class 30 --frames 16 --size 64
"""

import argparse
import os
import sys
import time
from pathlib import Path

from ..datasets.synthetic import CLASSES, make_synthmotion


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--num-classes", type=int, default=len(CLASSES))
    parser.add_argument("--videos-per-class", type=int, default=30)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing videos")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        root = make_synthmotion(args.root, num_classes=args.num_classes, videos_per_class=args.videos_per_class,
                                frames=args.frames, size=args.size, seed=args.seed, groups=args.groups,
                                workers=args.workers, progress=True)
    except ValueError as error:        # the sizes, counts and groups it cannot make
        print(f"error: {error}", file=sys.stderr)
        return 2
    count = sum(1 for _ in (root / "videos").rglob("*.mp4"))
    print(f"wrote {count} videos to {root} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
