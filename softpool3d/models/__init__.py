"""Model builders: ``build_model(name, num_classes=..., pool=..., head_pool=..., pretrained=...)`` and
``list_models()``.

``pool`` ("soft", "max" or "avg") selects every downsampling pooling layer an architecture has;
``head_pool`` selects the global pool before the classifier ("soft" is global SoftPool).
Some architectures downsample only with strided convolutions (``has_downsampling_pools``):
for them ``pool`` changes nothing, and ``build_model`` warns once that ``head_pool`` is their
only SoftPool site.

``pretrained`` names a weight set of ``pretrained.py`` by tag ("kinetics400" for torchvision's
architectures, "kinetics700" / "kinetics700_moments" for Hara et al.'s r3d_*), or is a local path or
a URL; see ``softpool3d.models.pretrained``. Two R3D-18s: ``r3d_18`` is Hara et al.'s layout (7x7x7
stem and a stem pool), ``tv_r3d_18`` is torchvision's (3x7x7 stem, no stem pool).
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
from .mvit import mvit_v1_b, mvit_v2_s
from .resnet3d import r3d_10, r3d_18, r3d_34, r3d_50, r3d_101, r3d_152, r3d_200
from .s3d import s3d
from .swin3d import swin3d_b, swin3d_s, swin3d_t
from .video_resnet import mc3_18, r2plus1d_18, tv_r3d_18
from .x3d import x3d_m, x3d_s, x3d_xs
from .pytorchvideo_hub import PYTORCHVIDEO_MODELS
from .pretrained import WEIGHTS, load_pretrained_weights, weight_set, weight_tags
from .weights import load_weights

VIDEO_MODELS: dict[str, Callable[..., nn.Module]] = {
    "r3d_10": r3d_10,
    "r3d_18": r3d_18,
    "r3d_34": r3d_34,
    "r3d_50": r3d_50,
    "r3d_101": r3d_101,
    "r3d_152": r3d_152,
    "r3d_200": r3d_200,
    "tv_r3d_18": tv_r3d_18,
    "r2plus1d_18": r2plus1d_18,
    "mc3_18": mc3_18,
    "i3d_r50": i3d_r50,
    "c3d": c3d,
    "s3d": s3d,
    "x3d_xs": x3d_xs,
    "x3d_s": x3d_s,
    "x3d_m": x3d_m,
    "mvit_v1_b": mvit_v1_b,
    "mvit_v2_s": mvit_v2_s,
    "swin3d_t": swin3d_t,
    "swin3d_s": swin3d_s,
    "swin3d_b": swin3d_b,
}
MODELS: dict[str, Callable[..., nn.Module]] = {**VIDEO_MODELS, **IMAGE_MODELS}
# Downsampling by strided convolutions only: no pool outside the head for ``pool`` to select.
WITHOUT_DOWNSAMPLING_POOLS = frozenset({"tv_r3d_18", "r2plus1d_18", "mc3_18", "x3d_xs", "x3d_s", "x3d_m",
                                        "swin3d_t", "swin3d_s", "swin3d_b"})
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


def build_model(name: str, *, pretrained: Optional[str] = None, **kwargs) -> nn.Module:
    """Build a model by name; keyword arguments go to its builder (num_classes, pool, head_pool, dropout).

    ``pretrained``: a tag of the weight registry (``pretrained.weight_tags(name)``), a local file or a
    URL (cached under ``$TORCH_HOME/hub/checkpoints``). Every tensor loads strictly except the
    classifier, which is re-initialised when ``num_classes`` differs from the weights' (a registry
    tag's class count is the default ``num_classes``). Pools hold no weights, so any ``pool`` loads.
    """
    if name not in MODELS and name not in PYTORCHVIDEO_MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    builder = MODELS.get(name) or PYTORCHVIDEO_MODELS[name]
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
    if pretrained is not None and "num_classes" not in kwargs and pretrained in weight_tags(name):
        kwargs["num_classes"] = weight_set(name, pretrained).num_classes
    model = builder(**kwargs)
    if pretrained is not None:
        load_pretrained_weights(model, name, pretrained)
    return model


__all__ = ["MODELS", "PYTORCHVIDEO_MODELS", "VIDEO_MODELS", "IMAGE_MODELS", "WITHOUT_DOWNSAMPLING_POOLS", "Conv3d", "build_model",
           "WEIGHTS", "has_downsampling_pools", "list_models", "load_pretrained_weights", "load_weights",
           "weight_set", "weight_tags"]
