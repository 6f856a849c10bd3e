"""Study 3: can a network trained with max pooling simply take SoftPool? (SoftPool issues #28 and #33)

    softpool3d study-swap                                      # 3 seeds: 3 max runs, 12 fine-tunes
    softpool3d study-swap --seeds 0 --ft-epochs 1 --out runs/study_swap_quick train.epochs=1

Per seed: the main job (configs/synthmotion.yaml) trained with model.pool=max and tested, in
<out>/<model>_max_s<seed>/ (Study 2's folder naming: a finished max run there is reused if its last.pt
was kept); then the same weights with every pool swapped to soft, tested with no training; then
fine-tunes from the max last.pt (model.pretrained, no warmup, --ft-lr) for each --ft-epochs, once with
soft and once with max pools, same seed, each tested. For every soft network the "hardness" of each
SoftPool site: the mean over windows of the largest SoftPool weight, 1 / sum_i exp(x_i - max), measured
on --clips test videos, against its average-pooling reference (equal inputs: the mean of 1 / each
window's real element count) and 1 (max pooling). A hardness.json measured on other --clips, or in the
first format, is measured again; a fine-tune's needs its checkpoint, so run with --keep-checkpoints to
change --clips later.

Writes <out>/study_swap.json, study_swap.md (accuracy per fine-tune length and pool; soft - max per
seed with a paired t-test; hardness per site) and study_swap.png. Finished steps are reused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..engine import load_config
from ..engine.swap import run_swap_study, swap_table
from ..engine.train import reuse_freed_memory_for


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthmotion", help="the main job's config")
    parser.add_argument("--model", default="r3d_10")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ft-epochs", nargs="+", type=int, default=[1, 3],
                        help="fine-tune lengths, each a run of its own (default: 1 3)")
    parser.add_argument("--ft-lr", type=float, default=None,
                        help="the fine-tunes' learning rate (default: a tenth of the runs' optim.lr, overrides included)")
    parser.add_argument("--clips", type=int, default=64,
                        help="test videos the hardness is measured on, spread over the split (default: 64)")
    parser.add_argument("--out", type=Path, default=Path("runs/study_swap"))
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the fine-tunes' and the swapped checkpoints (the max runs' last.pt is kept anyway)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        reuse_freed_memory_for(load_config(args.config, args.overrides))   # this process only trains the study
        report = run_swap_study(args.config, args.out, args.model, args.seeds, args.ft_epochs, args.ft_lr,
                                args.clips, args.overrides, args.keep_checkpoints)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(swap_table(report["accuracy"], report["paired"], report["hardness"]))
    print(f"\n{len(report['runs'])} results ({report['seconds_this_call']:.0f} s in this call; finished steps are "
          f"reused); wrote {args.out}/study_swap.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
