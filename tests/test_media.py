"""The downsampling demo: real image, GIF and video files written at test time; sizes, timing, channels,
errors, and the pooled values against the operators."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import softpool3d as sp
from softpool3d.datasets.io import write_video
from softpool3d.demo import run_demo
from softpool3d.media import MediaError, load_media, pool, pooled_durations, retention, upsample

pytest.importorskip("skimage")
ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run tools/<name> as a user does."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def files(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rgba = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 256, (33, 47, 4), dtype=np.uint8), "RGBA").save(rgba)
    grey = tmp_path / "grey.jpg"
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L").save(grey)
    gif = tmp_path / "anim.gif"
    frames = [Image.fromarray(rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)) for _ in range(5)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[50, 70, 90, 110, 130], loop=0)
    single = tmp_path / "single.gif"
    frames[0].save(single)
    clip = tmp_path / "clip.mp4"
    write_video(clip, rng.integers(0, 256, (9, 24, 32, 3), dtype=np.uint8), fps=10)
    return {"rgba": rgba, "grey": grey, "gif": gif, "single": single, "clip": clip}


def test_outputs_keep_format_channels_and_timing(files, tmp_path):
    out = tmp_path / "out"
    rows = run_demo(list(files.values()), out, factor=2, temporal_factor=2, methods=["soft", "max", "avg"])
    assert len(rows) == 15
    odd = load_media(out / "odd_soft.png")
    assert odd.frames.shape == (1, 17, 24, 4)                       # ceil mode: nothing cropped, alpha kept
    assert load_media(out / "grey_max.jpg").frames.shape == (1, 10, 15, 1)
    anim = load_media(out / "anim_avg.gif")
    assert anim.frames.shape[:3] == (3, 8, 9) and anim.durations == [120, 200, 130]
    assert load_media(out / "single_soft.gif").frames.shape[:3] == (1, 8, 9)
    clip = load_media(out / "clip_soft.mp4")
    assert clip.frames.shape[:3] == (5, 12, 16) and clip.fps == pytest.approx(5)
    for name in ("odd", "grey", "anim", "single", "clip"):
        assert (out / f"{name}_compare.png").stat().st_size > 0
    assert load_media(out / "anim_compare.gif").frames.shape[0] == 5


def test_soft_pool_of_pixels_matches_the_operator_and_lies_between_avg_and_max(seed):
    frames = np.random.default_rng(seed).integers(0, 256, (1, 9, 11, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255
    expected = (sp.soft_pool2d(x, 2, ceil_mode=True) * 255).round().permute(0, 2, 3, 1).numpy()
    soft = pool(frames, "soft", 2)
    np.testing.assert_array_equal(soft, expected.astype(np.uint8))
    high = (F.max_pool2d(x, 2, ceil_mode=True) * 255).round().permute(0, 2, 3, 1).numpy()
    low = (F.avg_pool2d(x, 2, ceil_mode=True) * 255).round().permute(0, 2, 3, 1).numpy()
    assert (soft >= low - 1).all() and (soft <= high + 1).all()
    clip = np.random.default_rng(seed).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    assert pool(clip, "soft", 2, 2).shape == (3, 4, 4, 1)


def test_retention_uses_skimage_metrics(seed):
    from skimage.metrics import peak_signal_noise_ratio

    frames = np.random.default_rng(seed).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    scores = retention(frames, "avg", 2)
    assert scores["psnr_area"] > 45                     # avg pooling is area interpolation, up to rounding
    back = upsample(pool(frames, "max", 2), frames.shape)
    assert back.shape == frames.shape
    assert retention(frames, "max", 2)["psnr_roundtrip"] == pytest.approx(
        peak_signal_noise_ratio(frames.astype(float), back, data_range=255))


def test_pooled_gif_timing():
    assert pooled_durations([10, 20, 30], 2) == [30, 30]
    assert pooled_durations([40], 2) == [40]


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(MediaError, match="broken.png"):
        load_media(bad)
    done = _tool("demo.py", str(bad), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "broken.png" in done.stderr
    with pytest.raises(MediaError, match="missing.gif: no such file"):
        load_media(tmp_path / "missing.gif")
    done = _tool("demo.py", str(bad), "--methods", "soft,median")
    assert done.returncode == 2 and "--methods: unknown ['median']" in done.stderr


def test_demo_prints_both_references(files, tmp_path):
    done = _tool("demo.py", str(files["gif"]), "--out", str(tmp_path / "o"), "--methods", "soft,avg")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "PSNR vs area" in out and "SSIM round trip" in out and "| anim.gif | gif | 5x16x18 | soft |" in out


def test_retention_study_on_a_small_folder(files, tmp_path):

    images, videos = tmp_path / "images", tmp_path / "videos"
    images.mkdir()
    videos.mkdir()
    files["rgba"].rename(images / "odd.png")
    files["grey"].rename(images / "grey.jpg")
    files["clip"].rename(videos / "clip.mp4")
    out = tmp_path / "retention.json"
    done = _tool("study_retention.py", "--images", str(images), "--videos", str(videos), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    block = report["sets"]["images 2D"]
    assert block["count"] == 2 and set(block["results"]["2"]) == {"soft", "max", "avg"}
    assert block["results"]["4"]["soft"]["psnr_roundtrip"]["n"] == 2
    assert report["sets"]["clips 3D"]["count"] == 1
    assert "| images 2D (2) | 2 | soft |" in done.stdout
