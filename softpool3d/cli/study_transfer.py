"""Transfer, measured: pretraining on 6 SynthMotion classes, then fine-tuning on the other 4 from few videos,
against the same fine-tune from scratch.

    softpool3d study-transfer                                  # 3 seeds: 3 pretrainings, 6 fine-tunes
    softpool3d study-transfer --seeds 0 --videos-per-class 4 --out runs/study_transfer_quick train.epochs=1

Per seed: the main job (configs/synthmotion.yaml) trained on --pretrain-classes only (data.keep_classes)
in <out>/<model>_pretrain_s<seed>/; then --ft-epochs epochs on --finetune-classes with the first
--videos-per-class train videos of each (data.train_videos_per_class), from the pretrained last.pt
(model.pretrained: the classifier is re-initialised, everything else loads) and from scratch, same seed,
in <out>/<model>_finetune_{pretrained,scratch}_s<seed>/; both tested on every test video of the
fine-tuning classes. Mirror pairs of data.flip_pairs must lie on one side of the split.

Writes <out>/study_transfer.json, study_transfer.md (per start; pretrained - scratch per seed with a paired
t-test) and study_transfer.png. Finished runs are reused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..engine import load_config
from ..engine.study import table
from ..engine.train import reuse_freed_memory_for
from ..engine.transfer import FINETUNE_CLASSES, PRETRAIN_CLASSES, run_transfer_study


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synthmotion", help="the main job's config")
    parser.add_argument("--model", default="r3d_10")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrain-classes", nargs="+", default=list(PRETRAIN_CLASSES),
                        help=f"default: {' '.join(PRETRAIN_CLASSES)}")
    parser.add_argument("--finetune-classes", nargs="+", default=list(FINETUNE_CLASSES),
                        help=f"default: {' '.join(FINETUNE_CLASSES)}")
    parser.add_argument("--videos-per-class", type=int, default=8,
                        help="train videos per fine-tuning class, the first in the split's list (default: 8)")
    parser.add_argument("--ft-epochs", type=int, default=30, help="fine-tune epochs, both starts (default: 30)")
    parser.add_argument("--ft-lr", type=float, default=None, help="fine-tune learning rate (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=Path("runs/study_transfer"))
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the fine-tunes' checkpoints (the pretrainings' last.pt is kept anyway)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        reuse_freed_memory_for(load_config(args.config, args.overrides))   # this process only trains the study
        report = run_transfer_study(args.config, args.out, args.model, args.seeds, args.pretrain_classes,
                                    args.finetune_classes, args.videos_per_class, args.ft_epochs, args.ft_lr,
                                    args.overrides, args.keep_checkpoints)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(report["summary"], report["paired"], arm="start"))
    print(f"\n{len(report['runs'])} fine-tunes ({report['seconds_this_call']:.0f} s in this call; finished runs are "
          f"reused); wrote {args.out}/study_transfer.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
