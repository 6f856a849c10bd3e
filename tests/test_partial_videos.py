"""Files whose header claims more frames than decode (cut-short downloads): used, never skipped or replaced.

The files are written with PyAV and cut short so that the header still claims every frame:
AVI (mpeg4) keeps its header at the start, MP4 does with ``movflags=faststart``. MKV stores
no count: its packets are counted, so a cut MKV is simply a shorter video.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from torch.utils.data import DataLoader

from softpool3d.datasets import VideoDataset, VideoDecodeError, collate_clips, probe, read_frames, read_video
from softpool3d.datasets.io import write_video
from softpool3d.datasets.transforms import ClipConfig
from softpool3d.engine import load_config, save_checkpoint
from softpool3d.engine.config import to_plain
from softpool3d.models import build_model

from helpers import cut_short, decoded_numbers, frame_numbers, frames_that_decode, numbered_frames

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 40
FORMATS = {  # name -> (codec, muxer options)
    "clip.avi": ("mpeg4", None),
    "clip.mp4": ("libx264", {"movflags": "faststart"}),
    "clip.mkv": ("libx264", None),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Per format: the whole file, one cut after 22 frames' packets and one cut before the first packet."""
    root = tmp_path_factory.mktemp("partial")
    video = numbered_frames(FRAMES, noise=True)
    for name, (codec, options) in FORMATS.items():
        whole = root / name
        write_video(whole, video, fps=25, codec=codec, options=options)
        cut_short(whole, root / f"partial_{name}", 22)
        cut_short(whole, root / f"empty_{name}", 0)
    return root


