"""UCF-101 split files in their real form (CRLF, 1-based, unlabeled test lines)."""

import pytest

from softpool3d.datasets.annotations import (
    AnnotationError,
    read_class_index,
    read_hmdb51_split,
    read_rawframe_list,
    read_ucf101_split,
    read_video_list,
)

CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "HandStandPushups", "YoYo"]


def write_crlf(path, lines):
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


@pytest.fixture
def ucf(tmp_path):
    write_crlf(tmp_path / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(CLASSES)])
    train = [f"{c}/v_{c}_g{g:02d}_c01.avi {i + 1}" for i, c in enumerate(CLASSES) for g in (8, 9)]
    # The official trainlist02.txt spells this folder 'HandstandPushups' against classInd's 'HandStandPushups'.
    train[5] = "HandstandPushups/v_HandStandPushups_g09_c01.avi 3"
    test = [f"{c}/v_{c}_g{g:02d}_c02.avi" for c in CLASSES for g in (1, 2, 3)]
    write_crlf(tmp_path / "trainlist01.txt", train)
    write_crlf(tmp_path / "testlist01.txt", test)
    return tmp_path


def test_reads_train_and_test_lists(ucf):
    train, classes = read_ucf101_split(ucf, 1, "train")
    assert classes == CLASSES
    assert len(train) == 8 and train[0] == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0)
    assert all(path.lower().startswith(CLASSES[label].lower() + "/") for path, label in train)
    assert train[5] == ("HandstandPushups/v_HandStandPushups_g09_c01.avi", 2)
    test, _ = read_ucf101_split(ucf, 1, "test")
    assert len(test) == 12 and test[-1] == ("YoYo/v_YoYo_g03_c02.avi", 3)
    assert not any("\r" in path for path, _ in train + test)


@pytest.mark.parametrize("file,line,content,match", [
    ("classInd.txt", 2, "2ApplyLipstick", "classInd.txt:2: expected '<index> <ClassName>'"),
    ("classInd.txt", 3, "4 HandStandPushups", "classInd.txt:3: expected class number 3"),
    ("trainlist01.txt", 3, "ApplyLipstick/v_ApplyLipstick_g08_c01.avi 3", "trainlist01.txt:3: label 3 is"),
    ("trainlist01.txt", 1, "Unknown/v_Unknown_g08_c01.avi 1", "trainlist01.txt:1: unknown class folder 'Unknown'"),
    ("trainlist01.txt", 2, "ApplyEyeMakeup/v_x.avi", "trainlist01.txt:2: expected '<Class>/<video> <label>'"),
    ("testlist01.txt", 5, "YoYo/v_YoYo_g01_c01.avi 4 extra", "testlist01.txt:5: expected '<Class>/<video>'"),
])
def test_malformed_lines_name_file_and_line(ucf, file, line, content, match):
    lines = (ucf / file).read_bytes().decode().split("\r\n")
    lines[line - 1] = content
    (ucf / file).write_bytes("\r\n".join(lines).encode())
    subset = "test" if file.startswith("test") else "train"
    with pytest.raises(AnnotationError, match=match):
        read_ucf101_split(ucf, 1, subset)


def test_bad_fold_subset_and_missing_file(ucf):
    with pytest.raises(ValueError, match="fold must be one of"):
        read_ucf101_split(ucf, 4)
    with pytest.raises(ValueError, match="subset must be one of"):
        read_ucf101_split(ucf, 1, "val")
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        read_ucf101_split(ucf, 2, "train")
    assert read_class_index(ucf / "classInd.txt") == CLASSES


# ---------------------------------------------------------------- HMDB-51

HMDB_CLASSES = ["brush_hair", "cartwheel", "wave"]


@pytest.fixture
def hmdb(tmp_path):
    for name in reversed(HMDB_CLASSES):       # written out of order: classes must come out sorted
        for fold in (1, 2, 3):
            lines = [f"April_09_{name}_u_nm_np1_ba_goo_{i}.avi {(i + fold) % 3}" for i in range(6)]
            write_crlf(tmp_path / f"{name}_test_split{fold}.txt", lines)
    return tmp_path


def test_hmdb51_tags_and_sorted_classes(hmdb):
    train, classes = read_hmdb51_split(hmdb, 1, "train")
    test, _ = read_hmdb51_split(hmdb, 1, "test")
    assert classes == HMDB_CLASSES
    assert len(train) == len(test) == 3 * 2
    assert ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0) in train      # (0 + 1) % 3 = 1: train
    assert ("wave/April_09_wave_u_nm_np1_ba_goo_1.avi", 2) in test                   # (1 + 1) % 3 = 2: test
    unused = "April_09_cartwheel_u_nm_np1_ba_goo_2.avi"                              # (2 + 1) % 3 = 0
    assert not any(path.endswith(unused) for path, _ in train + test)


def test_hmdb51_errors(hmdb):
    lines = (hmdb / "wave_test_split2.txt").read_bytes().decode().split("\r\n")
    lines[3] = "April_09_wave_u_nm_np1_ba_goo_3.avi 7"
    (hmdb / "wave_test_split2.txt").write_bytes("\r\n".join(lines).encode())
    with pytest.raises(AnnotationError, match=r"wave_test_split2.txt:4: expected '<video> <0\|1\|2>'"):
        read_hmdb51_split(hmdb, 2, "test")
    (hmdb / "cartwheel_test_split3.txt").unlink()
    with pytest.raises(FileNotFoundError, match="cartwheel_test_split3.txt"):
        read_hmdb51_split(hmdb, 3, "train")


# ---------------------------------------------------------------- list files

def test_video_and_rawframe_lists(tmp_path):
    (tmp_path / "videos.txt").write_text("a/x.mp4 0\nb/with space.mp4 3\n\n")
    assert read_video_list(tmp_path / "videos.txt") == [("a/x.mp4", 0), ("b/with space.mp4", 3)]
    (tmp_path / "frames.txt").write_text("a/x 120 0\r\nb/y 64 2\r\n")
    assert read_rawframe_list(tmp_path / "frames.txt") == [("a/x", 120, 0), ("b/y", 64, 2)]
    (tmp_path / "bad.txt").write_text("a/x.mp4 0\nb/y.mp4 two\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:2: expected '<path> <label>'"):
        read_video_list(tmp_path / "bad.txt")
    (tmp_path / "bad_frames.txt").write_text("a/x 0 1\n")
    with pytest.raises(AnnotationError, match=r"bad_frames.txt:1: expected '<frame_dir> <num_frames >= 1> <label>'"):
        read_rawframe_list(tmp_path / "bad_frames.txt")
