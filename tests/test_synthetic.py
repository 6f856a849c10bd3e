"""SynthMotion: real mp4 files in UCF-101's layout, split by group, the same bytes for a seed."""

import re

import numpy as np
import pytest

from softpool3d.datasets import make_synthmotion, probe, read_frames
from softpool3d.datasets.synthetic import CLASSES, _background, _bar_mask, _trajectory, render_video
from softpool3d.datasets.annotations import read_ucf101_split

SMALL = dict(num_classes=4, videos_per_class=6, frames=8, size=32, groups=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_synthmotion(tmp_path_factory.mktemp("synth") / "a", seed=3, **SMALL)


def test_layout_and_split_by_group(small):
    train, classes = read_ucf101_split(small / "annotations", 1, "train")
    test, _ = read_ucf101_split(small / "annotations", 1, "test")
    assert classes == list(CLASSES[:4])
    assert len(train) + len(test) == 4 * 6 and train and test
    group = lambda path: re.search(r"_g(\d+)_c", path).group(1)  # noqa: E731
    assert not {group(p) for p, _ in train} & {group(p) for p, _ in test}
    assert {label for _, label in test} == {0, 1, 2, 3}
    assert (small / "annotations" / "classInd.txt").read_bytes().startswith(b"1 MoveLeft\r\n")
    for path, label in train + test:
        video = small / "videos" / path
        assert video.suffix == ".mp4" and path.startswith(classes[label] + "/v_" + classes[label] + "_g")
        info = probe(video)
        assert (info.num_frames, info.height, info.width) == (8, 32, 32)


def test_deterministic_for_a_seed(small, tmp_path):
    # The rendered frames are a function of the seed, bit for bit.
    def render(seed):
        return render_video("MoveDown", np.random.default_rng([seed, 2, 3, 1]),
                            _background(np.random.default_rng([seed, 1, 3, 1]), 32), 8)

    assert np.array_equal(render(3), render(3)) and not np.array_equal(render(3), render(4))
    # So are the files: write_video turns off x264's macroblock-tree rate control, which encoded the
    # same frames to different bytes now and then (seen: 204 of 360 files, up to 3.9 grey levels apart
    # on average). The second copy is written by 2 processes; another seed gives other pictures.
    again = make_synthmotion(tmp_path / "b", seed=3, workers=2, **SMALL)
    other = make_synthmotion(tmp_path / "c", seed=4, **SMALL)
    listing = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert listing(again) == listing(small)
    for name in listing(small):
        assert (again / name).read_bytes() == (small / name).read_bytes(), name
    name = "videos/MoveDown/v_MoveDown_g02_c01.mp4"
    first = read_frames(small / name, range(8)).float()
    assert (first - read_frames(other / name, range(8)).float()).abs().mean() > 15


def centroid(mask):
    ys, xs = np.nonzero(mask > 0.5)
    return xs.mean(), ys.mean(), mask.sum()


@pytest.mark.parametrize("label", CLASSES)
def test_each_class_moves_as_named(label):
    rng = np.random.default_rng(0)
    cx, cy, scale, angle = _trajectory(label, rng, 16, 64)
    first = centroid(_bar_mask(64, cx[0], cy[0], 20 * scale[0], 4, angle[0]))
    last = centroid(_bar_mask(64, cx[-1], cy[-1], 20 * scale[-1], 4, angle[-1]))
    dx, dy, growth = last[0] - first[0], last[1] - first[1], last[2] / first[2]
    expected = {"MoveLeft": dx < -10, "MoveRight": dx > 10, "MoveUp": dy < -10, "MoveDown": dy > 10,
                "RotateClockwise": np.diff(angle).min() > 0, "RotateCounterClockwise": np.diff(angle).max() < 0,
                "Approach": growth > 1.5, "Recede": growth < 0.67}
    if label in expected:
        assert expected[label]
    else:  # SpeedUp / SlowDown: steps grow or shrink
        steps = np.abs(np.diff(cx))
        assert (steps[-1] > 3 * steps[0]) if label == "SpeedUp" else (steps[0] > 3 * steps[-1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        make_synthmotion("/nonexistent", num_classes=11)
    with pytest.raises(ValueError, match="size must be an even"):
        make_synthmotion("/nonexistent", size=33)
    with pytest.raises(ValueError, match="videos_per_class"):
        make_synthmotion("/nonexistent", videos_per_class=2, groups=3)
