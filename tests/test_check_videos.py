"""tools/check_videos.py on a SynthMotion copy with a bad and a cut-short video, written with PyAV."""

import csv
import importlib
import shlex
import subprocess
import sys

import pytest

from softpool3d.datasets import make_synthmotion, read_frames
from softpool3d.datasets.check import check_video
from softpool3d.datasets.io import write_video
from softpool3d.engine import load_config
from softpool3d.engine.data import build_dataset

from helpers import ROOT, cut_short, frames_that_decode, numbered_frames


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


# ---------------------------------------------------------------- clean lists name videos by their path


check_tool = importlib.import_module("softpool3d.cli.check_videos")   # tools/check_videos.py's code, run in this process


@pytest.fixture(scope="module")
def same_names(tmp_path_factory):
    """Run/001.mp4, Run/002.mp4, Walk/001.mp4 (bad: its first 300 bytes) and Walk/002.mp4 under videos/:
    two classes whose videos share file names, as many datasets' do."""
    root = tmp_path_factory.mktemp("same_names")
    for name in ("Run/001.mp4", "Run/002.mp4", "Walk/001.mp4", "Walk/002.mp4"):
        write_video(root / "videos" / name, numbered_frames(6), fps=10)
    bad = root / "videos" / "Walk" / "001.mp4"
    bad.write_bytes(bad.read_bytes()[:300])
    return root


def _without(path, *lines):
    """``path``'s lines, byte for byte, less those equal to one of ``lines`` (given without line endings)."""
    return [line for line in path.read_bytes().splitlines(keepends=True) if line.rstrip(b"\r\n") not in lines]


def test_clean_lists_drop_the_bad_path_not_every_file_of_that_name(same_names, tmp_path, capsys):
    root, videos = same_names, same_names / "videos"
    synth = str(ROOT / "configs" / "synthmotion.yaml")
    common = ["--workers", "1", "--no-progress"]

    # UCF-101: CRLF lines, 1-based labels; the class folder is matched case-insensitively, as the loader does.
    ucf = tmp_path / "ucf"
    ucf.mkdir()
    (ucf / "classInd.txt").write_bytes(b"1 Run\r\n2 Walk\r\n")
    (ucf / "trainlist01.txt").write_bytes(b"Run/001.mp4 1\r\nwalk/001.mp4 2\r\n")
    (ucf / "testlist01.txt").write_bytes(b"Run/002.mp4\r\nWalk/002.mp4\r\n")
    code = check_tool.main(["--config", synth, "data.dataset=ucf101", f"data.root={videos}",
                            f"data.annotations={ucf}", "--csv", str(tmp_path / "ucf.csv"),
                            "--write-clean-lists", str(tmp_path / "ucf_clean"), *common])
    assert code == 1
    assert (tmp_path / "ucf_clean" / "trainlist01.txt").read_bytes() == b"Run/001.mp4 1\r\n"
    assert (tmp_path / "ucf_clean" / "testlist01.txt").read_bytes() == (ucf / "testlist01.txt").read_bytes()
    assert (tmp_path / "ucf_clean" / "classInd.txt").read_bytes() == (ucf / "classInd.txt").read_bytes()

    # HMDB-51: a line names only the file; its class is the split file's name.
    hmdb = tmp_path / "hmdb"
    hmdb.mkdir()
    for name in ("Run", "Walk"):
        (hmdb / f"{name}_test_split1.txt").write_text("001.mp4 1 \n002.mp4 2 \n")
    code = check_tool.main(["--config", synth, "data.dataset=hmdb51", f"data.root={videos}",
                            f"data.annotations={hmdb}", "--csv", str(tmp_path / "hmdb.csv"),
                            "--write-clean-lists", str(tmp_path / "hmdb_clean"), *common])
    assert code == 1
    clean = tmp_path / "hmdb_clean"
    assert (clean / "Run_test_split1.txt").read_bytes() == (hmdb / "Run_test_split1.txt").read_bytes()
    assert (clean / "Walk_test_split1.txt").read_bytes() == b"002.mp4 2 \n"

    # A 'path label' list, from a config and with --list.
    listed = tmp_path / "train.txt"
    listed.write_text("Run/001.mp4 0\nWalk/001.mp4 1\nWalk/002.mp4 1\n")
    code = check_tool.main(["--config", synth, "data.dataset=list", f"data.root={videos}",
                            f"data.train_list={listed}", f"data.val_list={listed}", "--csv", str(tmp_path / "l.csv"),
                            "--write-clean-lists", str(tmp_path / "list_clean"), *common])
    assert code == 1
    assert (tmp_path / "list_clean" / "train.txt").read_bytes() == b"Run/001.mp4 0\nWalk/002.mp4 1\n"
    listed.write_text("videos/Run/001.mp4 0\nvideos/Walk/001.mp4 1\n")
    code = check_tool.main(["--list", str(listed), "--root", str(root), "--csv", str(tmp_path / "l2.csv"),
                            "--write-clean-lists", str(tmp_path / "list_clean2"), *common])
    assert code == 1 and (tmp_path / "list_clean2" / "train.txt").read_bytes() == b"videos/Run/001.mp4 0\n"

    # Kinetics: a row names its video by youtube_id and times, wherever the file lies.
    kinetics = tmp_path / "kinetics"
    for source, target in (("Run/001.mp4", "run/aaa_000001_000011.mp4"), ("Walk/001.mp4", "walk/bbb_000002_000012.mp4"),
                           ("Walk/002.mp4", "walk/ccc_000003_000013.mp4")):
        (kinetics / target).parent.mkdir(parents=True, exist_ok=True)
        (kinetics / target).write_bytes((videos / source).read_bytes())
    rows = (tmp_path / "kinetics.csv")
    rows.write_text('label,youtube_id,time_start,time_end,split,is_cc\nrun,aaa,1,11,train,0\n"walk",bbb,2,12,train,0\n'
                    "walk,ccc,3,13,train,0\nrun,aaa,1,11,validate,0\nwalk,ccc,3,13,validate,0\n")
    code = check_tool.main(["--config", synth, "data.dataset=kinetics", f"data.root={kinetics}",
                            f"data.train_list={rows}", f"data.val_list={rows}", "--csv", str(tmp_path / "k.csv"),
                            "--write-clean-lists", str(tmp_path / "kinetics_clean"), *common])
    assert code == 1
    assert (tmp_path / "kinetics_clean" / "kinetics.csv").read_bytes() == b"".join(
        _without(rows, b'"walk",bbb,2,12,train,0'))


