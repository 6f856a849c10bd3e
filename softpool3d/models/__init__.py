"""Model builders: ``build_model(name, num_classes=..., pool=..., head_pool=...)`` and ``list_models()``.

``pool`` ("soft", "max" or "avg") selects every downsampling pooling layer an architecture has;
``head_pool`` selects the global pool before the classifier ("soft" is global SoftPool).
Some architectures downsample only with strided convolutions (``has_downsampling_pools``):
for them ``pool`` changes nothing, and ``build_model`` warns once that ``head_pool`` is their
only SoftPool site.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable, Optional

from torch import nn

from ._conv import Conv3d
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
# Downsampling by strided convolutions only: no pool outside the head for ``pool`` to select.
WITHOUT_DOWNSAMPLING_POOLS = frozenset({"r2plus1d_18", "mc3_18", "x3d_xs", "x3d_s", "x3d_m"})
_warned: set[str] = set()


def has_downsampling_pools(name: str) -> bool:
    """True when model ``name`` has pooling layers outside its head, the layers ``pool`` selects."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return name not in WITHOUT_DOWNSAMPLING_POOLS


def list_models(kind: str = "all", downsampling_pools: Optional[bool] = None) -> list[str]:
    """Model names: ``kind`` is "all", "video" (input (N, 3, T, H, W)) or "image" (input (N, 3, H, W)).

    ``downsampling_pools=True`` keeps the models whose ``pool`` selects layers, False the others.
    """
    groups = {"all": MODELS, "video": VIDEO_MODELS, "image": IMAGE_MODELS}
    if kind not in groups:
        raise ValueError(f"kind must be one of {tuple(groups)}, got {kind!r}")
    return sorted(name for name in groups[kind]
                  if downsampling_pools is None or has_downsampling_pools(name) == downsampling_pools)


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name; keyword arguments go to its builder (num_classes, pool, head_pool, dropout)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    builder = MODELS[name]
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as error:
        *first, last = inspect.signature(builder).parameters
        takes = f"{', '.join(first)} and {last}" if first else last
        raise TypeError(f"{name}: {error}; its builder takes {takes}") from None
    if "pool" in kwargs and name in WITHOUT_DOWNSAMPLING_POOLS and name not in _warned:
        _warned.add(name)
        warnings.warn(f"{name} has no pooling layer outside its head, so pool={kwargs['pool']!r} changes nothing; "
                      "head_pool is its only SoftPool site", UserWarning, stacklevel=2)
    return builder(**kwargs)


__all__ = ["MODELS", "VIDEO_MODELS", "IMAGE_MODELS", "WITHOUT_DOWNSAMPLING_POOLS", "Conv3d", "build_model",
           "has_downsampling_pools", "list_models", "load_weights"]
