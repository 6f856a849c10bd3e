"""Transfer, measured: does pretraining on some SynthMotion classes help to learn others from few videos?

``run_transfer_study`` is what ``softpool3d study-transfer`` runs. SynthMotion's 10 classes are split in
two (``PRETRAIN_CLASSES``, ``FINETUNE_CLASSES``; each mirror pair of ``data.flip_pairs`` lies on one
side). Per seed:

1. pretrain: the main job's recipe on the pretraining classes only (``data.keep_classes``), in
   ``<out>/<model>_pretrain_s<seed>/``; its last.pt is kept;
2. fine-tune on the fine-tuning classes with the first ``videos_per_class`` train videos of each
   (``data.train_videos_per_class``), for ``ft_epochs`` epochs, once from the pretrained last.pt
   (``model.pretrained``: every weight loads except the classifier, re-initialised since the class count
   differs) and once from scratch, same seed (same initial classifier, batches and clips), in
   ``<out>/<model>_finetune_<pretrained|scratch>_s<seed>/``;
3. both are tested on every test video of the fine-tuning classes.

Both fine-tunes use one data normalisation (the recipe's ``data.mean``/``data.std``; a softpool3d
checkpoint carries no other). The summary pairs pretrained − scratch by seed with a paired t-test.
Finished runs are reused, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

from ..datasets.synthetic import CLASSES as SYNTHMOTION_CLASSES
from .config import load_config
from .study import (COMMON, SETTINGS, bar_chart, needed, paired_difference, study_config, summarise, table,
                    train_and_test)

# Translation left/right/up/down and scale for pretraining; rotation and speed change, motions the
# pretraining never shows, for the fine-tune. Each flip pair (MoveLeft/MoveRight,
# RotateClockwise/RotateCounterClockwise) stays on one side, so flips keep relabelling on both.
PRETRAIN_CLASSES = ("MoveLeft", "MoveRight", "MoveUp", "MoveDown", "Approach", "Recede")
FINETUNE_CLASSES = ("RotateClockwise", "RotateCounterClockwise", "SpeedUp", "SlowDown")
STARTS = ("pretrained", "scratch")


def class_overrides(config_path: str, overrides: Sequence[str], classes: Sequence[str]) -> list[str]:
    """``data.keep_classes`` for ``classes`` and ``data.flip_pairs`` cut down to the recipe's pairs whose
    two classes are both kept (a pair split by ``classes`` is a ValueError naming it). A side with no pair
    gets ``data.flip_pairs=[]``: flips stay on only if a flip relabels none of its classes (the config check)."""
    pairs = load_config(config_path, [*COMMON, *overrides]).data.flip_pairs
    kept = []
    for pair in pairs:
        inside = [name for name in pair if name in classes]
        if len(inside) == 1:
            raise ValueError(f"the class split separates the mirror pair {list(pair)} of data.flip_pairs: "
                             f"put both on one side")
        if len(inside) == 2:
            kept.append(f"[{pair[0]},{pair[1]}]")
    return [f"data.keep_classes=[{','.join(classes)}]", f"data.flip_pairs=[{','.join(kept)}]"]


def check_split(config_path: str, model: str, overrides: Sequence[str], pretrain_classes: Sequence[str],
                finetune_classes: Sequence[str]) -> None:
    """Everything about the class split that can be wrong, before any training: a ValueError naming it.

    Each side: two or more different classes, every one a SynthMotion class (when the recipe is SynthMotion),
    no mirror pair of ``data.flip_pairs`` split, a config that passes its checks (e.g. flips that would
    relabel a class with no pair); the sides: disjoint, and of different class counts (the pretrained
    classifier must not load into the fine-tune's: only a class count that differs re-initialises it).
    """
    recipe = load_config(config_path, [*COMMON, *overrides])
    for option, classes in (("--pretrain-classes", pretrain_classes), ("--finetune-classes", finetune_classes)):
        repeated = sorted({name for name in classes if list(classes).count(name) > 1})
        if len(classes) < 2 or repeated:
            raise ValueError(f"{option} must name two or more different classes, got {list(classes)}")
        unknown = [name for name in classes if name not in SYNTHMOTION_CLASSES]
        if recipe.data.dataset == "synthmotion" and unknown:
            raise ValueError(f"{option}: {', '.join(map(repr, unknown))} is not a SynthMotion class; they are "
                             f"{', '.join(SYNTHMOTION_CLASSES)}")
    shared = sorted(set(pretrain_classes) & set(finetune_classes))
    if shared:
        raise ValueError(f"--pretrain-classes and --finetune-classes share {shared}; the split must be disjoint")
    for classes in (pretrain_classes, finetune_classes):
        load_config(config_path, [*COMMON, *SETTINGS.get(model, []), *overrides, f"model.name={model}",
                                  *class_overrides(config_path, overrides, classes)])
    if len(pretrain_classes) == len(finetune_classes):
        raise ValueError(f"--pretrain-classes and --finetune-classes both have {len(pretrain_classes)} classes: the "
                         f"pretrained classifier would load into the fine-tune's instead of being re-initialised "
                         f"(only a class count that differs re-initialises it); give the sides different counts")


def transfer_seed(config_path: str, out: Path, model: str, seed: int, overrides: Sequence[str],
                  pretrain_classes: Sequence[str], finetune_classes: Sequence[str], videos_per_class: int,
                  ft_epochs: int, ft_lr: Optional[float], keep_checkpoints: bool) -> tuple[dict, list[dict]]:
    """One seed: the pretraining run and both fine-tunes. Returns (pretraining record, fine-tune records with
    ``"start"``: "pretrained" or "scratch")."""
    common = [*SETTINGS.get(model, []), *overrides, f"model.name={model}", f"seed={seed}"]
    pretrain_name = f"{model}_pretrain_s{seed}"
    config = study_config(config_path, out, pretrain_name,
                          [*common, *class_overrides(config_path, overrides, pretrain_classes)])
    pretrain = {"model": model, "seed": seed, "classes": list(pretrain_classes),
                **train_and_test(config, keep_checkpoints=True)}
    checkpoint = (out / pretrain_name / "last.pt").resolve()
    finetune = [*common, *class_overrides(config_path, overrides, finetune_classes),
                f"data.train_videos_per_class={videos_per_class}", f"train.epochs={ft_epochs}",
                *([f"optim.lr={ft_lr}"] if ft_lr is not None else [])]
    runs = []
    for start in STARTS:
        name = f"{model}_finetune_{start}_s{seed}"
        if start == "pretrained" and not (out / name / "test" / "metrics.json").is_file():
            needed(checkpoint)
        config = study_config(config_path, out, name,
                              [*finetune, *([f"model.pretrained={checkpoint}"] if start == "pretrained" else [])])
        runs.append({"model": model, "seed": seed, "start": start, **train_and_test(config, keep_checkpoints)})
    return pretrain, runs


def run_transfer_study(config_path: str, out: Path, model: str = "r3d_10", seeds: Sequence[int] = (0, 1, 2),
                       pretrain_classes: Sequence[str] = PRETRAIN_CLASSES,
                       finetune_classes: Sequence[str] = FINETUNE_CLASSES, videos_per_class: int = 8,
                       ft_epochs: int = 30, ft_lr: Optional[float] = None, overrides: Sequence[str] = (),
                       keep_checkpoints: bool = False) -> dict:
    """Every seed (``transfer_seed``), then study_transfer.json, .md and .png in ``out``.

    Args:
        config_path: the recipe (the main job's config).
        out: the study folder; finished runs in it are reused.
        model: the network; seeds: one pretraining and two fine-tunes each.
        pretrain_classes, finetune_classes: the split (``check_split``: checked before any training).
        videos_per_class: train videos per fine-tuning class (the first ones in the split's list).
        ft_epochs: fine-tune epochs (both starts); ft_lr: their learning rate (None: the recipe's).
        overrides: ``key=value`` for every run.
        keep_checkpoints: keep the fine-tunes' checkpoints (the pretraining's last.pt is always kept).

    Returns ``{"pretraining", "runs", "summary", "paired", "seconds_this_call"}``, as written to
    study_transfer.json.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a value: {list(seeds)}; name each once")
    check_split(config_path, model, overrides, pretrain_classes, finetune_classes)
    if videos_per_class < 1 or ft_epochs < 1 or (ft_lr is not None and ft_lr <= 0):
        raise ValueError(f"--videos-per-class and --ft-epochs must be >= 1 and --ft-lr > 0, got {videos_per_class}, "
                         f"{ft_epochs} and {ft_lr}")
    started = time.perf_counter()
    pretraining, runs = [], []
    for seed in seeds:
        pretrain, seed_runs = transfer_seed(config_path, out, model, seed, overrides, pretrain_classes,
                                            finetune_classes, videos_per_class, ft_epochs, ft_lr, keep_checkpoints)
        pretraining.append(pretrain)
        runs += seed_runs
        shown = ", ".join(f"{r['start']} {100 * r['video_top1']:.1f}%" for r in seed_runs)
        print(f"seed {seed}: pretraining {100 * pretrain['video_top1']:.1f}% on {len(pretrain_classes)} classes; "
              f"fine-tune {shown} ({time.perf_counter() - started:.0f} s so far)", flush=True)
    rows = summarise(runs, arm="start")
    paired = [d for d in [paired_difference(runs, model, "pretrained", "scratch", arm="start")] if d is not None]
    out.mkdir(parents=True, exist_ok=True)
    pretrain_lines = ["", f"Pretraining ({len(pretrain_classes)} classes: {', '.join(pretrain_classes)}), video "
                      f"top-1 on their test videos: " + ", ".join(f"s{p['seed']}: {100 * p['video_top1']:.1f}%"
                                                                  for p in pretraining),
                      f"Fine-tune: {len(finetune_classes)} classes ({', '.join(finetune_classes)}), "
                      f"{videos_per_class} train videos each, {ft_epochs} epochs."]
    (out / "study_transfer.md").write_text(table(rows, paired, arm="start") + "\n" + "\n".join(pretrain_lines) + "\n")
    report = {"pretraining": pretraining, "runs": runs, "summary": rows, "paired": paired,
              "seconds_this_call": time.perf_counter() - started}
    (out / "study_transfer.json").write_text(json.dumps(report, indent=1))
    bar_chart(rows, paired, out / "study_transfer.png", arm="start")
    return report
