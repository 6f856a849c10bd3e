"""Model builders: ``build_model(name, num_classes=..., pool=..., head_pool=...)`` and ``list_models()``.

``pool`` ("soft", "max" or "avg") selects every downsampling pooling layer an architecture has;
``head_pool`` selects the global pool before the classifier ("soft" is global SoftPool).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .c3d import c3d
from .i3d import i3d_r50
from .image import IMAGE_MODELS
from .resnet3d import r3d_10, r3d_18, r3d_34, r3d_50, r3d_101
from .s3d import s3d
from .video_resnet import mc3_18, r2plus1d_18
from .x3d import x3d_m, x3d_s, x3d_xs
from .weights import load_weights

VIDEO_MODELS: dict[str, Callable[..., nn.Module]] = {
    "r3d_10": r3d_10,
    "r3d_18": r3d_18,
    "r3d_34": r3d_34,
    "r3d_50": r3d_50,
    "r3d_101": r3d_101,
    "r2plus1d_18": r2plus1d_18,
    "mc3_18": mc3_18,
    "i3d_r50": i3d_r50,
    "c3d": c3d,
    "s3d": s3d,
    "x3d_xs": x3d_xs,
    "x3d_s": x3d_s,
    "x3d_m": x3d_m,
}
MODELS: dict[str, Callable[..., nn.Module]] = {**VIDEO_MODELS, **IMAGE_MODELS}


def list_models(kind: str = "all") -> list[str]:
    """Model names: ``kind`` is "all", "video" (input (N, 3, T, H, W)) or "image" (input (N, 3, H, W))."""
    groups = {"all": MODELS, "video": VIDEO_MODELS, "image": IMAGE_MODELS}
    if kind not in groups:
        raise ValueError(f"kind must be one of {tuple(groups)}, got {kind!r}")
    return sorted(groups[kind])


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name; keyword arguments go to its builder (num_classes, pool, head_pool, dropout)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as error:
        takes = "num_classes, pool, head_pool and dropout" if name in VIDEO_MODELS else "num_classes, pool and head_pool"
        raise TypeError(f"{name}: {error}; its builder takes {takes}") from None


__all__ = ["MODELS", "VIDEO_MODELS", "IMAGE_MODELS", "build_model", "list_models", "load_weights"]
