"""Train a video classifier from a config.

    softpool3d train --config synthmotion [key=value ...]
    torchrun --nproc_per_node 2 -m softpool3d train --config ucf101/r3d_18_soft data.root=/data/UCF-101

Writes runs/<name>/: config.yaml, last.pt, best.pt, metrics.jsonl, curves.png, tb/ (TensorBoard).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


from ..engine import CheckpointError, ConfigError, DataError, load_config, train
from ..engine.train import reuse_freed_memory_for


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="a YAML file, or the name of a shipped config (softpool3d configs lists them)")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. optim.lr=0.05 data.clip_len=8")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        reuse_freed_memory_for(config)      # this process is this one run: its allocator settings may change
        folder = train(config)
    except (ConfigError, DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
