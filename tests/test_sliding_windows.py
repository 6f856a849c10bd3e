"""Sliding-window prediction over long videos: segments found on concatenated SynthMotion classes, the
tool's CSV, PNG and summary, short videos, and memory that does not grow with the video's length."""

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softpool3d.datasets.io import write_video
from softpool3d.datasets.synthetic import CLASSES, _background, render_video
from softpool3d.datasets.transforms import build_transforms
from softpool3d.engine import load_config, save_checkpoint
from softpool3d.engine.config import to_plain
from softpool3d.engine.data import clip_config
from softpool3d.engine.sliding import WindowScores, plot_timeline, score_windows, segments, window_indices
from softpool3d.models import build_model

from helpers import ROOT

OVERRIDES = ["data.clip_len=8", "data.frame_interval=2", "data.short_side=64", "data.crop_size=64"]
SEGMENT_CLASSES = ["MoveLeft", "RotateClockwise", "Approach"]


class PrototypeClassifier(nn.Module):
    """Nearest class prototype of the clip's mean frame at 8x8: logits = -10 x distance.

    A trained SynthMotion network takes minutes to train; this one is fitted to the segments' own clips,
    so what the test checks is the sliding-window machinery: windows, timing, streaming and segments.
    """

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(prototypes, requires_grad=False)

    @staticmethod
    def describe(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool3d(x, (1, 8, 8)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -10 * torch.cdist(self.describe(x), self.prototypes)


@pytest.fixture(scope="module")
def concatenated(tmp_path_factory):
    """Three SynthMotion clips of 30 frames (3 s at 10 fps) of different classes, one after another."""
    folder = tmp_path_factory.mktemp("long")
    parts = []
    for k, name in enumerate(SEGMENT_CLASSES):
        rng = np.random.default_rng(k)
        parts.append(render_video(name, rng, _background(np.random.default_rng(100 + k), 64), 30))
    write_video(folder / "three_actions.mp4", np.concatenate(parts), fps=10)
    config = load_config(ROOT / "configs" / "synthmotion.yaml", OVERRIDES)
    transform = build_transforms(clip_config(config), train=False)
    prototypes = torch.cat([PrototypeClassifier.describe(transform(torch.from_numpy(p))[0].unsqueeze(0))
                            for p in parts])
    return folder / "three_actions.mp4", config, PrototypeClassifier(prototypes)


def test_the_timeline_finds_the_segments(concatenated):
    path, config, model = concatenated
    windows = score_windows(model, config, path, window=2.0, stride=1.0)
    assert [(w.start, w.end) for w in windows] == [(float(s), s + 2.0) for s in range(8)]   # 2 s every 1 s
    for w in windows:
        inside = [k for k in range(3) if 3 * k <= w.start and w.end <= 3 * k + 3]
        if inside:
            assert SEGMENT_CLASSES[int(w.probs.argmax())] == SEGMENT_CLASSES[inside[0]], (w.start, w.end)
    found = [name for _, _, name in segments(windows, SEGMENT_CLASSES)]
    assert found == SEGMENT_CLASSES


def test_a_video_shorter_than_a_window_is_one_window(concatenated, tmp_path):
    _, config, model = concatenated
    short = tmp_path / "short.mp4"
    write_video(short, render_video("MoveUp", np.random.default_rng(5), _background(np.random.default_rng(6), 64), 6),
                fps=10)
    windows = score_windows(model, config, short, window=4.0, stride=2.0)
    assert len(windows) == 1 and (windows[0].start, windows[0].end) == (0.0, 0.6)
    assert window_indices(0, 6, 8, 2) == [0, 1, 1, 2, 3, 4, 4, 5]       # spread over the frames there are
    with pytest.raises(ValueError, match="must be > 0"):
        score_windows(model, config, short, window=0, stride=1)


def test_predict_tool_writes_csv_png_and_summary(concatenated, tmp_path):
    path, config, _ = concatenated
    model = build_model("r3d_10", num_classes=len(CLASSES), pool="soft")
    save_checkpoint({"model": model.state_dict(), "config": to_plain(config), "classes": list(CLASSES)},
                    tmp_path / "m.pt")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "predict.py"), str(path), "--checkpoint",
                           str(tmp_path / "m.pt"), "--window", "2", "--stride", "1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "out" / "three_actions_windows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and rows[0]["start"] == "0.00" and rows[-1]["end"] == "9.00"
    assert set(rows[0]) == {"start", "end", *[f"top{k}" for k in range(1, 6)], *[f"score{k}" for k in range(1, 6)]}
    assert (tmp_path / "out" / "three_actions_timeline.png").stat().st_size > 5000
    lines = done.stdout.splitlines()
    assert lines[0] == str(path) and len([line for line in lines[1:6] if "%" in line]) == 5
    assert "8 windows of 2 s; segments:" in done.stdout


MEMORY = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from softpool3d.engine import load_config
from softpool3d.engine.sliding import score_windows
from softpool3d.models import build_model
config = load_config({config!r}, {overrides!r})
model = build_model("r3d_10", num_classes=3, pool="soft").eval()
score_windows(model, config, {short!r}, 2.0, 1.0)                    # warm-up: imports, allocator, codecs
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
windows = score_windows(model, config, {long!r}, 2.0, 1.0)
print(len(windows), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_memory_does_not_grow_with_the_videos_length(tmp_path):
    # 240x320 noise: the long video's 400 frames would take 92 MB if they were all held.
    rng = np.random.default_rng(0)
    write_video(tmp_path / "short.mp4", rng.integers(0, 256, (40, 240, 320, 3), dtype=np.uint8), fps=20)
    write_video(tmp_path / "long.mp4", rng.integers(0, 256, (400, 240, 320, 3), dtype=np.uint8), fps=20)
    script = MEMORY.format(root=str(ROOT), config=str(ROOT / "configs" / "synthmotion.yaml"), overrides=OVERRIDES,
                           short=str(tmp_path / "short.mp4"), long=str(tmp_path / "long.mp4"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    windows, grown_kb = (int(v) for v in done.stdout.split())
    print(f"{windows} windows, peak RSS grew {grown_kb / 1024:.1f} MiB over the 10x shorter video")
    assert windows == 19 and grown_kb < 25 * 1024


class TinyVideoNet(nn.Module):
    """A small network that sees the order of frames (a 3x3x3 convolution), for checks on the clips' frames."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv3d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * self.net(x)


@pytest.fixture(scope="module")
def ten_and_a_half_seconds(tmp_path_factory):
    """105 frames at 10 fps (10.5 s) of moving shapes, and every frame as PyAV decodes it."""
    import av

    path = tmp_path_factory.mktemp("tail") / "tail.mp4"
    rng = np.random.default_rng(3)
    parts = [render_video(name, rng, _background(rng, 64), 35) for name in SEGMENT_CLASSES]
    write_video(path, np.concatenate(parts), fps=10)
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])
    assert len(frames) == 105
    return path, torch.from_numpy(frames)


def test_windows_cover_the_tail_and_never_run_past_the_end(ten_and_a_half_seconds):
    path, frames = ten_and_a_half_seconds
    config = load_config(ROOT / "configs" / "synthmotion.yaml", OVERRIDES)
    model = TinyVideoNet().eval()
    windows = score_windows(model, config, path, window=4.0, stride=3.0)
    # Every 3 s while a window fits, then one aligned to the end for the last 0.5 s.
    assert [(w.start, w.end) for w in windows] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0), (6.5, 10.5)]
    # Each window's scores are the model's on its clip, transformed as a whole (frames decoded here).
    transform = build_transforms(clip_config(config), train=False)
    for w in windows:
        picks = window_indices(round(w.start * 10), 40, 8, 2)
        with torch.no_grad():
            expected = torch.softmax(model(transform(frames[picks])[0].unsqueeze(0)), dim=1)[0]
        torch.testing.assert_close(w.probs, expected, rtol=1e-4, atol=1e-6)

    # A clip shorter than its window (4 frames in 2 s): the window from 9 s would end at 11 s.
    short_clips = load_config(ROOT / "configs" / "synthmotion.yaml", [*OVERRIDES, "data.clip_len=4",
                                                                     "data.frame_interval=1"])
    windows = score_windows(model, short_clips, path, window=2.0, stride=1.0)
    assert [w.start for w in windows] == [*map(float, range(9)), 8.5] and max(w.end for w in windows) == 10.5
    assert all(w.end - w.start == pytest.approx(2.0) for w in windows)
    # The printed segments tile the video: no overlap, no gap.
    runs = segments(windows, SEGMENT_CLASSES)
    assert runs[0][0] == 0.0 and runs[-1][1] == 10.5
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(runs, runs[1:]))
    # A window that fits exactly leaves no tail, so no extra window.
    assert [w.start for w in score_windows(model, config, path, window=1.5, stride=3.0)] == [0.0, 3.0, 6.0, 9.0]


def test_segments_split_overlapping_windows_at_their_centres_midpoints():
    one_hot = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    windows = [WindowScores(s, s + 4.0, one_hot[k]) for k, s in enumerate([0.0, 3.0])]
    windows.append(WindowScores(6.5, 10.5, one_hot[1]))
    # Centres 2, 5 and 8.5: "a" holds [0, 3.5), "b" [3.5, 10.5].
    assert segments(windows, ["a", "b"]) == [(0.0, 3.5, "a"), (3.5, 10.5, "b")]


def test_the_timeline_plot_leaves_matplotlibs_backend_alone(concatenated, tmp_path):
    import matplotlib

    path, config, model = concatenated
    windows = score_windows(model, config, path, window=2.0, stride=1.0)
    before = matplotlib.get_backend()
    matplotlib.use("svg")                    # as a notebook would have its own backend
    try:
        plot_timeline(windows, SEGMENT_CLASSES, tmp_path / "timeline.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_keeps_the_relative_path_of_same_named_videos(ten_and_a_half_seconds, tmp_path, capsys):
    source, _ = ten_and_a_half_seconds
    config = load_config(ROOT / "configs" / "synthmotion.yaml", OVERRIDES)
    model = build_model("r3d_10", num_classes=len(SEGMENT_CLASSES), pool="soft")
    save_checkpoint({"model": model.state_dict(), "config": to_plain(config), "classes": SEGMENT_CLASSES},
                    tmp_path / "m.pt")
    for target in ("a/clip.mp4", "b/clip.mp4", "a/clip.avi"):
        (tmp_path / target).parent.mkdir(exist_ok=True)
        shutil.copy(source, tmp_path / target)
    from softpool3d.cli.predict import main
    common = ["--checkpoint", str(tmp_path / "m.pt"), "--window", "4", "--stride", "3", "--out", str(tmp_path / "out")]

    assert main([str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"), *common]) == 0
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*"))
    assert written == ["a/clip_timeline.png", "a/clip_windows.csv", "b/clip_timeline.png", "b/clip_windows.csv"]
    printed = capsys.readouterr().out
    assert "4 windows of 4 s" in printed and "10.50 s" in printed and "11.00" not in printed

    # a/clip.mp4 and a/clip.avi would share a/clip_windows.csv: one line, before anything runs.
    assert main([str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "a" / "clip.avi"), *common[:-1],
                 str(tmp_path / "clash")]) == 2
    error = capsys.readouterr().err
    assert "clip.mp4" in error and "clip.avi" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "clash").exists()
