"""Data-pipeline benchmark: training-clip throughput and Kinetics construction time.

    python tools/benchmark_data.py                      # SynthMotion under data/synthmotion (made if absent)

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
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.datasets import (  # noqa: E402
    UCF101, ClipConfig, Kinetics, VideoList, available_backends, collate_clips, make_synthmotion, read_frames,
)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/synthmotion"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kinetics-rows", type=int, default=240_000)
    args = parser.parse_args()
    if not (args.root / "annotations" / "classInd.txt").exists():
        make_synthmotion(args.root)
    train = UCF101(args.root / "videos", args.root / "annotations", 1, "train", clip=CLIP)
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"SynthMotion train split: {len(train)} videos; clip {CLIP.clip_len}x{CLIP.crop_size}x{CLIP.crop_size}")
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
