"""Kinetics CSVs in their real forms, its three folder layouts and missing videos; list and folder datasets."""

import time
import warnings

import pytest

from softpool3d.datasets import Kinetics, VideoFolder, VideoList, make_synthmotion
from softpool3d.datasets.annotations import AnnotationError

K400_HEADER = "label,youtube_id,time_start,time_end,split,is_cc"
K700_HEADER = "label,youtube_id,time_start,time_end,split"


def write_kinetics(root, csv_path, header, rows, layout):
    """rows: (label, ytid, start, end, split, present); writes the CSV and empty video files."""
    lines = [header]
    for label, ytid, start, end, split, present in rows:
        quoted = f'"{label}"' if " " in label else label
        lines.append(f"{quoted},{ytid},{start},{end},{split}" + (",0" if header == K400_HEADER else ""))
        if present:
            folder = {"label": root / label, "subset": root / split.replace("validate", "val") / label,
                      "flat": root}[layout]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{ytid}_{start:06d}_{end:06d}.mp4").touch()
    csv_path.write_text("\n".join(lines) + "\n")


ROWS = [("air drumming", "abc", 14, 24, "train", True), ("zumba", "def", 0, 10, "train", True),
        ("air drumming", "ghi", 3, 13, "train", False), ("zumba", "jkl", 5, 15, "validate", True),
        ("air drumming", "mno", 7, 17, "val", True)]


@pytest.mark.parametrize("layout", ["label", "subset", "flat"])
@pytest.mark.parametrize("header", [K400_HEADER, K700_HEADER])
def test_kinetics_layouts_csv_variants_and_missing(tmp_path, layout, header):
    write_kinetics(tmp_path / "videos", tmp_path / "k.csv", header, ROWS, layout)
    with pytest.warns(UserWarning, match=r"1 of 3 videos listed .* are not under"):
        train = Kinetics(tmp_path / "videos", tmp_path / "k.csv", "train")
    assert train.classes == ["air drumming", "zumba"]
    assert [(p.rsplit("/", 1)[1], label) for p, label in train.samples] == [("abc_000014_000024.mp4", 0),
                                                                             ("def_000000_000010.mp4", 1)]
    assert train.missing == ["ghi_000003_000013"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val = Kinetics(tmp_path / "videos", tmp_path / "k.csv", "val", classes=["zumba", "air drumming", "yoga"])
    assert sorted(label for _, label in val.samples) == [0, 1] and val.classes[2] == "yoga"


def test_kinetics_errors(tmp_path):
    write_kinetics(tmp_path / "videos", tmp_path / "k.csv", K400_HEADER, ROWS, "label")
    with pytest.raises(ValueError, match="not in the class list"):
        Kinetics(tmp_path / "videos", tmp_path / "k.csv", "train", classes=["zumba"])
    text = (tmp_path / "k.csv").read_text().splitlines()
    text[3] = "zumba,xyz,1,2"
    (tmp_path / "k.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(AnnotationError, match=r"k.csv:4: expected 6 fields"):
        Kinetics(tmp_path / "videos", tmp_path / "k.csv", "train")
    (tmp_path / "bad.csv").write_text("name,id\nx,y\n")
    with pytest.raises(AnnotationError, match="expected a header"):
        Kinetics(tmp_path / "videos", tmp_path / "bad.csv", "train")


def test_kinetics_builds_many_rows_without_probing(tmp_path):
    # 20k rows over empty files: construction must not open a video (they are empty) and stays fast.
    rows = [(f"class {i % 400:03d}", f"id{i:07d}", i % 300, i % 300 + 10, "train", i % 10 != 0) for i in range(20000)]
    write_kinetics(tmp_path / "videos", tmp_path / "k.csv", K400_HEADER, rows, "label")
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="2000 of 20000"):
        ds = Kinetics(tmp_path / "videos", tmp_path / "k.csv", "train")
    elapsed = time.perf_counter() - start
    assert len(ds) == 18000 and len(ds.classes) == 400
    print(f"20k-row Kinetics built in {elapsed:.2f} s")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthmotion(tmp_path_factory.mktemp("lists") / "s", num_classes=2, videos_per_class=3, groups=3,
                            frames=8, size=32, seed=2)


def test_video_folder_and_video_list(synth, tmp_path):
    folder = VideoFolder(synth / "videos")
    assert folder.classes == ["MoveLeft", "MoveRight"] and len(folder) == 6
    assert folder[0]["video"].dim() == 4
    lines = [f"{path} {label}" for path, label in folder.samples]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    listed = VideoList(tmp_path / "list.txt", subset="test")
    assert listed.samples == folder.samples and listed.classes == ["0", "1"]
    (tmp_path / "missing.txt").write_text("nowhere/x.mp4 0\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 1 entries of .*missing.txt do not exist"):
        VideoList(tmp_path / "missing.txt")


def test_rawframe_list_reads_frame_folders(synth, tmp_path):
    from PIL import Image

    from softpool3d.datasets import read_frames

    video = sorted((synth / "videos" / "MoveRight").iterdir())[0]
    frames = read_frames(video, range(8)).numpy()
    (tmp_path / "frames" / "clip").mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "frames" / "clip" / f"img_{i + 1:05d}.png")
    (tmp_path / "frames.txt").write_text("clip 8 1\n")
    ds = VideoList(tmp_path / "frames.txt", tmp_path / "frames", frames=True, classes=["a", "b"], subset="test")
    assert ds.backend == "frames" and ds[0]["label"] == 1 and ds[0]["video"].shape[0] == 3
