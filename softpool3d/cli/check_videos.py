r"""Find the videos a decoder chokes on: decode every frame of a dataset, a folder or a list file.

    softpool3d check-videos --config ucf101/r3d_18_soft data.root=/data/UCF-101 \
        data.annotations=/data/ucfTrainTestlist --workers 8 --write-clean-lists /data/ucfTrainTestlist_clean
    softpool3d check-videos --folder /data/kinetics400/val --workers 8
    softpool3d check-videos --list val.txt --root /data/videos

Each file is ``ok``, ``partial`` (decodes fewer frames than its header says, or breaks halfway; training
and testing use the frames that decode) or ``bad`` (cannot be opened, no video stream, no frame), with
the reason, the header and decoded frame counts, the size and the fps. Writes a CSV (--csv), prints a
summary and exits 1 when any file is bad. --write-clean-lists DIR writes the dataset's split files
without the bad videos, in their own format; point data.annotations (or data.*_list) at DIR to train on them.
A folder dataset (data.dataset=folder) has no split files: DIR gets train.txt and val.txt ('path label',
paths relative to data.root) and classes.txt, and the overrides that train on them are printed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..datasets.annotations import read_video_list
from ..datasets.check import (SplitFiles, check_videos, clean_split_files, dataset_split_files,
                                       summary, videos_under, write_csv, write_folder_lists)
from ..datasets.io import VIDEO_EXTENSIONS
from ..engine import ConfigError, DataError, load_config
from ..engine.data import build_dataset, check_classes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="an experiment config (a YAML file or a shipped name): every split of its dataset is checked")
    source.add_argument("--folder", type=Path, help="every video below this folder")
    source.add_argument("--list", type=Path, help="a '<path> <label>' list file")
    parser.add_argument("--root", type=Path, default=Path("."), help="with --list: what its paths are relative to")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=Path("check_videos.csv"))
    parser.add_argument("--write-clean-lists", type=Path, metavar="DIR",
                        help="with --config or --list: the split files without the bad videos "
                             "(a folder dataset: 'path label' lists of its videos)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="with --config: key=value")
    args = parser.parse_intermixed_args(argv)
    if args.write_clean_lists and args.folder:
        parser.error("--write-clean-lists needs --config or --list (a folder has no split files)")

    splits, datasets = None, {}
    try:
        if args.config:
            config = load_config(args.config, args.overrides)
            datasets = {subset: build_dataset(config, subset) for subset in ("train", "test")}
            paths = list(dict.fromkeys(p for dataset in datasets.values() for p, _ in dataset.samples))
            splits = dataset_split_files(config)
            if splits is None and args.write_clean_lists:
                check_classes(datasets["train"], datasets["test"])       # one class list serves both splits
        elif args.folder:
            if not args.folder.is_dir():
                raise FileNotFoundError(f"--folder {args.folder} is not a folder")
            paths = videos_under(args.folder)
            if not paths:
                raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame folders under "
                                        f"{args.folder}")
        else:
            paths = [args.root / p for p, _ in read_video_list(args.list)]
            splits = SplitFiles("list", args.root, [args.list])
    except (ConfigError, DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    results = check_videos(paths, workers=args.workers, progress=not args.no_progress)
    write_csv(results, args.csv)
    print(summary(results))
    print(f"\nCSV: {args.csv}")
    bad = [r.path for r in results if r.status == "bad"]
    out = args.write_clean_lists
    if out and splits is not None:
        for name, count in clean_split_files(splits, bad, out).items():
            print(f"{out / name}: {count} line(s) dropped")
    elif out:
        # A folder dataset has no split files: write its videos, less the bad ones, as lists.
        samples = {"train": datasets["train"].samples, "val": datasets["test"].samples}
        train_list, val_list, classes = write_folder_lists(samples, datasets["train"].classes,
                                                           Path(config.data.root), bad, out)
        print(f"{train_list}, {val_list}: the train and val videos less {len(bad)} bad; {classes}: the classes")
        settings = {"data.dataset": "list", "data.root": config.data.root, "data.train_list": train_list,
                    "data.val_list": val_list, "data.classes": classes}
        print("train on them with: " + " ".join(shlex.quote(f"{key}={value}") for key, value in settings.items()))
    return 1 if bad else 0

