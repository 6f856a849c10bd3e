"""Loading local weights: nothing is downloaded at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn


def load_weights(model: nn.Module, path: Union[str, Path], *, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a state_dict, or a checkpoint holding one under "model"/"state_dict", into ``model``.

    Loads with ``weights_only=True`` and strips DataParallel's "module." prefix. Returns
    (missing, unexpected) keys; with ``strict`` either list being non-empty is an error that shows them.
    """
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: no state_dict found (expected tensors, or a dict with 'model' or 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise RuntimeError(f"{path}: {error}") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict and (missing or unexpected):
        show = lambda keys: ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")  # noqa: E731
        raise RuntimeError(f"{path} does not match {type(model).__name__}: missing keys [{show(missing)}]; "
                           f"unexpected keys [{show(unexpected)}]")
    return missing, unexpected
