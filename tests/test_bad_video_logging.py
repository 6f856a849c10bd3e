"""A bad training video is logged once per run, also when DataLoader worker processes read it."""

import logging

from omegaconf import OmegaConf

from softpool3d.datasets import VideoDataset
from softpool3d.datasets.io import write_video
from softpool3d.datasets.transforms import ClipConfig
from softpool3d.engine.data import loader

from helpers import cut_short, numbered_frames


def test_a_bad_video_is_logged_once_with_two_workers(tmp_path):
    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    write_video(good, numbered_frames(12), fps=10)
    bad.write_text("not a video\n" * 10)
    # Samples 0 and 1 go to workers 0 and 1 (one per batch), so both workers read the bad file, in
    # each of two epochs; replacements draw among the good samples or the bad one again.
    samples = [(str(bad), 0), (str(bad), 0), (str(good), 1), (str(good), 1)]
    clip = ClipConfig(clip_len=4, frame_interval=1, short_side=32, crop_size=32, flip=False)
    dataset = VideoDataset(samples, ["a", "b"], train=True, clip=clip, backend="pyav")
    config = OmegaConf.create({"data": {"num_workers": 2}})
    batches = loader(dataset, range(len(samples)), 1, config, train=True)
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)    # forked workers inherit it: what they log lands here too
    log = logging.getLogger("softpool3d.datasets")
    log.addHandler(handler)
    try:
        replaced = [path for _ in range(2) for batch in batches for path in batch["replaced"]]
    finally:
        log.removeHandler(handler)
        handler.close()
    assert replaced.count(str(bad)) >= 4          # both workers met it, in both epochs
    lines = [line for line in log_file.read_text().splitlines() if "cannot use" in line]
    assert len(lines) == 1 and str(bad) in lines[0] and "cannot decode" in lines[0]


def test_a_bad_video_read_in_this_process_is_logged_once(tmp_path, caplog):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    good = tmp_path / "good.mp4"
    write_video(good, numbered_frames(8), fps=10)
    clip = ClipConfig(clip_len=4, frame_interval=1, short_side=32, crop_size=32, flip=False)
    dataset = VideoDataset([(str(bad), 0), (str(good), 0)], ["a"], train=True, clip=clip, backend="pyav")
    config = OmegaConf.create({"data": {"num_workers": 0}})
    with caplog.at_level(logging.WARNING, logger="softpool3d.datasets"):
        for _ in range(3):
            for _batch in loader(dataset, [0, 0], 1, config, train=True):
                pass
    assert [r.getMessage() for r in caplog.records].count(f"cannot use {bad}: cannot decode {bad}: "
                                                          "the file is empty (0 bytes)") == 1
    assert len(dataset.failures) >= 6


def test_a_partial_video_is_reported_once_with_two_workers(tmp_path):
    whole = tmp_path / "whole.mp4"
    write_video(whole, numbered_frames(40, noise=True), fps=10, options={"movflags": "faststart"})
    partial = cut_short(whole, tmp_path / "partial.mp4", 22)       # the header still claims 40
    clip = ClipConfig(clip_len=4, frame_interval=1, short_side=32, crop_size=32, num_clips=2)
    # Test views reach the end of the file, so both workers find it short, once per sample.
    dataset = VideoDataset([(str(partial), 0)] * 2, ["a"], train=False, clip=clip, backend="pyav")
    config = OmegaConf.create({"data": {"num_workers": 2}})
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)
    log = logging.getLogger("softpool3d.datasets")
    log.addHandler(handler)
    try:
        found = [p for batch in loader(dataset, range(2), 1, config, train=False) for p in batch["partial"]]
    finally:
        log.removeHandler(handler)
        handler.close()
    assert len(found) == 2
    lines = [line for line in log_file.read_text().splitlines() if "the header says" in line]
    assert lines == [f"{partial}: the header says 40 frames but {found[0][2]} decode; using the "
                     f"{found[0][2]} that decode"]
