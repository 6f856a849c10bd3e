"""Downsample images, GIFs and clips with SoftPool, max and average pooling, side by side.

    python tools/demo.py                                  # scikit-image's photos and GIF, and a SynthMotion clip
    python tools/demo.py photo.jpg anim.gif clip.mp4 --out demo --factor 2 --temporal-factor 2

For each input and method: the downsampled file in the input's format (GIFs keep their timing),
<name>_compare.png (original | soft | max | avg, results enlarged with nearest neighbours), and
for GIFs <name>_compare.gif. Prints how much information each method keeps (see softpool3d.media).
Odd sizes use ceil_mode: the last window is partial and nothing is cropped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.media import (METHODS, Media, MediaError, load_media, pool, pooled_durations,  # noqa: E402
                              retention, save_media)


def sample_inputs(folder: Path) -> list[Path]:
    """scikit-image's astronaut, chelsea and coffee photos and its animated GIF, and one SynthMotion clip."""
    import skimage  # noqa: PLC0415

    from softpool3d.datasets.synthetic import CLASSES, render_video, write_video, _background  # noqa: PLC0415

    data = Path(skimage.data.__file__).parent
    paths = [data / name for name in ("astronaut.png", "chelsea.png", "coffee.png", "no_time_for_that_tiny.gif")]
    clip = folder / "synthmotion_RotateClockwise.mp4"
    rng = np.random.default_rng(0)
    write_video(clip, render_video(CLASSES[4], rng, _background(rng, 128), 16), fps=10)
    return paths + [clip]


def enlarge(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour enlargement of (T, h, w, C) to (T, H, W, C), for showing small results."""
    rows = np.minimum((np.arange(shape[0]) * frames.shape[1]) // shape[0], frames.shape[1] - 1)
    cols = np.minimum((np.arange(shape[1]) * frames.shape[2]) // shape[1], frames.shape[2] - 1)
    return frames[:, rows][:, :, cols]


def side_by_side(original: np.ndarray, results: dict[str, np.ndarray]) -> np.ndarray:
    """(T, H, W, C) frames: original | soft | max | avg, results repeated in time to the original's length."""
    t, h, w, c = original.shape
    panels = [original]
    for out in results.values():
        big = enlarge(out, (h, w))
        repeat = int(np.ceil(t / big.shape[0]))
        panels.append(np.repeat(big, repeat, axis=0)[:t])
    gap = np.full((t, h, 4, c), 255, dtype=np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=2)


def run(inputs: list[Path], out: Path, factor: int, temporal_factor: int, methods: list[str]) -> list[dict]:
    from PIL import Image  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in inputs:
        media = load_media(path)
        tf = 1 if media.kind == "image" else temporal_factor
        results = {}
        for method in methods:
            frames = pool(media.frames, method, factor, tf)
            results[method] = frames
            pooled = Media(frames, media.kind, durations=pooled_durations(media.durations, tf),
                           fps=media.fps / max(1, min(tf, len(media.frames))), mode=media.mode)
            suffix = path.suffix.lower() if media.kind != "video" else ".mp4"
            save_media(pooled, out / f"{path.stem}_{method}{suffix}")
            scores = retention(media.frames, method, factor, tf, pooled=frames)
            rows.append({"input": path.name, "kind": media.kind, "size": "x".join(map(str, media.frames.shape[:3])),
                         "method": method, "out": "x".join(map(str, frames.shape[:3])), **scores})
        compare = side_by_side(media.frames, results)
        middle = compare[len(compare) // 2]
        Image.fromarray(middle[..., 0] if middle.shape[-1] == 1 else middle).save(out / f"{path.stem}_compare.png")
        if media.kind == "gif":
            save_media(Media(compare, "gif", durations=media.durations, mode=media.mode),
                       out / f"{path.stem}_compare.gif")
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| input | kind | T x H x W | method | output | PSNR vs area (dB) | SSIM vs area | "
        "PSNR round trip (dB) | SSIM round trip |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['input']} | {r['kind']} | {r['size']} | {r['method']} | {r['out']} | {r['psnr_area']:.2f} | "
                     f"{r['ssim_area']:.4f} | {r['psnr_roundtrip']:.2f} | {r['ssim_roundtrip']:.4f} |")
    lines.append("")
    lines.append("vs area: the result against the input resized to the same size by area interpolation (which "
                 "avg pooling equals, up to rounding to uint8, when the factor divides the size). Round trip: the result "
                 "upsampled back (bilinear) against the original. scikit-image's PSNR and SSIM, range 0-255.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, help="images, GIFs or videos (default: sample media)")
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--factor", type=int, default=2, help="spatial factor (height and width)")
    parser.add_argument("--temporal-factor", type=int, default=None, help="for GIFs and clips (default: --factor)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: soft,max,avg")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.factor < 1 or (args.temporal_factor is not None and args.temporal_factor < 1):
        parser.error("--factor and --temporal-factor must be >= 1")
    temporal = args.factor if args.temporal_factor is None else args.temporal_factor
    with tempfile.TemporaryDirectory() as scratch:
        inputs = args.inputs or sample_inputs(Path(scratch))
        try:
            rows = run(inputs, args.out, args.factor, temporal, methods)
        except MediaError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(table(rows))
    print(f"\noutputs in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
