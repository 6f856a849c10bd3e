"""tools/resize_videos.py on a small tree of MP4, AVI and MKV files written with PyAV, one of them broken."""

import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from softpool3d.datasets.io import write_video
from softpool3d.datasets.resize import resize_tree, scaled_size

from helpers import ROOT, frame_numbers, frames_that_decode, numbered_frames


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "Walk" / "v_Walk_g01_c01.mp4", numbered_frames(20, 48, 64), fps=25)
    portrait = np.ascontiguousarray(numbered_frames(12, 96, 64))
    write_video(root / "Walk" / "v_Walk_g01_c02.avi", portrait, fps=15, codec="mpeg4")
    write_video(root / "Run" / "clip.mkv", numbered_frames(9, 64, 80), fps=10)
    (root / "Run" / "broken.mp4").write_bytes(b"not a video at all" * 50)
    (root / "notes.txt").write_text("not a video\n")
    return root


def _info(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def test_resize_keeps_layout_frames_and_rate(tree, tmp_path):
    out = tmp_path / "small"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "resize_videos.py"), str(tree), str(out),
                           "--short-side", "32", "--workers", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1                                       # the broken file failed
    assert "resized 3, skipped 0 (up to date), failed 1" in done.stdout
    assert f"failed: {tree / 'Run' / 'broken.mp4'}" in done.stdout
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert outputs == ["Run/clip.mkv", "Walk/v_Walk_g01_c01.mp4", "Walk/v_Walk_g01_c02.avi"]
    for name, size, fps in (("Walk/v_Walk_g01_c01.mp4", (42, 32), 25), ("Walk/v_Walk_g01_c02.avi", (32, 48), 15),
                            ("Run/clip.mkv", (40, 32), 10)):
        assert _info(out / name) == (*size, fps), name
        assert frames_that_decode(out / name) == frames_that_decode(tree / name)
    assert not list(out.rglob(".*partial*"))


def test_resize_is_resumable(tree, tmp_path):
    out = tmp_path / "small"
    first = resize_tree(tree, out, short_side=64, progress=False)
    assert [r.status for r in first].count("resized") == 3
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    again = resize_tree(tree, out, short_side=64, progress=False)
    assert [r.status for r in again].count("skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamps
    # An interrupted run leaves a temporary file and no output: that video is redone, the rest skipped.
    mkv = out / "Run" / "clip.mkv"
    mkv.rename(mkv.with_name(".clip.partial.mkv"))
    # A changed source is newer than its output: redone too.
    source = tree / "Walk" / "v_Walk_g01_c01.mp4"
    os.utime(source, (source.stat().st_atime, source.stat().st_mtime + 100))
    third = {r.source: r.status for r in resize_tree(tree, out, short_side=64, progress=False)}
    assert third[str(tree / "Run" / "clip.mkv")] == "resized" and third[str(source)] == "resized"
    assert third[str(tree / "Walk" / "v_Walk_g01_c02.avi")] == "skipped"
    assert mkv.is_file() and not (out / "Run" / ".clip.partial.mkv").exists()
    # The same frames, in order: scaled back to 64x48, each shows the number drawn into its source frame.
    with av.open(str(out / "Walk" / "v_Walk_g01_c01.mp4")) as container:
        frames = [f.reformat(width=64, height=48).to_ndarray(format="rgb24")
                  for f in container.decode(container.streams.video[0])]
    assert frame_numbers(torch.from_numpy(np.stack(frames))) == list(range(20))


def test_scaled_size_and_refusals(tree):
    assert scaled_size(340, 256, 128) == (170, 128) and scaled_size(256, 340, 128) == (128, 170)
    assert scaled_size(1920, 1080, 256) == (456, 256)
    with pytest.raises(ValueError, match="must not be inside"):
        resize_tree(tree, tree / "small", 32, progress=False)


def test_no_videos_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "empty" / "Run").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no videos here\n")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "resize_videos.py"), str(tmp_path / "empty"),
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: no videos") and str(tmp_path / "empty") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="no videos"):
        resize_tree(tmp_path / "empty", tmp_path / "out", progress=False)
