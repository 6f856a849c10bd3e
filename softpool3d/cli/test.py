"""Test a checkpoint on the held-out split with multi-view testing.

    softpool3d test --config synthmotion --checkpoint runs/synthmotion_r3d_10_soft/last.pt
    torchrun --nproc_per_node 2 -m softpool3d test --config C --checkpoint P test.views=10x3

Prints clip/video top-1/top-5, mean class accuracy, per-class accuracy and the skipped videos;
writes metrics.json, predictions.csv and confusion.png (default: <checkpoint folder>/test/).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..engine import CheckpointError, ConfigError, DataError, load_config, run_test
from ..engine.data import check_backend
from ..engine.evaluate import format_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="a YAML file, or the name of a shipped config (softpool3d configs lists them)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. test.views=10x3")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        check_backend(config)
        done = run_test(config, args.checkpoint)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if done is not None:
        result, folder, classes = done
        print(format_table(result, classes))
        print(f"\nreport: {folder} (metrics.json, predictions.csv, confusion.png)")
        print(f"run folder: {Path(args.checkpoint).resolve().parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
