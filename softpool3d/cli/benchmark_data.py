"""Data-pipeline benchmark: training-clip throughput and Kinetics construction time.

    softpool3d benchmark-data                      # SynthMotion under data/synthmotion (made if absent)
    softpool3d benchmark-data --only real-length   # just the real-length videos

Real-length videos: the script writes a Kinetics-like file (10 s, 30 fps, 340x256, H.264 with a keyframe
every 30-60 frames) and a 720p one, and times reading one random 16x4 training clip (16 frames 4 apart)
from each, decode only: PyAV seeking to the keyframe before the clip, PyAV decoding from the start (as it
did before), torchcodec when it imports, and the ``frames`` backend on the frames extracted as JPEG. The
contenders take turns on the same clips, in one process; medians of per-clip times, ratios to PyAV
from the start.

Throughput: clips/s of the UCF-101 training path (decode, sample, transform, collate) over SynthMotion's
train split, for each available decoder backend (the ``frames`` backend reads the same clips extracted to
PNG folders) and 0/1/2 DataLoader workers; pytorchvideo's LabeledVideoDataset runs on the same videos
when pytorchvideo is installed (an optional peer, never a dependency). Construction: a generated
240k-row Kinetics CSV over empty files.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader


from ..datasets import (
    UCF101, ClipConfig, Kinetics, VideoList, available_backends, collate_clips, make_synthmotion, read_frames,
    read_video,
)
from ..datasets.sampling import train_clip_indices

CLIP = ClipConfig(clip_len=8, frame_interval=2, short_side=64, crop_size=56)


def clips_per_second(dataset, workers: int, epochs: int, batch_size: int = 8) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate_clips, persistent_workers=workers > 0)
    next(iter(loader))  # start the workers outside the timing
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += batch["video"].shape[0]
    return count / (time.perf_counter() - start)


def extract_frames(dataset, out: Path) -> Path:
    """The dataset's videos as PNG folders plus an mmaction2 rawframes list."""
    from PIL import Image  # noqa: PLC0415

    lines = []
    for i, (path, label) in enumerate(dataset.samples):
        folder = out / f"v{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        frames = read_frames(path, range(16)).numpy()
        for j, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"img_{j + 1:05d}.png")
        lines.append(f"{folder.name} {len(frames)} {label}")
    (out / "list.txt").write_text("\n".join(lines) + "\n")
    return out / "list.txt"


def pytorchvideo_clips_per_second(root: Path, workers: int, epochs: int) -> float | None:
    try:
        from pytorchvideo.data import LabeledVideoDataset, make_clip_sampler  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - not installed, or broken with this torchvision
        return None
    train = UCF101(root / "videos", root / "annotations", 1, "train", clip=CLIP)
    span = ((CLIP.clip_len - 1) * CLIP.frame_interval + 1) / 10.0  # seconds at SynthMotion's 10 fps
    peer = LabeledVideoDataset([(p, {"label": l}) for p, l in train.samples], make_clip_sampler("random", span),
                               decode_audio=False)
    loader = DataLoader(peer, batch_size=8, num_workers=workers)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += batch["video"].shape[0]
    return count / (time.perf_counter() - start)


