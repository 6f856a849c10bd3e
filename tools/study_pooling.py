"""Study 2: does SoftPool improve accuracy? r3d_18 and c3d with soft, max and avg pooling, 3 seeds each,
trained and tested on SynthMotion with the main job's config (configs/synthmotion.yaml).

    python tools/study_pooling.py                                 # the full study (52 min on 2 cores)
    python tools/study_pooling.py --models r3d_18 --seeds 0 --out runs/study_quick train.epochs=1

Each run is the main job's recipe with the overrides in ``SETTINGS`` (a shorter schedule and, for C3D,
smaller clips, so that 18 trainings fit in an hour of CPU), then ``model.name``, ``model.pool`` and
``seed``, which sets the initial weights, the data order and the clips. Runs go to
``<out>/<model>_<pool>_s<seed>/``. A run whose test report exists is not trained again, so an
interrupted study continues where it stopped (a half-trained run resumes from its last.pt); a run
folder made with other settings is an error, never mixed in. Each run is tested with one centre view
per video (video top-1 on SynthMotion's 240 test videos).

Writes <out>/study_pooling.json, study_pooling.md (markdown table) and study_pooling.png (bar chart).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.engine.study import run_study, table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/synthmotion.yaml", help="the main job's config")
    parser.add_argument("--models", nargs="+", default=["r3d_18", "c3d"])
    parser.add_argument("--pools", nargs="+", default=["soft", "max", "avg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/study_pooling"))
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's last.pt and best.pt (deleted once the run is tested)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run, after SETTINGS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        report = run_study(args.config, args.out, args.models, args.pools, args.seeds, args.overrides,
                           args.keep_checkpoints)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(report["summary"]))
    print(f"\n{len(report['runs'])} runs ({report['seconds_this_call']:.0f} s in this call; finished runs are "
          f"reused); wrote {args.out}/study_pooling.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
