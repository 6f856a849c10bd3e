"""The demo's labelled pictures and its static page, opened in a real browser (Debian's headless Chromium).

The page marks itself ``data-status="loaded"`` once every <img> and <video> has loaded or failed, and
lists the failures in ``data-failed``; Chromium's ``--dump-dom`` gives the page as it stands then. A
screenshot of the page is kept under ``$SOFTPOOL3D_ARTIFACTS`` (default ``test-artifacts/``).
"""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from softpool3d.datasets.io import write_video
from softpool3d.demo import MIN_PANEL_WIDTH, STRIP, run_demo
from softpool3d.media import MediaError, load_media

pytest.importorskip("skimage")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo run on an RGB image, a GIF and an H.264 clip written here; (out folder, rows)."""
    tmp = tmp_path_factory.mktemp("demo")
    rng = np.random.default_rng(0)
    image = tmp / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(image)
    gif = tmp / "anim.gif"
    frames = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(6)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=80, loop=0)
    clip = tmp / "clip.avi"                       # an AVI input: the page needs an MP4 a browser plays
    write_video(clip, rng.integers(0, 256, (12, 32, 48, 3), dtype=np.uint8), fps=10, codec="mpeg4")
    out = tmp / "out"
    rows = run_demo([image, gif, clip], out, factor=2, temporal_factor=2, methods=["soft", "max", "avg"])
    return out, rows


class _Media(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.body = [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "video"):
            self.sources.append((tag, attrs["src"], attrs.get("width"), attrs.get("height")))
        if tag == "body":
            self.body = attrs


def test_compare_picture_is_labelled_and_scored(demo):
    out, rows = demo
    picture = np.asarray(Image.open(out / "photo_compare.png").convert("RGB"))
    scale = -(-MIN_PANEL_WIDTH // 60)
    panel_w, panel_h = 60 * scale, 40 * scale
    assert picture.shape[0] == panel_h + 2 * STRIP                    # a label strip above and below
    assert picture.shape[1] == 4 * panel_w + 3 * 6                   # original | soft | max | avg
    for column in range(4):
        left = column * (panel_w + 6)
        top = picture[:STRIP, left:left + panel_w]
        below = picture[STRIP + panel_h:, left:left + panel_w]
        assert (top < 128).any(), f"panel {column} has no title"
        assert (below < 128).any() == (column > 0), f"panel {column}: scores only under pooled panels"
    # The panels hold the pictures: the original panel enlarges the input exactly.
    original = np.asarray(Image.open(out / "photo_original.png").convert("RGB"))
    np.testing.assert_array_equal(picture[STRIP:STRIP + panel_h:scale, 0:panel_w:scale], original)
    gif = load_media(out / "anim_compare.gif")
    assert gif.frames.shape[0] == 6
    assert load_media(out / "clip_compare.gif").frames.shape[0] == 12


def test_same_stem_twice_is_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / folder / "x.png")
    with pytest.raises(MediaError, match="same outputs"):
        run_demo([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "o", 2, 2, ["soft"])


def test_index_names_every_output_at_one_size(demo):
    out, rows = demo
    parser = _Media()
    parser.feed((out / "index.html").read_text())
    sources = {src: (tag, w, h) for tag, src, w, h in parser.sources}
    for stem, suffix, kind in (("photo", ".png", "img"), ("anim", ".gif", "img"), ("clip", ".mp4", "video")):
        names = [f"{stem}_{m}{suffix}" for m in ("original", "soft", "max", "avg")]
        assert all(sources[n][0] == kind for n in names), names
        assert len({sources[n][1:] for n in names}) == 1, "side by side at one size"
        assert all((out / n).is_file() for n in names)
    page = (out / "index.html").read_text()
    for row in rows:
        assert f"PSNR {row['psnr_roundtrip']:.2f} dB, SSIM {row['ssim_roundtrip']:.3f}" in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_loads_in_a_real_browser(demo, tmp_path):
    out, _ = demo
    url = (out / "index.html").resolve().as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Media()
    parser.feed(dom.stdout)
    assert parser.body.get("data-status") == "loaded", "the page's media never finished loading"
    assert parser.body.get("data-failed") == "", f"missing or unplayable: {parser.body.get('data-failed')}"
    assert len(parser.sources) == 12
    artifacts = Path(os.environ.get("SOFTPOOL3D_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "demo_page.png"
    done = subprocess.run([*flags, "--window-size=1400,1400", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert re.search(r"PSNR \d+\.\d\d dB", dom.stdout) and picture.std() > 10     # not a blank page
