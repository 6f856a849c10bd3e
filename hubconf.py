"""torch.hub entry points: one per model in ``softpool3d.models.list_models()``.

    model = torch.hub.load("path/to/softpool3d", "r3d_18", source="local", num_classes=101, pool="soft")

Keyword arguments are ``build_model``'s (num_classes, pool, head_pool and, for video models, dropout).
The weights are random unless ``pretrained`` names a weight tag ("kinetics400", "kinetics700", see
``softpool3d.models.pretrained``), a file or a URL; downloads go to torch.hub's cache, once.
"""

dependencies = ["torch", "torchvision"]

from softpool3d.models import MODELS, VIDEO_MODELS, build_model  # noqa: E402


def _entry(name: str):
    def entry(**kwargs):
        return build_model(name, **kwargs)

    kind = "video model: input (N, 3, T, H, W)" if name in VIDEO_MODELS else "image model: input (N, 3, H, W)"
    entry.__name__ = name
    entry.__doc__ = (f"{name}, a {kind}, built by softpool3d.models.build_model({name!r}, **kwargs).\n\n"
                     f"{(MODELS[name].__doc__ or '').strip()}\n\nKeyword arguments: num_classes, pool "
                     f"('soft' | 'max' | 'avg'), head_pool{', dropout' if name in VIDEO_MODELS else ''}, "
                     f"pretrained.")
    return entry


globals().update({name: _entry(name) for name in MODELS})
