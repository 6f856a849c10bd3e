"""Datasets on real files: SynthMotion through the UCF-101 path, transforms, and the bad-video policy
with DataLoader workers (truncated, empty, missing and not-a-video files)."""

import dataclasses
import random
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from softpool3d.datasets import UCF101, ClipConfig, VideoDataset, VideoDecodeError, collate_clips, make_synthmotion
from softpool3d.datasets.transforms import three_crop
from softpool3d.datasets.video_dataset import flip_label_map

CLIP = ClipConfig(clip_len=4, frame_interval=2, short_side=32, crop_size=28, num_clips=1, num_crops=1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthmotion(tmp_path_factory.mktemp("ucf") / "synth", num_classes=3, videos_per_class=3, groups=3,
                            frames=10, size=40, seed=1)


def test_ucf101_train_and_test_items(synth):
    train = UCF101(synth / "videos", synth / "annotations", 1, "train", clip=CLIP)
    assert train.classes == ["MoveLeft", "MoveRight", "MoveUp"]
    assert len(train) == 6 and all(p.startswith(str(synth / "videos")) for p, _ in train.samples)
    item = train[0]
    assert item["video"].shape == (3, 4, 28, 28) and item["video"].dtype == torch.float32
    assert item["label"] == train.samples[item["index"]][1] and item["replaced"] == []
    test = UCF101(synth / "videos", synth / "annotations", 1, "test",
                  clip=ClipConfig(clip_len=4, frame_interval=2, short_side=32, crop_size=28, num_clips=2, num_crops=3))
    assert len(test) == 3
    views = test[1]["video"]
    assert views.shape == (6, 3, 4, 28, 28)
    assert torch.equal(test[1]["video"], views)            # test views are deterministic


def test_flip_pairs_relabel_the_flipped_training_clips(synth):
    # A flip turns MoveLeft into MoveRight: a flipped clip of either takes the other's label; MoveUp keeps its own.
    pairs = dataclasses.replace(CLIP, flip=True, flip_pairs=(("MoveLeft", "MoveRight"),))
    relabelled = UCF101(synth / "videos", synth / "annotations", 1, "train", clip=pairs)
    plain = UCF101(synth / "videos", synth / "annotations", 1, "train", clip=dataclasses.replace(CLIP, flip=False))
    seen = set()
    for seed in range(40):
        index = seed % len(plain)
        for dataset in (relabelled, plain):     # the same seed: the same clip and crop
            torch.manual_seed(seed)
            random.seed(seed)
            item = dataset[index]
            if dataset is relabelled:
                got = item
        flipped = not torch.equal(got["video"], item["video"])
        assert torch.equal(got["video"], item["video"].flip(-1) if flipped else item["video"])
        expected = {0: 1, 1: 0}.get(item["label"], item["label"]) if flipped else item["label"]
        assert got["label"] == expected and got["path"] == item["path"]
        seen.add((plain.classes[item["label"]], flipped))
    assert seen == {(name, flipped) for name in plain.classes for flipped in (False, True)}
    # Testing never flips.
    test_pairs = UCF101(synth / "videos", synth / "annotations", 1, "test", clip=pairs)
    test_plain = UCF101(synth / "videos", synth / "annotations", 1, "test", clip=CLIP)
    assert all(torch.equal(test_pairs[i]["video"], test_plain[i]["video"]) and
               test_pairs[i]["label"] == test_plain[i]["label"] for i in range(len(test_plain)))


@pytest.mark.parametrize("pairs, message", [
    ((("MoveLeft", "MoveSideways"),), "'MoveSideways' is not a class of this dataset, but 'MoveLeft' is"),
    ((("MoveLeft", "MoveLeft"),), "not a pair of two different class names"),
    ((("MoveLeft", "MoveRight"), ("MoveUp", "MoveLeft")), "'MoveLeft' is in more than one pair"),
])
def test_flip_pairs_errors_name_the_class(synth, pairs, message):
    with pytest.raises(ValueError, match=message):
        UCF101(synth / "videos", synth / "annotations", 1, "train",
               clip=dataclasses.replace(CLIP, flip=True, flip_pairs=pairs))


def test_flip_pairs_of_classes_the_dataset_lacks_are_left_out(synth, caplog):
    # The main job's pairs on a 3-class SynthMotion: the rotation pair has neither class, so it is left out.
    pairs = (("MoveLeft", "MoveRight"), ("RotateClockwise", "RotateCounterClockwise"))
    with caplog.at_level("WARNING"):
        UCF101(synth / "videos", synth / "annotations", 1, "train", clip=dataclasses.replace(CLIP, flip_pairs=pairs))
    assert "neither RotateClockwise nor RotateCounterClockwise is a class of this dataset" in caplog.text
    assert flip_label_map(pairs, ["MoveLeft", "MoveRight", "MoveUp"]) == {0: 1, 1: 0}


def test_ucf101_missing_video_fails_at_construction(synth, tmp_path):
    copy = shutil.copytree(synth, tmp_path / "copy")
    victim = next((copy / "videos" / "MoveUp").iterdir())
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of \d+ videos listed in .*list01.txt are missing.*MoveUp"):
        UCF101(copy / "videos", copy / "annotations", 1, "train" if "_g01_" not in victim.name else "test", clip=CLIP)


def test_three_crop_and_centre_views():
    landscape = torch.arange(2 * 4 * 6).reshape(2, 4, 6)
    left, centre, right = three_crop(landscape, 4)
    assert torch.equal(left, landscape[:, :, :4]) and torch.equal(right, landscape[:, :, 2:])
    assert torch.equal(centre, landscape[:, :, 1:5])
    portrait = landscape.transpose(1, 2)
    assert torch.equal(three_crop(portrait, 4)[2], portrait[:, 2:, :])


def test_test_view_is_the_normalised_centre_crop(synth):
    clip = ClipConfig(clip_len=4, frame_interval=1, short_side=40, crop_size=20, mean=(0, 0, 0), std=(1, 1, 1))
    ds = UCF101(synth / "videos", synth / "annotations", 1, "test", clip=clip)
    from softpool3d.datasets import probe, read_frames
    path = ds.samples[0][0]
    start = (probe(path).num_frames - 4) // 2
    frames = read_frames(path, range(start, start + 4))           # 40x40 already: no resize
    expected = frames[:, 10:30, 10:30].permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(ds[0]["video"], expected)


@pytest.fixture(scope="module")
def with_bad_files(synth, tmp_path_factory):
    """Good SynthMotion videos plus four bad files, as (path, label) samples."""
    root = tmp_path_factory.mktemp("bad")
    good = sorted((synth / "videos").rglob("*.mp4"))
    data = good[0].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video\n" * 50)
    bad = [root / "truncated.mp4", root / "empty.mp4", root / "notes.mp4", root / "missing.mp4"]
    samples = [(str(p), i % 3) for i, p in enumerate(good)] + [(str(p), 0) for p in bad]
    return samples, {str(p) for p in bad}


def test_training_substitutes_bad_videos_with_workers(with_bad_files):
    samples, bad = with_bad_files
    ds = VideoDataset(samples, ["a", "b", "c"], train=True, clip=CLIP)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_clips, shuffle=False)
    seen, replaced = 0, []
    for batch in loader:
        assert batch["video"].shape[1:] == (3, 4, 28, 28) and not batch["skipped"]
        assert not set(batch["path"]) & bad
        seen += len(batch["path"])
        replaced += batch["replaced"]
    assert seen == len(samples) and bad <= set(replaced)
    # In-process reads record the failure in ds.failures too.
    item = ds[len(samples) - 1]
    assert item["path"] not in bad and ds.failures and ds.failures[0][0] in bad


