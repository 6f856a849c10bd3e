"""Top-5 classes for video files, from a training checkpoint (which carries the class names) or from
published pretrained weights (their class names, normalisation and clip come from the weights registry).

    softpool3d predict clip1.mp4 clip2.avi --checkpoint runs/synthmotion_r3d_10_soft/last.pt [--views 3x1]
    softpool3d predict long.mp4 --checkpoint P --window 2.0 --stride 1.0 --out predictions
    softpool3d predict video.mp4 --model r2plus1d_18 --pretrained kinetics400 [--pool max]

With --window and --stride (seconds) a video of any length is scored by sliding windows, streaming
(memory does not grow with its length). Windows start every --stride seconds while they fit, and one
more is aligned to the video's end when they leave a tail, so the whole video is scored and no window
runs past its end. <out>/<video>_windows.csv has each window's start, end and top-5 classes with
scores, <out>/<video>_timeline.png the top classes' probabilities over time, and the video-level top-5
(the mean over windows) and the timeline's segments are printed. The segments do not overlap: each
moment goes to the window whose centre is nearest.

<video> is the file's path relative to the videos' common folder, without its suffix: one video
clip.mp4 gives <out>/clip_windows.csv; a/clip.mp4 and b/clip.mp4 give <out>/a/clip_windows.csv and
<out>/b/clip_windows.csv. Two videos that would share a name (a/clip.mp4 and a/clip.avi) are an error
before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..datasets import VideoDecodeError
from ..engine import CheckpointError, model_from_checkpoint, predict
from ..engine.inference import output_stems
from ..engine.config import ConfigError, load_config, parse_views
from ..engine.sliding import plot_timeline, score_windows, segments, video_scores, write_windows_csv
from ..models import build_model, has_downsampling_pools, weight_set
from ..models.pretrained import PretrainedError


def print_ranked(path: Path, ranked: list[tuple[str, float]]) -> None:
    print(path)
    for name, probability in ranked:
        print(f"  {probability:7.2%}  {name}")


def pretrained_model(name: str, tag: str, pool: str):
    """The model with weight set ``tag``, a config whose clip and normalisation are the weights', the class names."""
    weights = weight_set(name, tag)
    if weights.classes is None:
        raise PretrainedError(f"{name} {tag}: softpool3d does not ship its {weights.num_classes} class names, "
                              "so predictions cannot be named")
    data = {"clip_len": weights.clip_len, "frame_interval": weights.frame_interval or 2,
            "short_side": weights.short_side, "crop_size": weights.crop_size,
            "mean": list(weights.mean), "std": list(weights.std)}
    config = load_config(None, [f"model.name={name}", f"model.pool={pool}"]
                         + [f"data.{key}={value}" for key, value in data.items()])
    print(f"{name} {tag} ({weights.source}): {weights.clip_len} frames, crop {weights.crop_size}, "
          f"mean {weights.mean}, std {weights.std}; {weights.accuracy}", file=sys.stderr)
    pools = {"pool": pool} if has_downsampling_pools(name) else {}   # others have no pool for it to change
    model = build_model(name, pretrained=tag, **pools).eval()
    return model, config, list(weights.classes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--checkpoint", help="a training checkpoint of softpool3d")
    parser.add_argument("--model", help="with --pretrained: the architecture, e.g. r2plus1d_18")
    parser.add_argument("--pretrained", help="a weight tag of --model, e.g. kinetics400 (instead of --checkpoint)")
    parser.add_argument("--pool", choices=["soft", "max", "avg"],
                        help="with --pretrained: the downsampling pools (default max, what the published weights "
                             "were trained with)")
    parser.add_argument("--views", default="1x1", help="CLIPSxCROPS averaged per video (default 1x1)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--window", type=float, help="sliding windows of this many seconds")
    parser.add_argument("--stride", type=float, help="seconds between window starts (default: --window / 2)")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="with --window: CSV and PNG go here")
    args = parser.parse_args(argv)
    if args.stride is not None and args.window is None:
        parser.error("--stride needs --window")
    if (args.window is not None and args.window <= 0) or (args.stride is not None and args.stride <= 0):
        parser.error("--window and --stride must be > 0 seconds")
    if (args.checkpoint is None) == (args.pretrained is None) or (args.pretrained is None) != (args.model is None):
        parser.error("give either --checkpoint, or --model with --pretrained")
    if args.pool is not None and args.checkpoint is not None:
        parser.error("--pool is for --pretrained; a checkpoint keeps the pools it was trained with")
    try:
        views = parse_views(args.views, name="--views")
        # With --window: where each video's CSV and PNG go (a clash is an error before anything runs).
        stems = output_stems(args.videos) if args.window is not None else args.videos
        if args.checkpoint is not None:
            model, config, classes = model_from_checkpoint(args.checkpoint)
        else:
            model, config, classes = pretrained_model(args.model, args.pretrained, args.pool or "max")
    except (ConfigError, CheckpointError, PretrainedError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = 0
    for path, stem in zip(args.videos, stems):
        try:
            if args.window is None:
                (ranked,) = predict(model, classes, config, [path], views=views, top=args.top)
                print_ranked(path, ranked)
                continue
            windows = score_windows(model, config, path, args.window, args.stride or args.window / 2,
                                    progress=sys.stderr.isatty())
        except (VideoDecodeError, FileNotFoundError, ValueError) as error:
            print(f"{path}: cannot read: {error}", file=sys.stderr)
            status = 1
            continue
        csv_path = args.out / stem.parent / f"{stem.name}_windows.csv"
        png_path = args.out / stem.parent / f"{stem.name}_timeline.png"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        write_windows_csv(windows, classes, csv_path, args.top)
        plot_timeline(windows, classes, png_path, args.top)
        probs = video_scores(windows)
        p, i = probs.topk(min(args.top, len(classes)))
        print_ranked(path, [(classes[k], float(v)) for k, v in zip(i.tolist(), p.tolist())])
        print(f"  {len(windows)} windows of {args.window:g} s; segments:")
        for start, end, name in segments(windows, classes):
            print(f"    {start:7.2f} - {end:7.2f} s  {name}")
        print(f"  wrote {csv_path} and {png_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
