"""Re-encode a dataset tree so that every video's short side is N pixels (default 256).

    softpool3d resize-videos /data/UCF-101 /data/UCF-101_256 --short-side 256 --workers 8

The layout, file names and extensions stay (the official split lists still work); each output keeps
the frame count and frame rate and is checked (the same number of frames decodes, at the new size)
before it is renamed into place. Up-to-date outputs are skipped, so an interrupted run resumes; a
video that cannot be read is reported and left out. Exits 1 when any video failed, 2 when the
source folder holds no video.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..datasets.resize import resize_tree, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the dataset's video folder")
    parser.add_argument("output", type=Path, help="where the resized tree goes")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: {args.source} is not a folder", file=sys.stderr)
        return 2
    if args.short_side < 2:
        parser.error("--short-side must be >= 2")
    started = time.perf_counter()
    try:
        results = resize_tree(args.source, args.output, args.short_side, args.workers, not args.no_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(results, time.perf_counter() - started))
    return 1 if any(r.status == "failed" for r in results) else 0

