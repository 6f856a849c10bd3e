"""pytorchvideo's Kinetics-400 hub models (``ptv_x3d_s``, ``ptv_slow_r50`` ...), when pytorchvideo imports.

pytorchvideo is optional and not a dependency: these builders import it when called and fail with a
clear ImportError otherwise. They are not in ``list_models()``; ``build_model`` knows them by name.
The model is pytorchvideo's own hub model with its max pools turned into the ``pool`` kind (as
``replace_max_pools`` does for ours); ``head_pool`` replaces the head's average pool where it is a
plain global pool, and is otherwise refused. Their weights are in ``pretrained.py``
(``pretrained="kinetics400"``: the file's "model_state").

Known limit: pytorchvideo's .pyth checkpoints also store the training config; where that config is
a pickled Python object, ``torch.load(weights_only=True)`` refuses the file and the loader says so
(load it yourself if you trust it, and save ``checkpoint["model_state"]``).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ._pooling import check_kind, replace_max_pools

HUB_NAMES = ("x3d_xs", "x3d_s", "x3d_m", "slow_r50", "c2d_r50", "i3d_r50", "csn_r101", "r2plus1d_r50")


def _builder(hub_name: str) -> Callable[..., nn.Module]:
    def build(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> nn.Module:
        check_kind(pool, "pool")
        check_kind(head_pool, "head_pool")
        if head_pool != "avg":
            raise ValueError(f"ptv_{hub_name}: head_pool={head_pool!r} is not supported for pytorchvideo's models "
                             "(their head pools have fixed kernels); leave it at 'avg'")
        try:
            from pytorchvideo.models import hub
        except ImportError as error:
            raise ImportError(f"ptv_{hub_name} needs pytorchvideo, which does not import here ({error}); "
                              "install it to use pytorchvideo's models") from None
        model = getattr(hub, hub_name)(pretrained=False, model_num_class=num_classes, dropout_rate=dropout)
        return replace_max_pools(model, pool)

    build.__name__ = f"ptv_{hub_name}"
    build.__doc__ = f"pytorchvideo's hub model {hub_name} (needs pytorchvideo)."
    return build


PYTORCHVIDEO_MODELS: dict[str, Callable[..., nn.Module]] = {f"ptv_{name}": _builder(name) for name in HUB_NAMES}
