"""Top-5 classes for video files, from a training checkpoint (which carries the class names) or from
published pretrained weights (their class names, normalisation and clip come from the weights registry).

    python tools/predict.py clip1.mp4 clip2.avi --checkpoint runs/synthmotion_r3d_10_soft/last.pt [--views 3x1]
    python tools/predict.py long.mp4 --checkpoint P --window 2.0 --stride 1.0 --out predictions
    python tools/predict.py video.mp4 --model r2plus1d_18 --pretrained kinetics400 [--pool max]

With --window and --stride (seconds) a video of any length is scored by sliding windows, streaming
(memory does not grow with its length): <out>/<video>_windows.csv has each window's start, end and
top-5 classes with scores, <out>/<video>_timeline.png the top classes' probabilities over time, and
the video-level top-5 (the mean over windows) and the timeline's segments are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.datasets import VideoDecodeError  # noqa: E402
from softpool3d.engine import CheckpointError, model_from_checkpoint, predict  # noqa: E402
from softpool3d.engine.config import ConfigError, load_config, parse_views  # noqa: E402
from softpool3d.models import build_model, weight_set  # noqa: E402
from softpool3d.models.pretrained import PretrainedError  # noqa: E402
from softpool3d.engine.sliding import (plot_timeline, score_windows, segments, video_scores,  # noqa: E402
                                       write_windows_csv)


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
    model = build_model(name, pretrained=tag, pool=pool).eval()
    return model, config, list(weights.classes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--checkpoint", help="a training checkpoint of softpool3d")
    parser.add_argument("--model", help="with --pretrained: the architecture, e.g. r2plus1d_18")
    parser.add_argument("--pretrained", help="a weight tag of --model, e.g. kinetics400 (instead of --checkpoint)")
    parser.add_argument("--pool", default="max", help="with --pretrained: soft | max | avg (default max, "
                                                      "what the published weights were trained with)")
    parser.add_argument("--views", default="1x1", help="CLIPSxCROPS averaged per video (default 1x1)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--window", type=float, help="sliding windows of this many seconds")
    parser.add_argument("--stride", type=float, help="seconds between window starts (default: --window / 2)")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="with --window: CSV and PNG go here")
    args = parser.parse_args(argv)
    if args.stride is not None and args.window is None:
        parser.error("--stride needs --window")
    if (args.checkpoint is None) == (args.pretrained is None) or (args.pretrained is None) != (args.model is None):
        parser.error("give either --checkpoint, or --model with --pretrained")
    try:
        views = parse_views(args.views)
        if args.checkpoint is not None:
            model, config, classes = model_from_checkpoint(args.checkpoint)
        else:
            model, config, classes = pretrained_model(args.model, args.pretrained, args.pool)
    except (ConfigError, CheckpointError, PretrainedError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = 0
    for path in args.videos:
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
        args.out.mkdir(parents=True, exist_ok=True)
        write_windows_csv(windows, classes, args.out / f"{path.stem}_windows.csv", args.top)
        plot_timeline(windows, classes, args.out / f"{path.stem}_timeline.png", args.top)
        probs = video_scores(windows)
        p, i = probs.topk(min(args.top, len(classes)))
        print_ranked(path, [(classes[k], float(v)) for k, v in zip(i.tolist(), p.tolist())])
        print(f"  {len(windows)} windows of {args.window:g} s; segments:")
        for start, end, name in segments(windows, classes):
            print(f"    {start:7.2f} - {end:7.2f} s  {name}")
        print(f"  wrote {args.out / (path.stem + '_windows.csv')} and {args.out / (path.stem + '_timeline.png')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
