"""Study 1: how much information soft, max and avg pooling keep, on images and clips nobody here made
(scikit-image's bundled photos) and on SynthMotion's test clips.

    softpool3d study-retention                       # skimage photos + data/synthmotion test split
    softpool3d study-retention --images DIR --videos DIR --out retention.json

Images are pooled 2D, clips 3D (time too), by factors 2 and 4 (ceil mode). For each method: mean ± std
of PSNR and SSIM (scikit-image) of the result upsampled back against the original ("round trip"), and
of the result against the input resized by area interpolation ("vs area"). See softpool3d.media.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np


from ..datasets.io import VIDEO_EXTENSIONS
from ..media import IMAGE_SUFFIXES, METHODS, load_media, retention

# scikit-image's bundled files that are drawings or test patterns rather than photos.
NOT_PHOTOS = {"chessboard_GRAY", "chessboard_RGB", "color", "phantom", "logo", "horse", "clock_motion"}


def skimage_photos() -> list[Path]:
    import skimage  # noqa: PLC0415

    folder = Path(skimage.data.__file__).parent
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg") and p.stem not in NOT_PHOTOS)


def synthmotion_test_clips(root: Path) -> list[Path]:
    lines = (root / "annotations" / "testlist01.txt").read_text().split()
    return [root / "videos" / line for line in lines if line.endswith(".mp4")]


def measure(paths: list[Path], factors: list[int], temporal: bool) -> dict:
    """{factor: {method: {metric: [values]}}} over ``paths``."""
    results = {f: {m: {} for m in METHODS} for f in factors}
    for path in paths:
        frames = load_media(path).frames
        for factor in factors:
            for method in METHODS:
                scores = retention(frames, method, factor, factor if temporal else 1)
                for key, value in scores.items():
                    results[factor][method].setdefault(key, []).append(value)
    return results


def summarise(values: list[float]) -> dict:
    finite = [v for v in values if np.isfinite(v)]
    return {"mean": statistics.fmean(finite) if finite else float("nan"),
            "std": statistics.pstdev(finite) if len(finite) > 1 else 0.0, "n": len(values),
            "infinite": len(values) - len(finite)}


def table(report: dict) -> str:
    lines = ["| data | factor | method | PSNR round trip (dB) | SSIM round trip | PSNR vs area (dB) | SSIM vs area |",
             "|---|---|---|---:|---:|---:|---:|"]
    for name, block in report["sets"].items():
        for factor, methods in block["results"].items():
            for method, metrics in methods.items():
                cells = [f"{metrics[k]['mean']:.{2 if 'psnr' in k else 4}f} ± {metrics[k]['std']:.{2 if 'psnr' in k else 4}f}"
                         for k in ("psnr_roundtrip", "ssim_roundtrip", "psnr_area", "ssim_area")]
                lines.append(f"| {name} ({block['count']}) | {factor} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=None, help="a folder of images (default: skimage's photos)")
    parser.add_argument("--videos", type=Path, default=None,
                        help="a folder of clips (default: the test split of data/synthmotion)")
    parser.add_argument("--synthmotion", type=Path, default=Path("data/synthmotion"))
    parser.add_argument("--factors", default="2,4")
    parser.add_argument("--out", type=Path, default=Path("retention.json"))
    args = parser.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]

    images = (sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if args.images
              else skimage_photos())
    if args.videos:
        clips = sorted(p for p in args.videos.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    else:
        if not (args.synthmotion / "annotations" / "testlist01.txt").is_file():
            from ..datasets import make_synthmotion  # noqa: PLC0415

            make_synthmotion(args.synthmotion, videos_per_class=80)
        clips = synthmotion_test_clips(args.synthmotion)
    if not images or not clips:
        parser.error(f"found {len(images)} images and {len(clips)} clips; both are needed")

    report = {"factors": factors, "sets": {}}
    for name, paths, temporal in (("images 2D", images, False), ("clips 3D", clips, True)):
        raw = measure(paths, factors, temporal)
        report["sets"][name] = {
            "count": len(paths), "files": [p.name for p in paths],
            "results": {f: {m: {k: summarise(v) for k, v in metrics.items()} for m, metrics in block.items()}
                        for f, block in raw.items()},
        }
    args.out.write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