@pytest.mark.parametrize("name", ["clip.avi", "clip.mp4"])
def test_read_video_chooses_from_the_frames_that_decode(videos, name):
    path = videos / f"partial_{name}"
    numbers = decoded_numbers(path)
    truth = len(numbers)
    assert 8 < truth < FRAMES
    assert probe(path).num_frames == FRAMES       # the header still claims every frame
    seen = []
    decoded = read_video(path, lambda count: seen.append(count) or [count - 1, 0, count // 2], "pyav")
    assert decoded.partial and decoded.num_frames == truth and decoded.header_frames == FRAMES
    assert frame_numbers(decoded.frames) == [numbers[truth - 1], numbers[0], numbers[truth // 2]]
    assert seen == [FRAMES, truth]
    # Told the count up front (as the dataset is, once it learned it): one pass, the same frames.
    again = read_video(path, lambda count: [count - 1, 0], "pyav", num_frames=truth)
    assert frame_numbers(again.frames) == [numbers[truth - 1], numbers[0]]
    with pytest.raises(IndexError, match=f"partial_{name}.*past the end \\({truth} frames"):
        read_frames(path, [truth])
    whole = read_video(videos / name, lambda count: [count - 1], "pyav")
    assert not whole.partial and whole.num_frames == FRAMES and frame_numbers(whole.frames) == [FRAMES - 1]


def test_a_cut_mkv_is_a_shorter_video(videos):
    path = videos / "partial_clip.mkv"
    numbers = decoded_numbers(path)
    decoded = read_video(path, lambda count: [count - 1, 0], "pyav")
    assert (decoded.num_frames, decoded.partial) == (len(numbers), False)
    assert frame_numbers(decoded.frames) == [numbers[-1], numbers[0]]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_file_cut_so_short_that_nothing_decodes_stays_bad(videos, name):
    with pytest.raises(VideoDecodeError, match=f"empty_{name}"):
        read_video(videos / f"empty_{name}", lambda count: [0], "pyav")


def test_each_item_opens_its_file_once(videos, monkeypatch):
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    clip = ClipConfig(clip_len=4, frame_interval=2, short_side=32, crop_size=32, num_clips=3, num_crops=1)
    names = ["clip.mp4", "partial_clip.mp4", "clip.mkv", "partial_clip.avi"]
    dataset = VideoDataset([(str(videos / n), 0) for n in names], ["a"], train=False, clip=clip, backend="pyav")
    for index in range(len(names)):
        opened.clear()
        dataset[index]
        assert len(opened) == 1, names[index]


def _dataset(videos: Path, train: bool, **kwargs) -> VideoDataset:
    samples = [(str(videos / name), label) for label, name in
               enumerate(["clip.mp4", "partial_clip.mp4", "partial_clip.avi", "empty_clip.mp4"])]
    clip = ClipConfig(clip_len=8, frame_interval=1, short_side=32, crop_size=32, num_clips=3, num_crops=1)
    return VideoDataset(samples, ["whole", "mp4", "avi", "nothing"], train=train, clip=clip, backend="pyav", **kwargs)


def test_training_uses_partial_videos_and_warns_once(videos, caplog):
    # A random training clip finds the short end only when it reaches past it; from then on the
    # count is known and every clip comes from the frames that decode.
    torch.manual_seed(0)
    dataset = _dataset(videos, train=True)
    with caplog.at_level(logging.WARNING, logger="softpool3d.datasets"):
        for index in (1, 2):
            truth = frames_that_decode(Path(dataset.samples[index][0]))
            seen = []
            for _ in range(30):
                item = dataset[index]
                assert item["index"] == index and item["replaced"] == []
                assert item["video"].shape == (3, 8, 32, 32)
                seen.append(item["partial"])
            first = seen.index((FRAMES, truth))
            assert set(seen[:first]) <= {None} and set(seen[first:]) == {(FRAMES, truth)}
    for index in (1, 2):
        path = dataset.samples[index][0]
        warnings = [r.getMessage() for r in caplog.records if path in r.getMessage()]
        assert len(warnings) == 1 and f"{FRAMES} frames" in warnings[0]
        assert f"{frames_that_decode(Path(path))} decode" in warnings[0]
    assert dataset.failures == []
    item = dataset[3]                                # nothing decodes: bad, replaced
    assert item["replaced"] == [dataset.samples[3][0]] and item["index"] != 3


def test_testing_scores_partial_videos_instead_of_skipping(videos):
    dataset = _dataset(videos, train=False, on_error="skip")
    batch = collate_clips([dataset[i] for i in range(4)])
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["video"].shape == (3, 3, 3, 8, 32, 32)
    assert [p for p, _, _ in batch["partial"]] == [dataset.samples[1][0], dataset.samples[2][0]]
    assert [s[0] for s in batch["skipped"]] == [dataset.samples[3][0]]


def test_the_learned_count_is_shared_by_dataloader_workers(videos):
    dataset = _dataset(videos, train=False, on_error="skip")
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collate_clips)
    partial = [p for batch in loader for p in batch["partial"]]
    assert sorted(p[0] for p in partial) == sorted([dataset.samples[1][0], dataset.samples[2][0]])
    # Read in worker processes, remembered here: the next epoch's workers skip the header.
    for index in (1, 2):
        assert dataset._counts[index].tolist() == [frames_that_decode(Path(dataset.samples[index][0])), FRAMES]


def test_an_index_error_from_a_transform_is_a_bug_not_a_bad_video(videos):
    dataset = _dataset(videos, train=True)

    def broken_transform(frames):
        raise IndexError("a bug in a transform")

    dataset._transform = broken_transform
    with pytest.raises(IndexError, match="a bug in a transform"):
        dataset[0]
    assert dataset.failures == []


def test_tools_test_reports_partial_videos(videos, tmp_path):
    classes = ["whole", "mp4", "avi"]
    rows = [(videos / "clip.mp4", 0), (videos / "partial_clip.mp4", 1), (videos / "partial_clip.avi", 2)]
    (tmp_path / "val.txt").write_text("".join(f"{p} {label}\n" for p, label in rows))
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    overrides = [
        "data.dataset=list", "data.root=/", f"data.val_list={tmp_path}/val.txt",
        f"data.train_list={tmp_path}/val.txt", f"data.classes={tmp_path}/classes.txt", "data.flip=false",
        "model.name=r3d_10", "data.clip_len=8", "data.frame_interval=1", "data.short_side=32",
        "data.crop_size=32", "data.num_workers=0", "test.batch_size=2", "test.views=3x1",
        "train.progress=false", f"test.output_dir={tmp_path}/report", f"output_dir={tmp_path}",
    ]
    config = load_config(ROOT / "configs" / "synthmotion.yaml", overrides)
    model = build_model("r3d_10", num_classes=3, pool="soft")
    save_checkpoint({"model": model.state_dict(), "config": to_plain(config), "classes": classes}, tmp_path / "m.pt")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "test.py"), "--config",
                           str(ROOT / "configs" / "synthmotion.yaml"), "--checkpoint", str(tmp_path / "m.pt"),
                           *overrides], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| videos partial (scored on the frames that decode) | 2 |" in done.stdout
    assert f"partial: {videos / 'partial_clip.avi'}: the header says {FRAMES} frames" in done.stdout
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["num_videos"] == 3 and saved["num_skipped"] == 0 and saved["num_partial"] == 2
    assert [p["path"] for p in saved["partial"]] == [str(videos / "partial_clip.avi"), str(videos / "partial_clip.mp4")]
    assert [p["decoded_frames"] for p in saved["partial"]] == [
        frames_that_decode(videos / "partial_clip.avi"), frames_that_decode(videos / "partial_clip.mp4")]
    assert torch.tensor([p["header_frames"] for p in saved["partial"]]).eq(FRAMES).all()