def kinetics_construction_seconds(rows: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        lines = ["label,youtube_id,time_start,time_end,split,is_cc"]
        for i in range(rows):
            label = f"class {i % 400:03d}"
            (root / label).mkdir(parents=True, exist_ok=True) if i < 400 else None
            lines.append(f'"{label}",y{i:010d},{i % 300},{i % 300 + 10},train,0')
            if i % 20:  # 5% missing, as in real Kinetics copies
                (root / label / f"y{i:010d}_{i % 300:06d}_{i % 300 + 10:06d}.mp4").touch()
        (Path(tmp) / "train.csv").write_text("\n".join(lines) + "\n")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = Kinetics(root, Path(tmp) / "train.csv", "train")
        elapsed = time.perf_counter() - start
        assert len(dataset) == rows - rows // 20
        return elapsed


def kinetics_like_video(path: Path, width: int, height: int, seconds: int = 10, fps: int = 30) -> Path:
    """Moving gradients with grain, H.264 (x264 veryfast, crf 23) with a keyframe every 30-60 frames: about
    0.9 Mbit/s at 340x256, as Kinetics files are."""
    import av  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "x264-params": "keyint=60:min-keyint=30"}
        for t in range(seconds * fps):
            base = 128 + 60 * np.sin((x + 3 * t) / 23.0)[..., None] * np.cos((y - 2 * t) / 31.0)[..., None]
            image = base + np.array([0, 20, -20]) + rng.normal(0, 10, (height, width, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def extract_jpeg_frames(video: Path, out: Path) -> Path:
    from PIL import Image  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    info = read_video(video, lambda count: range(count), "pyav")
    for i, frame in enumerate(info.frames.numpy()):
        Image.fromarray(frame).save(out / f"img_{i + 1:05d}.jpg", quality=90)
    return out


def real_length_rows(folder: Path, clips: int) -> list[tuple[str, str, float, float]]:
    """(video, reader, clips/s, ratio to PyAV from the start) for one random 16x4 clip per read."""
    def clip(count: int) -> list[int]:
        return train_clip_indices(count, 16, 4)

    rows = []
    for label, (width, height) in {"10 s, 340x256": (340, 256), "10 s, 1280x720": (1280, 720)}.items():
        video = kinetics_like_video(folder / f"{width}x{height}.mp4", width, height)
        frames = extract_jpeg_frames(video, folder / f"{width}x{height}_frames")
        readers = {"pyav, from the start": lambda: read_video(video, clip, "pyav", seek=False),
                   "pyav, seeking": lambda: read_video(video, clip, "pyav")}
        if "torchcodec" in available_backends():
            readers["torchcodec"] = lambda: read_video(video, clip, "torchcodec")
        readers["frames (JPEG)"] = lambda: read_video(frames, clip, "frames")
        times: dict[str, list[float]] = {name: [] for name in readers}
        for read in readers.values():              # one untimed read each warms the caches
            torch.manual_seed(0)
            read()
        for turn in range(clips):
            for name, read in readers.items():     # the same clip for each reader in this turn
                torch.manual_seed(1000 + turn)
                start = time.perf_counter()
                read()
                times[name].append(time.perf_counter() - start)
        baseline = statistics.median(times["pyav, from the start"])
        for name, spent in times.items():
            rows.append((label, name, 1 / statistics.median(spent), baseline / statistics.median(spent)))
        print(f"# {label}: {video.stat().st_size / 1e6:.1f} MB", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/synthmotion"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kinetics-rows", type=int, default=240_000)
    parser.add_argument("--real-clips", type=int, default=30, help="clips per reader on the real-length videos")
    parser.add_argument("--only", choices=["synthmotion", "real-length", "kinetics"], help="run one part")
    args = parser.parse_args(argv)
    import av  # noqa: PLC0415

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), Python {platform.python_version()}; "
          f"backends: {', '.join(available_backends())}")
    if args.only in (None, "real-length"):
        with tempfile.TemporaryDirectory() as tmp:
            rows = real_length_rows(Path(tmp), args.real_clips)
        print("\n| video | reader | clips/s | vs pyav from the start |\n|---|---|---:|---:|")
        for label, name, rate, ratio in rows:
            print(f"| {label} | {name} | {rate:.1f} | {ratio:.2f}x |")
        if "torchcodec" not in available_backends():
            print("\ntorchcodec: not available here (not installed, or no system FFmpeg)")
    if args.only == "kinetics":
        seconds = kinetics_construction_seconds(args.kinetics_rows)
        print(f"\nKinetics: {args.kinetics_rows} CSV rows over empty files (5% missing) built in {seconds:.2f} s")
    if args.only is not None:
        return
    if not (args.root / "annotations" / "classInd.txt").exists():
        make_synthmotion(args.root)
    train = UCF101(args.root / "videos", args.root / "annotations", 1, "train", clip=CLIP)
    print(f"# SynthMotion train split: {len(train)} videos; clip {CLIP.clip_len}x{CLIP.crop_size}x{CLIP.crop_size}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames_list = extract_frames(train, Path(tmp))
        for backend in available_backends():
            if backend == "frames":
                dataset = VideoList(frames_list, Path(tmp), frames=True, classes=train.classes, clip=CLIP)
            else:
                dataset = UCF101(args.root / "videos", args.root / "annotations", 1, "train", clip=CLIP,
                                 backend=backend)
            for workers in (0, 1, 2):
                rows.append((f"softpool3d ({backend})", workers, clips_per_second(dataset, workers, args.epochs)))
    for workers in (0, 1, 2):
        rate = pytorchvideo_clips_per_second(args.root, workers, args.epochs)
        rows.append(("pytorchvideo LabeledVideoDataset", workers, rate))
    print("\n| loader | workers | clips/s |\n|---|---:|---:|")
    for name, workers, rate in rows:
        print(f"| {name} | {workers} | {'not installed' if rate is None else f'{rate:.0f}'} |")
    seconds = kinetics_construction_seconds(args.kinetics_rows)
    print(f"\nKinetics: {args.kinetics_rows} CSV rows over empty files (5% missing) built in {seconds:.2f} s")


if __name__ == "__main__":
    main()