def test_clean_lists_of_a_folder_dataset_are_lists_the_list_dataset_reads(same_names, tmp_path, capsys):
    # A folder dataset has no split files: its clean lists are 'path label' lists of its train and val
    # folders (paths relative to data.root) and a class list, which data.dataset=list reads.
    root = tmp_path / "folder"
    for split, name in (("train", "Run/001.mp4"), ("train", "Walk/001.mp4"), ("train", "Walk/002.mp4"),
                        ("val", "Run/002.mp4"), ("val", "Walk/002.mp4")):
        (root / split / name).parent.mkdir(parents=True, exist_ok=True)
        (root / split / name).write_bytes((same_names / "videos" / name).read_bytes())
    folder = ["--config", str(ROOT / "configs" / "synthmotion.yaml"), "data.dataset=folder", f"data.root={root}",
              "data.flip=false"]
    clean = tmp_path / "clean"
    # key=value overrides may sit on either side of the options.
    code = check_tool.main([*folder[:4], "--csv", str(tmp_path / "folder.csv"), "--write-clean-lists", str(clean),
                            "--workers", "1", folder[4], "--no-progress"])
    assert code == 1                                                    # a bad video: exit status 1, as always
    assert (clean / "train.txt").read_text() == "train/Run/001.mp4 0\ntrain/Walk/002.mp4 1\n"
    assert (clean / "val.txt").read_text() == "val/Run/002.mp4 0\nval/Walk/002.mp4 1\n"
    assert (clean / "classes.txt").read_text() == "Run\nWalk\n"
    # It prints the settings that train on them; with those alone, the list dataset reads the folder
    # dataset's samples and classes, less the bad video.
    printed = capsys.readouterr().out.split("train on them with: ")[1].splitlines()[0]
    use = shlex.split(printed)
    assert use == ["data.dataset=list", f"data.root={root}", f"data.train_list={clean / 'train.txt'}",
                   f"data.val_list={clean / 'val.txt'}", f"data.classes={clean / 'classes.txt'}"]
    as_folder = load_config(ROOT / "configs" / "synthmotion.yaml", folder[2:])
    as_list = load_config(ROOT / "configs" / "synthmotion.yaml", ["data.flip=false", *use])
    for subset in ("train", "test"):
        before, after = build_dataset(as_folder, subset), build_dataset(as_list, subset)
        assert list(after.classes) == list(before.classes) == ["Run", "Walk"]
        assert after.samples == [s for s in before.samples if s[0] != str(root / "train" / "Walk" / "001.mp4")]


def test_no_videos_in_a_folder_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "empty" / "Run").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no videos here\n")
    assert check_tool.main(["--folder", str(tmp_path / "empty"), "--csv", str(tmp_path / "c.csv"),
                            "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: no videos") and str(tmp_path / "empty") in error and "\n" not in error
    assert not (tmp_path / "c.csv").exists()
