"""PyAV clip reads seek to the keyframe before the clip, and return exactly the frames that decoding from
the start gives; files whose timestamps cannot be trusted are read from the start. All files are written
with PyAV at test time; every frame carries its own index in its pixels."""

from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np
import pytest

from softpool3d.datasets import read_video
from softpool3d.datasets.check import check_video
from softpool3d.datasets.io import PacketTable

from helpers import cut_short, numbered_frames

FRAMES = 100
CLIP = [0, 3, 6, 9]          # offsets of a clip's frames from its first


def write(path: Path, *, codec: str = "libx264", x264: str = "", b_frames: Optional[int] = None, pts=None,
          time_base=None, packet_pts=None, options=None) -> Path:
    """``numbered_frames`` with the given codec settings; ``pts``/``time_base`` set each frame's time
    (variable frame rate); ``packet_pts`` overwrites every packet's pts and dts (broken timestamps)."""
    video = numbered_frames(FRAMES, noise=True)
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "x264-params": "mbtree=0:keyint=20:min-keyint=10" + x264}
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if time_base is not None:
            stream.codec_context.time_base = stream.time_base = time_base

        def mux(packets):
            for packet in packets:
                if packet_pts is not None:
                    packet.pts = packet.dts = packet_pts
                container.mux(packet)

        for i, image in enumerate(video):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            mux(stream.encode(frame))
        mux(stream.encode())
    return path


def from_the_start(path: Path) -> list[np.ndarray]:
    """Every frame PyAV decodes from the start, until the stream ends or breaks: the truth."""
    frames = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(container.streams.video[0]):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError:
            pass
    return frames


VARIABLE = np.cumsum(np.random.default_rng(0).integers(15, 90, FRAMES)).tolist()   # ms
SEEKABLE = {
    "b_frames.mp4": {"x264": ":bframes=3:b-pyramid=normal"},
    "open_gop.mp4": {"x264": ":bframes=3:open-gop=1"},
    "open_gop.mkv": {"x264": ":bframes=3:open-gop=1"},
    "variable_rate.mp4": {"pts": VARIABLE, "time_base": Fraction(1, 1000)},
    "variable_rate.mkv": {"pts": VARIABLE, "time_base": Fraction(1, 1000)},
    "b_frames.avi": {"codec": "mpeg4", "b_frames": 2},
    "vp9.webm": {"codec": "libvpx-vp9", "options": {}},
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seek")
    for name, settings in SEEKABLE.items():
        write(root / name, **settings)
    write(root / "faststart.mp4", options={"movflags": "faststart"})
    cut_short(root / "faststart.mp4", root / "cut.mp4", 70)            # the header still claims 100
    cut_short(root / "b_frames.avi", root / "cut.avi", 70)
    cut_short(root / "open_gop.mkv", root / "cut.mkv", 70)             # a shorter MKV: no stored count
    write(root / "zero_timestamps.mkv", packet_pts=0)
    return root


def assert_like_decoding_from_the_start(path: Path, starts) -> list[int]:
    """Read a clip at each start; same pixels as decoding from the start. Returns frames decoded per read."""
    truth = from_the_start(path)
    decoded = []
    for start in starts:
        result = read_video(path, lambda count: [start + offset for offset in CLIP], "pyav")
        assert result.num_frames in (len(truth), result.header_frames), path.name
        for frame, index in zip(result.frames.numpy(), [start + offset for offset in CLIP]):
            assert np.array_equal(frame, truth[index]), (path.name, start, index)
        decoded.append(result.frames_decoded)
    return decoded


@pytest.mark.parametrize("name", sorted(SEEKABLE))
def test_a_clip_late_in_the_video_is_decoded_from_a_keyframe_near_it(videos, name):
    path = videos / name
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size > 0]
    shown = sorted(p.pts for p in packets)
    keyframes = sorted(shown.index(p.pts) for p in packets if p.is_keyframe)
    if name != "vp9.webm":   # libvpx's default keyframe interval is longer than the video: nothing to seek to
        assert len(keyframes) >= 5
    starts = [0, 1, 19, 20, 21, 47, 60, 77, 90]
    decoded = assert_like_decoding_from_the_start(path, starts)
    for start, count in zip(starts, decoded):
        # From one of the last two keyframes at or before the clip (an index by dts may land on the
        # earlier), plus at most a few frames a decoder holds back.
        keyframe = ([0] + [k for k in keyframes if k <= start])[-2:][0]
        assert count <= start - keyframe + CLIP[-1] + 1 + 4, (name, start, keyframe, decoded)
        if start >= 47 and name != "vp9.webm":
            assert count < start + CLIP[-1] + 1, (name, start, decoded)        # fewer than from the start


@pytest.mark.parametrize("name", ["cut.mp4", "cut.avi", "cut.mkv"])
def test_files_cut_short_give_the_frames_decoding_from_the_start_gives(videos, name):
    truth = len(from_the_start(videos / name))
    assert 40 < truth < FRAMES
    assert_like_decoding_from_the_start(videos / name, [0, truth // 2, truth - 10])


def test_all_timestamps_zero_is_read_from_the_start_and_the_checker_agrees(videos):
    path = videos / "zero_timestamps.mkv"
    truth = from_the_start(path)
    assert len(truth) == FRAMES
    decoded = assert_like_decoding_from_the_start(path, [0, 50, 90])
    assert decoded == [9 + 1, 59 + 1, 99 + 1]       # no seek: every read decodes from frame 0
    # The checker decodes it as the loader does: all frames, header = packet count.
    checked = check_video(path)
    assert (checked.status, checked.header_frames, checked.decoded_frames) == ("ok", FRAMES, FRAMES)


def test_untrustworthy_timestamps_are_refused():
    def table(pts, keyframes=None):
        keys = [(i * 100, p, 10) for i, p in enumerate(pts)]
        return PacketTable(keys, list(pts), list(pts), keyframes or [i == 0 for i in range(len(pts))], True)

    in_order = list(range(0, 800, 40))
    b_frames = [0, 120, 40, 80, 240, 160, 200] + in_order[7:]
    assert table(in_order).presentation(0) == in_order
    assert table(b_frames).presentation(len(b_frames)) == sorted(b_frames)
    assert table(in_order).presentation(len(in_order) + 5) is None              # header claims more
    assert table([0] * 20).presentation(0) is None                              # all zero
    assert table(in_order[:10] + [None] + in_order[11:]).presentation(0) is None
    reset = in_order[:40] + [p + 1 for p in range(0, 40 * 17, 40)]             # a timestamp reset
    assert table(sorted(set(reset), key=reset.index)).presentation(0) is None
    assert table([40, 0] + in_order[2:]).presentation(0) is None                # first frame not shown first
