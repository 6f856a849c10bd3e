"""Test a checkpoint on the held-out split with multi-view testing.

    python tools/test.py --config configs/synthmotion.yaml --checkpoint runs/synthmotion_r3d_18_soft/best.pt
    torchrun --nproc_per_node 2 tools/test.py --config C --checkpoint P test.views=10x3

Prints clip/video top-1/top-5, mean class accuracy, per-class accuracy and the skipped videos;
writes metrics.json, predictions.csv and confusion.png (default: <checkpoint folder>/test/).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.engine import CheckpointError, ConfigError, DataError, load_config, run_test  # noqa: E402
from softpool3d.engine.data import check_backend  # noqa: E402
from softpool3d.engine.evaluate import format_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. test.views=10x3")
    args = parser.parse_args(argv)
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
