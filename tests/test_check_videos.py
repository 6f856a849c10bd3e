"""tools/check_videos.py on a SynthMotion copy with a bad and a cut-short video, written with PyAV."""

import csv
import subprocess
import sys

import pytest

from softpool3d.datasets import make_synthmotion, read_frames
from softpool3d.datasets.check import check_video
from softpool3d.datasets.io import write_video
from softpool3d.engine import load_config
from softpool3d.engine.data import build_dataset

from helpers import ROOT, cut_short, frames_that_decode


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """3 classes x 4 videos of 16 frames; one truncated to its first 300 bytes (bad), one rewritten with its
    index first and cut after 9 frames' packets (partial: the header still claims 16)."""
    root = make_synthmotion(tmp_path_factory.mktemp("synth"), num_classes=3, videos_per_class=4, frames=16, size=32,
                            groups=2)
    videos = sorted((root / "videos").rglob("*.mp4"))
    bad, partial = videos[0], videos[5]
    bad.write_bytes(bad.read_bytes()[:300])
    frames = read_frames(partial, range(16)).numpy()
    write_video(partial, frames, fps=10, options={"movflags": "faststart"})
    cut_short(partial, partial, 9)
    return root, bad, partial


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "check_videos.py"), "--no-progress", *args],
                          capture_output=True, text=True, timeout=600)


def test_check_a_configured_dataset_and_write_clean_lists(damaged, tmp_path):
    root, bad, partial = damaged
    done = _run("--config", str(ROOT / "configs" / "synthmotion.yaml"), f"data.root={root}", "--workers", "2",
                "--csv", str(tmp_path / "check.csv"), "--write-clean-lists", str(tmp_path / "clean"))
    assert done.returncode == 1, done.stderr[-2000:]                # a bad video: exit status 1
    with (tmp_path / "check.csv").open() as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert len(rows) == 12
    assert rows[str(bad)]["status"] == "bad" and "cannot open" in rows[str(bad)]["reason"]
    cut = rows[str(partial)]
    assert (cut["status"], int(cut["header_frames"]), int(cut["decoded_frames"])) == (
        "partial", 16, frames_that_decode(partial))
    others = [r for p, r in rows.items() if p not in (str(bad), str(partial))]
    assert all(r["status"] == "ok" and r["header_frames"] == r["decoded_frames"] == "16" for r in others)
    assert all(float(r["fps"]) == 10 and int(r["size_bytes"]) > 0 for r in others)
    assert "| bad | 1 |" in done.stdout and "| partial | 1 |" in done.stdout and "| ok | 10 |" in done.stdout
    assert f"bad: {bad}" in done.stdout

    # The clean lists: the same bytes (CRLF included) less the bad video's line, and classInd.txt beside them.
    original = root / "annotations"
    for name in ("trainlist01.txt", "testlist01.txt"):
        before = (original / name).read_bytes().splitlines(keepends=True)
        after = (tmp_path / "clean" / name).read_bytes().splitlines(keepends=True)
        assert after == [line for line in before if bad.name.encode() not in line]
    assert (tmp_path / "clean" / "classInd.txt").read_bytes() == (original / "classInd.txt").read_bytes()
    # ... which training can use as UCF-101 annotations: the bad video is gone, the partial one kept.
    config = load_config(ROOT / "configs" / "synthmotion.yaml", [
        "data.dataset=ucf101", f"data.root={root / 'videos'}", f"data.annotations={tmp_path / 'clean'}"])
    used = {p for subset in ("train", "test") for p, _ in build_dataset(config, subset).samples}
    assert str(bad) not in used and str(partial) in used and len(used) == 11


def test_check_a_folder_and_a_list(damaged, tmp_path):
    root, bad, partial = damaged
    done = _run("--folder", str(root / "videos"), "--workers", "1", "--csv", str(tmp_path / "folder.csv"))
    assert done.returncode == 1 and "| all | 12 |" in done.stdout
    good = [p for p in sorted((root / "videos").rglob("*.mp4")) if p not in (bad, partial)][:2]
    (tmp_path / "list.txt").write_text("".join(f"{p.relative_to(root)} 0\n" for p in [*good, partial]))
    done = _run("--list", str(tmp_path / "list.txt"), "--root", str(root), "--csv", str(tmp_path / "list.csv"))
    assert done.returncode == 0 and "| partial | 1 |" in done.stdout and "| ok | 2 |" in done.stdout
    assert _run("--folder", str(tmp_path / "nowhere")).returncode == 2


def test_a_file_that_breaks_halfway_is_partial(tmp_path, damaged):
    _, _, partial = damaged
    result = check_video(partial)
    assert result.status == "partial" and result.decoded_frames < result.header_frames
    assert check_video(tmp_path / "missing.mp4").status == "bad"
