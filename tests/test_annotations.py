"""UCF-101 split files in their real form (CRLF, 1-based, unlabeled test lines)."""

import pytest

from softpool3d.datasets.ucf101 import AnnotationError, read_class_index, read_ucf101_split

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
