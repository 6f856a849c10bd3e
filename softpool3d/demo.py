"""The downsampling demo: each input pooled with each method, saved side by side, with quality scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .media import Media, load_media, pool, pooled_durations, retention, save_media


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


def run_demo(inputs: list[Path], out: Path, factor: int, temporal_factor: int, methods: list[str]) -> list[dict]:
    """Downsample each input with each method into ``out``; one row of quality scores per (input, method).

    Args:
        inputs: image, GIF or video files.
        out: the output folder: <stem>_<method>.<ext>, <stem>_compare.png and, for GIFs, <stem>_compare.gif.
        factor: the spatial factor (height and width).
        temporal_factor: the factor along time for GIFs and clips (images have none).
        methods: some of ``METHODS``.
    """
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
    """The rows of ``run_demo`` as a markdown table, with what the columns mean."""
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
