"""Study 2: does SoftPool change accuracy? The main job (configs/synthmotion.yaml, r3d_10, its full
schedule and test views) with soft, max and avg pooling, 3 seeds each, on SynthMotion.

    softpool3d study-pooling                                 # the main arm: 9 runs
    softpool3d study-pooling --models r3d_10 --seeds 0 --out runs/study_quick train.epochs=1

Each run is the recipe with the overrides in ``SETTINGS`` for its model (none for r3d_10), then
``model.name``, ``model.pool`` and ``seed``, which sets the initial weights, the data order and the
clips: runs with one seed differ only in their pools. Runs go to ``<out>/<model>_<pool>_s<seed>/``. A
run whose test report exists is not trained again, so an interrupted study continues where it stopped
(a half-trained run resumes from its last.pt); a run folder made with other settings is an error, never
mixed in. Each run tests last.pt as ``make run`` does (video top-1 on SynthMotion's 240 test videos).

Writes <out>/study_pooling.json, study_pooling.md (per-pool table, then the paired differences
soft - max and soft - avg per seed with a paired t-test) and study_pooling.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..engine import load_config
from ..engine.study import run_study, table
from ..engine.train import reuse_freed_memory_for


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthmotion", help="the main job's config")
    parser.add_argument("--models", nargs="+", default=["r3d_10"])
    parser.add_argument("--pools", nargs="+", default=["soft", "max", "avg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/study_pooling"))
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's last.pt and best.pt (deleted once the run is tested)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run, after SETTINGS")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        reuse_freed_memory_for(load_config(args.config, args.overrides))   # this process only trains the study
        report = run_study(args.config, args.out, args.models, args.pools, args.seeds, args.overrides,
                           args.keep_checkpoints)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(report["summary"], report["paired"]))
    print(f"\n{len(report['runs'])} runs ({report['seconds_this_call']:.0f} s in this call; finished runs are "
          f"reused); wrote {args.out}/study_pooling.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
