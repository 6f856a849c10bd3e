"""Downsample images, GIFs and clips with SoftPool, max and average pooling, side by side.

    softpool3d demo                                  # scikit-image's photos and GIF, and a SynthMotion clip
    softpool3d demo photo.jpg anim.gif clip.mp4 --out demo --factor 2 --temporal-factor 2

For each input and method: the downsampled file in the input's format (GIFs keep their timing),
<name>_compare.png (original | soft | max | avg, labelled, each result with its PSNR and SSIM against
the original after upsampling back), for GIFs and clips <name>_compare.gif, and <out>/index.html, a
static page with every input beside its results, GIFs and clips playing side by side. Prints how much
information each method keeps (see softpool3d.media).
Odd sizes use ceil_mode: the last window is partial and nothing is cropped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


from ..demo import run_demo, table
from ..media import METHODS, MediaError


def sample_inputs(folder: Path) -> list[Path]:
    """scikit-image's astronaut, chelsea and coffee photos and its animated GIF, and one SynthMotion clip."""
    import skimage  # noqa: PLC0415

    from ..datasets.io import write_video  # noqa: PLC0415
    from ..datasets.synthetic import CLASSES, _background, render_video  # noqa: PLC0415

    data = Path(skimage.data.__file__).parent
    paths = [data / name for name in ("astronaut.png", "chelsea.png", "coffee.png", "no_time_for_that_tiny.gif")]
    clip = folder / "synthmotion_RotateClockwise.mp4"
    rng = np.random.default_rng(0)
    write_video(clip, render_video(CLASSES[4], rng, _background(rng, 128), 16), fps=10)
    return paths + [clip]


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
            rows = run_demo(inputs, args.out, args.factor, temporal, methods)
        except MediaError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(table(rows))
    print(f"\noutputs in {args.out}/; open {args.out / 'index.html'} in a browser to see them side by side")
    return 0


if __name__ == "__main__":
    sys.exit(main())