def test_training_gives_up_after_max_retries(with_bad_files):
    _, bad = with_bad_files
    ds = VideoDataset([(p, 0) for p in sorted(bad)], ["a"], train=True, clip=CLIP, max_retries=3)
    with pytest.raises(RuntimeError, match="4 videos in a row could not be decoded"):
        ds[0]


def test_testing_raises_by_default_with_workers(with_bad_files):
    samples, _ = with_bad_files
    ds = VideoDataset(samples, ["a", "b", "c"], train=False, clip=CLIP)
    with pytest.raises(VideoDecodeError, match="cannot decode"):
        for _ in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips):
            pass


def test_testing_skip_reports_every_bad_video_with_workers(with_bad_files):
    samples, bad = with_bad_files
    ds = VideoDataset(samples, ["a", "b", "c"], train=False, clip=CLIP, on_error="skip")
    kept, skipped = [], []
    for batch in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_clips):
        kept += batch["path"]
        skipped += batch["skipped"]
    assert {path for path, _ in skipped} == bad
    assert all("cannot decode" in error or "past the end" in error for _, error in skipped)
    assert sorted(kept) == sorted(p for p, _ in samples if p not in bad)     # nothing substituted


def test_bad_arguments(synth):
    with pytest.raises(ValueError, match="on_error"):
        VideoDataset([("x", 0)], ["a"], train=False, on_error="ignore")
    with pytest.raises(ValueError, match="outside the 1 classes"):
        VideoDataset([("x", 3)], ["a"], train=False)
    with pytest.raises(ValueError, match="num_crops"):
        ClipConfig(num_crops=2)
    with pytest.raises(ValueError, match="crop_size"):
        ClipConfig(short_side=64, crop_size=112)
