"""Clip transforms on ``torchvision.transforms.v2`` and ``tv_tensors.Video``.

Input: uint8 frames (T, H, W, 3) as decoded. Output: float32 (C, T, H, W), normalised with
the Kinetics mean and std; test pipelines return one tensor per spatial crop.

- train: short-side resize, random resized crop (one crop for the whole clip), horizontal flip
  (with ``flip_pairs``, ``VideoDataset`` flips and relabels instead);
- test: short-side resize, then the centre crop (num_crops=1) or three crops along the longer
  side (num_crops=3: left/centre/right, or top/centre/bottom for portrait video).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass
class ClipConfig:
    """How clips are sampled and transformed (train and test share it)."""

    clip_len: int = 16
    frame_interval: int = 2
    short_side: int = 128
    crop_size: int = 112
    min_area: float = 0.25          # random resized crop: area fraction range [min_area, 1]
    flip: bool = True
    # Classes a horizontal flip turns into each other, by name (("MoveLeft", "MoveRight"), ...): with
    # ``flip`` on, a flipped training clip takes the other class's label (see ``VideoDataset``).
    flip_pairs: tuple[tuple[str, str], ...] = ()
    num_clips: int = 1              # test views: clips spread over the video ...
    num_crops: int = 1              # ... times spatial crops (1 or 3)
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD

    def __post_init__(self) -> None:
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 (centre) or 3 (three-crop), got {self.num_crops}")
        for name in ("clip_len", "frame_interval", "short_side", "crop_size", "num_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size > self.short_side:
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed short_side ({self.short_side})")
        if not 0 < self.min_area <= 1:
            raise ValueError(f"min_area must be in (0, 1], got {self.min_area}")


def _to_video(frames: torch.Tensor) -> tv_tensors.Video:
    """uint8 (T, H, W, 3) -> tv_tensors.Video (T, 3, H, W)."""
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return tv_tensors.Video(frames.permute(0, 3, 1, 2))


def _finish(config: ClipConfig) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)])


def three_crop(video: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Three size x size crops of (..., H, W): along the longer side, at its start, centre and end."""
    height, width = video.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    if width >= height:
        offsets = [(top, 0), (top, left), (top, width - size)]
    else:
        offsets = [(0, left), (top, left), (height - size, left)]
    return [video[..., y:y + size, x:x + size] for y, x in offsets]


def build_transforms(config: ClipConfig, train: bool) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A function from uint8 frames (T, H, W, 3) to a list of float (C, T, crop, crop) views.

    Training gives one view; testing gives ``num_crops`` views of the clip.
    """
    resize = v2.Resize(config.short_side, antialias=True)   # an int resizes the shorter side
    finish = _finish(config)
    if train:
        augment = v2.Compose([
            resize,
            v2.RandomResizedCrop(config.crop_size, scale=(config.min_area, 1.0), antialias=True),
            *([v2.RandomHorizontalFlip()] if config.flip else []),
            finish,
        ])

        def train_views(frames: torch.Tensor) -> list[torch.Tensor]:
            return [augment(_to_video(frames)).permute(1, 0, 2, 3).contiguous()]

        return train_views

    centre = v2.CenterCrop(config.crop_size)

    def test_views(frames: torch.Tensor) -> list[torch.Tensor]:
        video = resize(_to_video(frames))
        crops = [centre(video)] if config.num_crops == 1 else three_crop(video, config.crop_size)
        return [finish(tv_tensors.Video(crop)).permute(1, 0, 2, 3).contiguous() for crop in crops]

    return test_views
