"""Downsampling images, GIFs and video clips with soft, max or average pooling (the demo and the retention study).

Media are uint8 arrays (T, H, W, C): T = 1 for an image, C = 1 (grey), 3 (RGB) or 4 (RGBA; alpha is
pooled like the colour channels). Pooling sees pixels scaled to [0, 1]. Images are pooled 2D per channel; GIFs and clips 3D, over time,
height and width. Sizes that do not divide by the factor use ``ceil_mode=True``: the last window is
partial (for every method it averages or weighs only the pixels it covers), so an output is
``ceil(size / factor)`` and nothing is cropped.

Information kept is measured with scikit-image's PSNR and SSIM, against two references:
``"area"`` compares the downsampled result with the input resized by area interpolation
(``F.interpolate(mode="area")``, which average pooling equals when the factor divides the size), and
``"roundtrip"`` compares the result upsampled back (bilinear, ``skimage.transform.resize``) with the
original. SSIM of a clip is the mean of its frames' SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .datasets.io import VIDEO_EXTENSIONS
from .nn import POOL_KINDS
from .ops import soft_pool2d, soft_pool3d

METHODS = POOL_KINDS
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class MediaError(ValueError):
    """A file that cannot be read or written as media; the message names it."""


@dataclass
class Media:
    frames: np.ndarray                       # uint8 (T, H, W, C)
    kind: str                                # "image", "gif" or "video"
    durations: list[float] = field(default_factory=list)   # GIF: milliseconds per frame
    fps: float = 0.0                         # video: frames per second
    mode: str = "RGB"                        # PIL mode of images and GIFs ("L", "RGB", "RGBA")


def load_media(path: Union[str, Path]) -> Media:
    """Read an image, an animated (or single-frame) GIF or a video file."""
    from PIL import Image, ImageSequence  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in VIDEO_EXTENSIONS:
            return _load_video(path)
        with Image.open(path) as image:
            if suffix == ".gif":
                frames, durations = [], []
                has_alpha = any(f.mode in ("RGBA", "PA") or "transparency" in f.info
                                for f in ImageSequence.Iterator(image))
                mode = "RGBA" if has_alpha else "RGB"
                for frame in ImageSequence.Iterator(image):
                    frames.append(np.asarray(frame.convert(mode)))
                    durations.append(float(frame.info.get("duration", 100)))
                return Media(np.stack(frames), "gif", durations=durations, mode=mode)
            mode = {"1": "L", "L": "L", "I;16": "L", "LA": "RGBA", "P": "RGBA" if "transparency" in image.info
                    else "RGB", "RGBA": "RGBA"}.get(image.mode, "RGB")
            pixels = np.asarray(image.convert(mode))
    except MediaError:
        raise
    except Exception as error:  # noqa: BLE001 - PIL and PyAV raise many types
        raise MediaError(f"{path}: cannot read it as an image, GIF or video ({type(error).__name__}: {error})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return Media(pixels[None], "image", mode=mode)


def _load_video(path: Path) -> Media:
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise MediaError(f"{path}: the video has no frames")
    return Media(np.stack(frames), "video", fps=fps)


def save_media(media: Media, path: Union[str, Path]) -> None:
    """Write ``media`` in its own kind: an image file, a GIF keeping frame timing, or an mp4."""
    from PIL import Image  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = media.frames
    if media.kind == "video":
        from .datasets.io import write_video  # noqa: PLC0415

        even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]   # yuv420p needs even sizes
        if even.shape[1] < 2 or even.shape[2] < 2:
            raise MediaError(f"{path}: {frames.shape[1]}x{frames.shape[2]} is too small to encode as video")
        write_video(path, np.ascontiguousarray(even[..., :3]), fps=max(1, round(media.fps)))
        return
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    if media.kind == "gif":
        images[0].save(path, save_all=True, append_images=images[1:], duration=[round(d) for d in media.durations],
                       loop=0, disposal=2)
    else:
        if path.suffix.lower() in (".jpg", ".jpeg") and images[0].mode == "RGBA":
            images[0] = images[0].convert("RGB")
        images[0].save(path)


def pool(frames: np.ndarray, method: str, factor: int, temporal_factor: int = 1) -> np.ndarray:
    """Downsample uint8 (T, H, W, C) by ``factor`` in H and W and ``temporal_factor`` in T (ceil mode).

    ``temporal_factor`` 1 pools each frame in 2D. Returns uint8 (ceil(T/tf), ceil(H/f), ceil(W/f), C).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    # Pixels in [0, 1], as torchvision's ToTensor gives them: SoftPool is not scale-invariant, and on 0-255
    # values its weights would be all but one-hot (max pooling).
    x = torch.from_numpy(np.array(frames)).permute(3, 0, 1, 2).double() / 255   # (C, T, H, W)
    tf = min(temporal_factor, x.shape[1])
    if tf <= 1:
        planes = x.permute(1, 0, 2, 3)                 # (T, C, H, W): each frame on its own
        pooled = {"soft": soft_pool2d, "max": F.max_pool2d, "avg": F.avg_pool2d}[method](
            planes, factor, factor, 0, ceil_mode=True)
        out = pooled.permute(1, 0, 2, 3)
    else:
        kernel = (tf, factor, factor)
        pooled = {"soft": soft_pool3d, "max": F.max_pool3d, "avg": F.avg_pool3d}[method](
            x[None], kernel, kernel, 0, ceil_mode=True)
        out = pooled[0]
    return (out * 255).permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def pooled_durations(durations: list[float], temporal_factor: int) -> list[float]:
    """A GIF's frame timing after pooling: each output frame lasts as long as the frames it merged."""
    tf = max(1, min(temporal_factor, len(durations)))
    return [sum(durations[i:i + tf]) for i in range(0, len(durations), tf)]


