r"""Write the backbone's pooled features (the classifier's input) for every view of every video.

    softpool3d extract-features --config ucf101/r3d_18_soft --checkpoint runs/ucf101_r3d_18_soft/best.pt \
        --split test --out features/ucf101 test.views=10x3
    softpool3d extract-features --config C --checkpoint P --videos a.mp4 b.mp4 --format split --mean-views
    torchrun --nproc_per_node 4 -m softpool3d extract-features --config C --checkpoint P --split train --out F

--format npy (default) writes one <video>.npy per video, (views, D) or (D,) with --mean-views, under
<out>/<split>/ in the dataset's layout (its path under data.root, suffix replaced: videos/a/clip.mp4 ->
<out>/test/videos/a/clip.npy); with --videos, under <out>/videos/ by the path relative to the files'
common folder (a/clip.mp4 b/clip.mp4 -> <out>/videos/a/clip.npy, <out>/videos/b/clip.npy). Two inputs
that would write one file (a/clip.mp4 and a/clip.avi) are an error before anything runs.
--format split writes <out>/<split>_features.npy and <out>/<split>_index.csv (row, video, label; the
label is empty for --videos). Views are test.views (clips x crops). Under torchrun each video is done once.
The features are the input of the model's classifier (its last nn.Linear or convolution), flattened.

Exit status: 0 when every video gave features; 2 when one of --videos gave none (the others are
written) or no video of the split did; a split's other unreadable videos are skipped with a warning.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..engine import CheckpointError, ConfigError, DataError, load_config
from ..engine.features import FORMATS, extract_features


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="a YAML file, or the name of a shipped config (softpool3d configs lists them)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--videos", nargs="+", type=Path, help="these files instead of a split")
    parser.add_argument("--format", choices=FORMATS, default="npy")
    parser.add_argument("--mean-views", action="store_true", help="the mean over views instead of every view")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. test.views=10x3")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        folder = extract_features(config, args.checkpoint, args.out, split=args.split, videos=args.videos or (),
                                  fmt=args.format, mean_views=args.mean_views)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if folder is not None:
        print(f"features written under {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
