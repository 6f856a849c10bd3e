"""The downsampling demo: each input pooled with each method, saved side by side with labels and quality
scores, and a static ``index.html`` that shows every input beside its results."""

from __future__ import annotations

import html
import shutil
from urllib.parse import quote
from pathlib import Path

import numpy as np

from .media import Media, MediaError, load_media, pool, pooled_durations, retention, save_media

MIN_PANEL_WIDTH = 160     # results are enlarged (nearest neighbour) to at least this many pixels for showing
STRIP = 22                # height of the label strips above and below each panel, in pixels


def enlarge(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour enlargement of (T, h, w, C) to (T, H, W, C), for showing small results."""
    rows = np.minimum((np.arange(shape[0]) * frames.shape[1]) // shape[0], frames.shape[1] - 1)
    cols = np.minimum((np.arange(shape[1]) * frames.shape[2]) // shape[1], frames.shape[2] - 1)
    return frames[:, rows][:, :, cols]


def _rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, C) with C = 1, 3 or 4 -> (T, H, W, 3): grey repeated, alpha composited on white."""
    if frames.shape[-1] == 1:
        return np.repeat(frames, 3, axis=-1)
    if frames.shape[-1] == 4:
        alpha = frames[..., 3:].astype(np.float64) / 255
        return (frames[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return frames


def _text_strip(text: str, width: int) -> np.ndarray:
    """A white (STRIP, width, 3) strip with ``text`` centred in black."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    image = Image.new("RGB", (width, STRIP), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (right - left)) / 2 - left, (STRIP - (bottom - top)) / 2 - top), text, fill="black", font=font)
    return np.asarray(image)


def score_label(row: dict) -> str:
    """A method's round-trip scores as printed under its panel."""
    return f"PSNR {row['psnr_roundtrip']:.2f} dB, SSIM {row['ssim_roundtrip']:.3f}"


def side_by_side(original: np.ndarray, results: dict[str, np.ndarray], scores: dict[str, str]) -> np.ndarray:
    """Labelled panels: original | one per method, (T, H', W', 3) uint8.

    Each panel has its name and size above it and, for a method, ``scores[method]`` below it. Results are
    enlarged to the original's size and repeated in time to its length; panels are at least
    ``MIN_PANEL_WIDTH`` wide (nearest-neighbour enlargement) so that their labels fit.
    """
    t, h, w, _ = original.shape
    scale = max(1, -(-MIN_PANEL_WIDTH // w))
    shape = (h * scale, w * scale)
    panels = [("original", original, "")] + [(name, out, scores.get(name, "")) for name, out in results.items()]
    columns = []
    for name, frames, below in panels:
        size = "x".join(map(str, frames.shape[1:3]))
        big = _rgb(enlarge(frames, shape))
        big = np.repeat(big, -(-t // big.shape[0]), axis=0)[:t]
        top = _text_strip(f"{name} {size}", shape[1])
        bottom = _text_strip(below, shape[1])
        columns.append(np.concatenate([np.broadcast_to(top, (t, *top.shape)), big,
                                       np.broadcast_to(bottom, (t, *bottom.shape))], axis=1))
    gap = np.full((t, columns[0].shape[1], 6, 3), 255, dtype=np.uint8)
    row = [columns[0]]
    for column in columns[1:]:
        row += [gap, column]
    return np.concatenate(row, axis=2)


def run_demo(inputs: list[Path], out: Path, factor: int, temporal_factor: int, methods: list[str]) -> list[dict]:
    """Downsample each input with each method into ``out``; one row of quality scores per (input, method).

    Args:
        inputs: image, GIF or video files.
        out: the output folder: <stem>_<method>.<ext>, <stem>_original.<ext> (videos re-encoded as H.264
            MP4, which browsers play), <stem>_compare.png (labelled panels), for GIFs and clips
            <stem>_compare.gif, and index.html, a static page showing them all.
        factor: the spatial factor (height and width).
        temporal_factor: the factor along time for GIFs and clips (images have none).
        methods: some of ``METHODS``.
    """
    from PIL import Image  # noqa: PLC0415

    stems = [Path(path).stem for path in inputs]
    shared = sorted({stem for stem in stems if stems.count(stem) > 1})
    if shared:
        raise MediaError(f"inputs would write the same outputs: {', '.join(str(p) for p in inputs if Path(p).stem in shared)} "
                         "(rename one, or run them into different --out folders)")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in inputs:
        media = load_media(path)
        tf = 1 if media.kind == "image" else temporal_factor
        suffix = path.suffix.lower() if media.kind != "video" else ".mp4"
        if media.kind == "video":
            save_media(media, out / f"{path.stem}_original{suffix}")
        else:
            shutil.copyfile(path, out / f"{path.stem}_original{suffix}")
        results, scores = {}, {}
        for method in methods:
            frames = pool(media.frames, method, factor, tf)
            results[method] = frames
            pooled = Media(frames, media.kind, durations=pooled_durations(media.durations, tf),
                           fps=media.fps / max(1, min(tf, len(media.frames))), mode=media.mode)
            save_media(pooled, out / f"{path.stem}_{method}{suffix}")
            row = {"input": path.name, "stem": path.stem, "suffix": suffix, "kind": media.kind,
                   "size": "x".join(map(str, media.frames.shape[:3])), "method": method,
                   "out": "x".join(map(str, frames.shape[:3])),
                   **retention(media.frames, method, factor, tf, pooled=frames)}
            rows.append(row)
            scores[method] = score_label(row)
        compare = side_by_side(media.frames, results, scores)
        Image.fromarray(compare[len(compare) // 2]).save(out / f"{path.stem}_compare.png")
        if media.kind != "image":
            durations = media.durations or [1000 / (media.fps or 10)] * len(compare)
            save_media(Media(compare, "gif", durations=durations), out / f"{path.stem}_compare.gif")
    write_index(rows, out, factor, temporal_factor)
    return rows


# Marks the page's media as loaded or failed in <body data-status data-failed>, so that a headless browser
# (tests/test_demo_page.py) can tell that every file is there and plays.
_CHECK_SCRIPT = """
const media = [...document.querySelectorAll("img, video")];
const failed = [];
const done = media.map((el) => new Promise((resolve) => {
  const ok = () => resolve(), bad = () => { failed.push(el.getAttribute("src")); resolve(); };
  if (el.tagName === "IMG") {
    if (el.complete) { (el.naturalWidth > 0 ? ok : bad)(); } else { el.onload = ok; el.onerror = bad; }
  } else if (el.readyState >= 2) { ok(); } else { el.onloadeddata = ok; el.onerror = bad; }
}));
Promise.all(done).then(() => {
  document.body.dataset.failed = failed.join(" ");
  document.body.dataset.status = "loaded";
});
"""


def write_index(rows: list[dict], out: Path, factor: int, temporal_factor: int) -> Path:
    """``out/index.html``: for each input, the original beside each method's result at the same size, labelled
    with its size and scores; GIFs and clips play side by side. A static page that needs no server."""
    by_input: dict[str, list[dict]] = {}
    for row in rows:
        by_input.setdefault(row["stem"], []).append(row)
    sections = []
    for stem, group in by_input.items():
        first = group[0]
        _, h, w = (int(v) for v in first["size"].split("x"))
        scale = max(1, -(-MIN_PANEL_WIDTH // w))
        width, height = w * scale, h * scale
        cells = [_figure(f"{stem}_original{first['suffix']}", first["kind"], width, height,
                         f"original {first['size']}", "")]
        cells += [_figure(f"{stem}_{r['method']}{r['suffix']}", r["kind"], width, height,
                          f"{r['method']} {r['out']}", score_label(r)) for r in group]
        sections.append(f'<section>\n<h2>{html.escape(first["input"])} <small>({first["kind"]}, T x H x W '
                        f'{first["size"]})</small></h2>\n<div class="row">\n' + "\n".join(cells) + "\n</div>\n"
                        f'<p>{_compare_links(stem, first["kind"])}</p>\n'
                        "</section>")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>softpool3d demo: soft, max and avg pooling</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; text-align: center; }}
img, video {{ image-rendering: pixelated; display: block; }}
figcaption {{ font-size: 0.85em; }}
</style>
</head>
<body>
<h1>softpool3d demo</h1>
<p>Each input beside its results, downsampled by {factor} in height and width (and by {temporal_factor} in time
for GIFs and clips) with SoftPool, max and average pooling. Results are shown at the original's size
(nearest neighbour). Scores: scikit-image's PSNR and SSIM of each result, upsampled back (bilinear),
against the original.</p>
{chr(10).join(sections)}
<script>{_CHECK_SCRIPT}</script>
</body>
</html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _compare_links(stem: str, kind: str) -> str:
    """Links to the comparison picture and, for GIFs and clips, the comparison GIF."""
    names = [f"{stem}_compare.png"] + ([f"{stem}_compare.gif"] if kind != "image" else [])
    return ", ".join(f'<a href="{_link(name)}">{html.escape(name)}</a>' for name in names)


def _link(name: str) -> str:
    """A file name as a relative URL inside an HTML attribute (``#``, ``?``, ``%`` and spaces escaped)."""
    return html.escape(quote(name))


def _figure(src: str, kind: str, width: int, height: int, title: str, scores: str) -> str:
    src = _link(src)
    if kind == "video":
        element = (f'<video src="{src}" width="{width}" height="{height}" autoplay loop muted playsinline '
                   "controls></video>")
    else:
        element = f'<img src="{src}" width="{width}" height="{height}" alt="{html.escape(title)}">'
    caption = html.escape(title) + (f"<br>{html.escape(scores)}" if scores else "")
    return f"<figure>{element}<figcaption>{caption}</figcaption></figure>"


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