def area_resize(frames: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Area interpolation of uint8 (T, H, W, C) to (T', H', W'), as float64."""
    x = torch.from_numpy(np.array(frames)).permute(3, 0, 1, 2).double()[None]
    return F.interpolate(x, size=size, mode="area")[0].permute(1, 2, 3, 0).numpy()


def upsample(frames: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear (trilinear for clips) resize of (T, H, W, C) back to ``shape``, as float64."""
    from skimage.transform import resize  # noqa: PLC0415

    return resize(frames.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


def quality(result: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """scikit-image PSNR and SSIM (mean over frames) of ``result`` against ``reference``, range 0-255."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: PLC0415

    result = result.astype(np.float64)
    reference = reference.astype(np.float64)
    psnr = float(peak_signal_noise_ratio(reference, result, data_range=255))
    scores = []
    for got, want in zip(result, reference):
        side = min(want.shape[0], want.shape[1])
        win = min(7, side if side % 2 else side - 1)
        if win < 3:
            continue
        scores.append(structural_similarity(want, got, data_range=255, channel_axis=-1, win_size=win))
    ssim = float(np.mean(scores)) if scores else float("nan")
    return psnr, ssim


def retention(frames: np.ndarray, method: str, factor: int, temporal_factor: int = 1,
              pooled: Optional[np.ndarray] = None) -> dict[str, float]:
    """PSNR/SSIM of one method's result against the area-resized input and, upsampled, against the original.

    Args:
        frames: uint8 (T, H, W, C).
        method: one of ``METHODS``.
        factor, temporal_factor: as for ``pool``.
        pooled: ``pool``'s result when the caller has it already.

    Returns psnr_area, ssim_area, psnr_roundtrip and ssim_roundtrip (dB and SSIM on 0-255 values).
    """
    out = pool(frames, method, factor, temporal_factor) if pooled is None else pooled
    area = area_resize(frames, out.shape[:3])
    back = upsample(out, frames.shape)
    psnr_area, ssim_area = quality(out, area)
    psnr_back, ssim_back = quality(back, frames)
    return {"psnr_area": psnr_area, "ssim_area": ssim_area, "psnr_roundtrip": psnr_back, "ssim_roundtrip": ssim_back}
