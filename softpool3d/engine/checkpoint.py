"""Training checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only: model, optimizer, scheduler and
scaler state dicts, epoch, step, the batch within the epoch, the best validated clip top-1 and the
epoch it came from (``best_epoch``), the torch and Python RNG states (``rng``), the config, the
class names, and what the data was made with, resolved: ``normalisation`` ({"mean": [...], "std": [...]})
and ``clip`` (clip_len, frame_interval, crop_size, short_side). A config that fine-tunes from the
checkpoint (``model.pretrained``) takes its normalisation (see ``trained_with``). Training also reseeds
every step from (seed, rank, epoch, batch), so a resume repeats the uninterrupted run's randomness exactly.
``save_checkpoint`` writes a temporary file in the same folder, flushes it to disk and renames it over
the target, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

logger = logging.getLogger("softpool3d.engine")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, corrupt, or not ours); the message names the file."""


def save_checkpoint(state: dict[str, Any], path: Union[str, Path]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (``weights_only=True``: tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types for a damaged file
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "it is truncated or corrupt - use another checkpoint (e.g. best.pt) or start afresh"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a softpool3d training checkpoint (no 'model' entry)")
    return state


CLIP_KEYS = ("clip_len", "frame_interval", "crop_size", "short_side")


def trained_with(path: Union[str, Path]) -> dict[str, Any]:
    """What the softpool3d checkpoint ``path`` was trained on: "mean" and "std" (tuples) and the ``CLIP_KEYS``,
    as far as it tells; empty for another codebase's weights.

    A checkpoint records them (``normalisation``, ``clip``); an older one has only its config, whose
    ``data.mean`` / ``data.std`` (or, unset, those of the weight tag it was fine-tuned from) count. The file
    is read with ``weights_only=True`` and its tensors memory-mapped; one that cannot be read is a
    ``PretrainedError`` naming it.
    """
    path = Path(path)
    stat = path.stat()
    return dict(_trained_with(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=16)
def _trained_with(path: str, mtime_ns: int, size: int) -> tuple:   # keyed by the file's version
    from ..models.pretrained import WEIGHTS, read_state_dict

    _, outer = read_state_dict(path, mmap=True)
    config = outer.get("config")
    if "classes" not in outer or not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return ()
    data, model = config["data"], config.get("model") or {}
    found: dict[str, Any] = {}
    recorded = outer.get("normalisation")
    if isinstance(recorded, dict):
        found = {key: recorded[key] for key in ("mean", "std") if recorded.get(key) is not None}
    else:   # older: its config's, or those of the weights it was fine-tuned from by tag
        weights = WEIGHTS.get((model.get("name"), model.get("pretrained")))
        for key in ("mean", "std"):
            value = data.get(key) if data.get(key) is not None else getattr(weights, key, None)
            if value is not None:
                found[key] = value
    found = {key: tuple(float(v) for v in value) for key, value in found.items()}
    clip = outer.get("clip") if isinstance(outer.get("clip"), dict) else data
    found |= {key: clip[key] for key in CLIP_KEYS if clip.get(key) is not None}
    return tuple(found.items())


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def classifier_name(model: nn.Module) -> str:
    """The qualified name of the last module with parameters: the classifier."""
    last = ""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def load_pretrained(model: nn.Module, path: Union[str, Path], *, name: Optional[str] = None) -> list[str]:
    """Fine-tuning: load a checkpoint's weights; a classifier whose class count differs is re-initialised.

    ``path`` is a softpool3d checkpoint, or else a weight tag of model ``name`` (e.g. "kinetics400"),
    a URL or another weights file, loaded by ``softpool3d.models.load_pretrained_weights``.
    Returns the re-initialised keys. Any other mismatch is an error naming the keys.
    """
    from ..models.pretrained import load_pretrained_weights

    if name is not None and not Path(path).is_file():   # a weight tag or a URL
        return load_pretrained_weights(model, name, path)
    try:
        state = load_checkpoint(path)["model"]
    except CheckpointError:
        if name is None:
            raise
        return load_pretrained_weights(model, name, path)   # another codebase's weights (e.g. Hara et al.'s)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head = classifier_name(model)
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    wrong = [k for k in skipped if not k.startswith(head + ".")]
    if wrong:
        raise CheckpointError(f"{path}: shapes differ outside the classifier '{head}': {wrong[:5]}")
    for key in skipped:
        del state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:5]}, "
                              f"unexpected {list(result.unexpected_keys)[:5]}")
    if skipped:
        logger.info("re-initialised %s (the class count differs from %s)", ", ".join(skipped), path)
    return skipped


def rng_state() -> dict:
    """The torch (CPU and CUDA) and Python RNG states, as plain tensors and values."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(v) if isinstance(v, list) else v for v in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
