"""Decoding real files written with PyAV at test time; the frame number is drawn into the pixels."""

import pytest
import torch
from PIL import Image

from softpool3d.datasets import VideoDecodeError, available_backends, probe, read_frames
from softpool3d.datasets.io import write_video

from helpers import frame_numbers, numbered_frames

NUM_FRAMES, HEIGHT, WIDTH = 30, 48, 64


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    video = numbered_frames(NUM_FRAMES, HEIGHT, WIDTH)
    write_video(root / "clip.mp4", video, fps=25)
    write_video(root / "clip.avi", video, fps=25, codec="mpeg4")
    frames = root / "rawframes"
    frames.mkdir()
    for i, frame in enumerate(video):
        Image.fromarray(frame).save(frames / f"img_{i + 1:05d}.png")
    return root


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi", "rawframes"])
def test_probe(media, name):
    info = probe(media / name)
    assert (info.num_frames, info.height, info.width) == (NUM_FRAMES, HEIGHT, WIDTH)
    if name != "rawframes":
        assert info.fps == pytest.approx(25)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi", "rawframes"])
def test_read_frames_returns_exactly_the_indices(media, name):
    indices = [5, 0, 29, 5, 17, 3, 3]
    frames = read_frames(media / name, indices)
    assert frames.shape == (len(indices), HEIGHT, WIDTH, 3) and frames.dtype == torch.uint8
    assert frame_numbers(frames) == indices


def test_every_backend_returns_the_same_frames(media):
    indices = [0, 7, 7, 2, 29]
    reference = read_frames(media / "clip.mp4", indices, backend="pyav")
    for backend in available_backends():
        path = media / ("rawframes" if backend == "frames" else "clip.mp4")
        frames = read_frames(path, indices, backend=backend)
        assert frame_numbers(frames) == indices, backend
        # Same decoded pixels up to colour-conversion rounding (PNG frames are the lossless originals).
        assert (frames.int() - reference.int()).abs().float().mean() < 3.0, backend


@pytest.mark.parametrize("name", ["clip.mp4", "rawframes"])
def test_index_past_the_end_names_the_file(media, name):
    with pytest.raises(IndexError, match=f"{name}.*past the end"):
        read_frames(media / name, [0, NUM_FRAMES])


def test_unknown_backend_is_an_error(media):
    with pytest.raises(ValueError, match="backend must be one of"):
        read_frames(media / "clip.mp4", [0], backend="opencv")


def bad_files(root):
    good = (root / "clip.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    empty_dir = root / "no_frames"
    empty_dir.mkdir(exist_ok=True)
    return {"truncated.mp4": "", "empty.mp4": "empty", "notes.mp4": "", "missing.mp4": "no such file",
            "no_frames": "no frame images"}


def test_unreadable_input_raises_video_decode_error(media):
    for name, reason in bad_files(media).items():
        for call in (lambda p: read_frames(p, [0]), probe):
            with pytest.raises(VideoDecodeError, match=f"cannot decode .*{name}.*{reason}") as info:
                call(media / name)
            assert isinstance(info.value, RuntimeError) and info.value.path.endswith(name)
