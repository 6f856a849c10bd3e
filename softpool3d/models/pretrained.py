"""Pretrained weights: the registry of published weight sets, and loading them into our models.

Every weight set is a ``WeightSet`` in ``WEIGHTS``, keyed by (model name, tag):
- torchvision's Kinetics-400 weights for its nine video architectures (tag "kinetics400"; Swin3D-B
  also "kinetics400_imagenet22k"); file names, URLs, class names and accuracies as torchvision's own
  weight enums give them (``tests/test_pretrained.py`` checks the two agree);
- Hara et al.'s 3D-ResNets-PyTorch checkpoints for ``r3d_18`` ... ``r3d_200`` (tags "kinetics700" and
  "kinetics700_moments"). They are on Google Drive, with no direct URL: put the file into the cache
  folder (``cache_dir()``) or pass its path;
- pytorchvideo's Kinetics-400 hub models (``ptv_*`` names), recorded here but only buildable when
  pytorchvideo imports (see ``PYTORCHVIDEO_MODELS``).

``load_pretrained_weights(model, name, source)`` takes a tag, a local path or a URL. Downloads go
through torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file>``, once; after that nothing is
fetched. Files are read with ``torch.load(weights_only=True)`` only. Every tensor loads strictly
except the classifier, which is re-initialised (and logged) when its class count differs.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

import torch
from torch import nn

logger = logging.getLogger("softpool3d")

Triple = tuple[float, float, float]


class PretrainedError(RuntimeError):
    """Weights that cannot be used: unknown tag, unreadable file, or keys/shapes that do not match."""


@dataclass(frozen=True)
class WeightSet:
    """One published weight set and what it was trained with."""

    model: str                  # our builder's name
    tag: str                    # what ``pretrained=`` names it by
    source: str                 # "torchvision" | "hara" | "pytorchvideo"
    file_name: str              # its name in the cache folder
    url: Optional[str]          # None: no direct download (put the file into the cache folder)
    page: str                   # where it is published
    num_classes: int
    classes: Optional[tuple[str, ...]]   # class names in output order; None where we do not ship them
    mean: Triple                # the normalisation it was trained with, on [0, 1] RGB
    std: Triple
    clip_len: int               # frames per clip
    frame_interval: Optional[int]        # sampling stride in frames, where the source states it
    crop_size: int
    short_side: int             # resize before the crop
    accuracy: str               # what its source reports
    accuracy_source: str
    classifier: str             # the classifier's module name in the file ("fc", "head.1", ...)
    dataset: str = "Kinetics-400"


KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)   # torchvision's
MVIT_MEAN, MVIT_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HARA_MEAN, HARA_STD = (0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)   # Hara et al.'s mean.py, Kinetics


def _kinetics400_classes() -> tuple[str, ...]:
    from torchvision.models.video import R3D_18_Weights

    return tuple(R3D_18_Weights.KINETICS400_V1.meta["categories"])


KINETICS400_CLASSES = _kinetics400_classes()
TORCHVISION_URL = "https://download.pytorch.org/models/"
TORCHVISION_PAGE = "https://pytorch.org/vision/stable/models.html#video-classification"


def _torchvision(model: str, file_name: str, top1: float, top5: float, how: str, *, mean: Triple, std: Triple,
                 clip_len: int, crop_size: int, short_side: int, classifier: str,
                 tag: str = "kinetics400") -> WeightSet:
    return WeightSet(model=model, tag=tag, source="torchvision", file_name=file_name,
                     url=TORCHVISION_URL + file_name, page=TORCHVISION_PAGE, num_classes=400,
                     classes=KINETICS400_CLASSES, mean=mean, std=std, clip_len=clip_len, frame_interval=None,
                     crop_size=crop_size, short_side=short_side,
                     accuracy=f"Kinetics-400 top-1 {top1}, top-5 {top5} ({how})",
                     accuracy_source="torchvision's weight enum (meta['_metrics'], meta['_docs'])",
                     classifier=classifier)


_RESNET = dict(mean=KINETICS_MEAN, std=KINETICS_STD, clip_len=16, crop_size=112, short_side=128, classifier="fc")
_MVIT = dict(mean=MVIT_MEAN, std=MVIT_STD, clip_len=16, crop_size=224, short_side=256, classifier="head.1")
_SWIN = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, clip_len=32, crop_size=224, short_side=256, classifier="head")
_VIDEO_15_5_16 = "video level, 15 fps, 5 clips of 16 frames"

TORCHVISION_WEIGHTS = [
    _torchvision("tv_r3d_18", "r3d_18-b3b3357e.pth", 63.2, 83.479, _VIDEO_15_5_16, **_RESNET),
    _torchvision("mc3_18", "mc3_18-a90a0ba3.pth", 63.96, 84.13, _VIDEO_15_5_16, **_RESNET),
    _torchvision("r2plus1d_18", "r2plus1d_18-91a641e6.pth", 67.463, 86.175, _VIDEO_15_5_16, **_RESNET),
    _torchvision("s3d", "s3d-d76dad2f.pth", 68.368, 88.05, "clip level, 15 fps, 1 clip of 128 frames",
                 mean=KINETICS_MEAN, std=KINETICS_STD, clip_len=128, crop_size=224, short_side=256,
                 classifier="classifier.1"),
    _torchvision("mvit_v1_b", "mvit_v1_b-dbeb1030.pth", 78.477, 93.582,
                 "video level, 7.5 fps, 5 clips of 16 frames", **_MVIT),
    _torchvision("mvit_v2_s", "mvit_v2_s-ae3be167.pth", 80.757, 94.665,
                 "video level, 7.5 fps, 5 clips of 16 frames", **_MVIT),
    _torchvision("swin3d_t", "swin3d_t-7615ae03.pth", 77.715, 93.519, "video level, 15 fps, 12 clips of 32 frames",
                 **_SWIN),
    _torchvision("swin3d_s", "swin3d_s-da41c237.pth", 79.521, 94.158, "video level, 15 fps, 12 clips of 32 frames",
                 **_SWIN),
    _torchvision("swin3d_b", "swin3d_b_1k-24f7c7c6.pth", 79.427, 94.386,
                 "video level, 15 fps, 12 clips of 32 frames", **_SWIN),
    _torchvision("swin3d_b", "swin3d_b_22k-7c6ae6fa.pth", 81.643, 95.574,
                 "video level, 15 fps, 12 clips of 32 frames; ImageNet-22k start", tag="kinetics400_imagenet22k",
                 **_SWIN),
]

HARA_PAGE = "https://github.com/kenshohara/3D-ResNets-PyTorch#pre-trained-models (Google Drive folder)"
# Tag -> (file-name letters, class count, data set). Kinetics-700 has 700 classes, Moments in Time 339.
HARA_TAGS = {"kinetics700": ("K", 700, "Kinetics-700"), "kinetics700_moments": ("KM", 1039, "Kinetics-700 + Moments")}
HARA_DEPTHS = (18, 34, 50, 101, 152, 200)

HARA_WEIGHTS = [
    WeightSet(model=f"r3d_{depth}", tag=tag, source="hara", file_name=f"r3d{depth}_{letters}_200ep.pth", url=None,
              page=HARA_PAGE, num_classes=classes, classes=None, mean=HARA_MEAN, std=HARA_STD, clip_len=16,
              frame_interval=None, crop_size=112, short_side=112,
              accuracy="not stated in the release's README",
              accuracy_source="Hara et al., 3D-ResNets-PyTorch README (n_pretrain_classes); "
                              "accuracies in Kataoka et al., arXiv:2004.04968",
              classifier="fc", dataset=dataset)
    for depth in HARA_DEPTHS for tag, (letters, classes, dataset) in HARA_TAGS.items()
]

PYTORCHVIDEO_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/"
PYTORCHVIDEO_PAGE = "https://github.com/facebookresearch/pytorchvideo/blob/main/docs/source/model_zoo.md"
# name -> (file, frames x interval, crop, top-1, top-5), from pytorchvideo's hub README.
_PYTORCHVIDEO = {
    "x3d_xs": ("X3D_XS.pyth", (4, 12), 182, 69.12, 88.63),
    "x3d_s": ("X3D_S.pyth", (13, 6), 182, 73.33, 91.27),
    "x3d_m": ("X3D_M.pyth", (16, 5), 224, 75.94, 92.72),
    "slow_r50": ("SLOW_8x8_R50.pyth", (8, 8), 224, 74.58, 91.63),
    "c2d_r50": ("C2D_8x8_R50.pyth", (8, 8), 224, 71.46, 89.68),
    "i3d_r50": ("I3D_8x8_R50.pyth", (8, 8), 224, 73.27, 90.70),
    "csn_r101": ("CSN_32x2_R101.pyth", (32, 2), 224, 77.00, 92.90),
    "r2plus1d_r50": ("R2PLUS1D_16x4_R50.pyth", (16, 4), 224, 76.01, 92.23),
}
PYTORCHVIDEO_WEIGHTS = [
    WeightSet(model=f"ptv_{name}", tag="kinetics400", source="pytorchvideo", file_name=file,
              url=PYTORCHVIDEO_URL + file, page=PYTORCHVIDEO_PAGE, num_classes=400, classes=KINETICS400_CLASSES,
              mean=MVIT_MEAN, std=MVIT_STD, clip_len=frames, frame_interval=interval, crop_size=crop,
              short_side=256 if crop == 224 else crop, accuracy=f"Kinetics-400 top-1 {top1}, top-5 {top5} (30 views)",
              accuracy_source="pytorchvideo/models/hub/README.md", classifier="blocks.5.proj")
    for name, (file, (frames, interval), crop, top1, top5) in _PYTORCHVIDEO.items()
]

WEIGHTS: dict[tuple[str, str], WeightSet] = {
    (w.model, w.tag): w for w in TORCHVISION_WEIGHTS + HARA_WEIGHTS + PYTORCHVIDEO_WEIGHTS
}


def weight_tags(name: str) -> list[str]:
    """The tags of the weight sets published for model ``name`` (may be empty)."""
    return [tag for (model, tag) in WEIGHTS if model == name]


def weight_set(name: str, tag: str) -> WeightSet:
    """The ``WeightSet`` of model ``name`` tagged ``tag``; an error lists the tags there are."""
    if (name, tag) not in WEIGHTS:
        tags = weight_tags(name)
        models = sorted({model for model, _ in WEIGHTS})
        raise PretrainedError(f"no pretrained weights {tag!r} for {name}; "
                              + (f"it has {', '.join(tags)}" if tags else
                                 f"none are published for it (models with weights: {', '.join(models)})"))
    return WEIGHTS[(name, tag)]


def cache_dir() -> Path:
    """torch.hub's checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` (read afresh on every call)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(file_name: str, url: Optional[str], page: str = "") -> Path:
    """``cache_dir()/file_name``, downloaded from ``url`` (with a progress bar) when it is not there yet."""
    path = cache_dir() / file_name
    if path.is_file():
        return path
    if url is None:
        raise PretrainedError(f"{path} is not there and has no direct download; get {file_name} from {page} "
                              "and put it there (or pass its path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, path)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)   # writes a temporary file, then renames
    except OSError as error:   # urllib's URLError and HTTPError are OSErrors
        raise PretrainedError(f"cannot download {url} to {path}: {error}; on a machine without the network, "
                              f"put {file_name} there by hand (or pass its path)") from None
    return path


def read_state_dict(path: Union[str, Path], *, mmap: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a weights file, and the checkpoint dict around them (empty for a bare state_dict).

    Reads with ``weights_only=True``; ``mmap`` maps the tensors instead of reading them (for a look at
    the plain values around them; files in torch's old, non-zip format are read as usual). Finds the
    tensors under "model_state" (pytorchvideo), "state_dict" (Hara et al.) or "model" (softpool3d), or
    takes the file as a state_dict, and strips DataParallel's "module." prefix. Errors name the file.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as error:  # noqa: BLE001 - torch raises several types for a damaged file
        first_line = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else ""
        # A pickled Python object (not garbage bytes, which fail on an unsupported operand) is refused.
        culprit = re.search(r"Unsupported global: GLOBAL [\w.]+", str(error))
        if "Weights only load failed" in str(error) and culprit:
            raise PretrainedError(f"{path} holds Python objects that only pickle can load (weights_only=False; "
                                  f"{culprit.group(0)}); softpool3d loads plain tensors "
                                  "only and will not unpickle it: load it yourself if you trust it and torch.save "
                                  "its state_dict") from None
        raise PretrainedError(f"{path} cannot be read ({type(error).__name__}: {first_line[:160]}): "
                              "it is truncated or not a checkpoint; delete it (a download is repeated "
                              "on the next use)") from None
    outer, state = {}, checkpoint
    if isinstance(checkpoint, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                outer, state = checkpoint, checkpoint[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"{path} is not a checkpoint: no state_dict of tensors in it (looked at the top "
                              "level and under 'model_state', 'state_dict', 'model'); delete it or pass another")
    return {k.removeprefix("module."): v for k, v in state.items()}, outer


# ----------------------------------------------------------------- Hara et al.'s layout -> ours

_HARA_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.+)$")
_HARA_SHORTCUT = re.compile(r"^layer(\d)\.(\d+)\.downsample\.([01])\.(.+)$")


def is_hara_layout(state: dict[str, torch.Tensor]) -> bool:
    """True for keys as in Hara et al.'s resnet.py (``conv1.weight``, ``layer1.0.conv1.weight`` ...)."""
    return "conv1.weight" in state and any(_HARA_BLOCK.match(k) for k in state)


def hara_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Hara et al.'s keys to ``ResNet3d``'s: conv1/bn1 -> stem.0/1, layerN.M.convK/bnK -> body.*,
    downsample.0/1 -> shortcut.0/1; fc stays. A key it does not know is kept, so that it shows as unexpected."""
    # In our blocks' ``body`` Sequential every conv is followed by its BN and a ReLU: conv K sits at 3 (K - 1).
    renamed = {}
    for key, value in state.items():
        if key.startswith(("conv1.", "bn1.")):
            new = ("stem.0." if key.startswith("conv1.") else "stem.1.") + key.split(".", 1)[1]
        elif match := _HARA_BLOCK.match(key):
            stage, block, kind, k, rest = match.groups()
            new = f"layer{stage}.{block}.body.{3 * (int(k) - 1) + (kind == 'bn')}.{rest}"
        elif match := _HARA_SHORTCUT.match(key):
            stage, block, index, rest = match.groups()
            new = f"layer{stage}.{block}.shortcut.{index}.{rest}"
        else:
            new = key
        renamed[new] = value
    return renamed


def _check_hara(name: str, path: Path, state: dict[str, torch.Tensor], outer: dict,
                own: dict[str, torch.Tensor]) -> None:
    depth = name.removeprefix("r3d_")
    arch = outer.get("arch")
    if arch is not None and arch != f"resnet-{depth}":
        raise PretrainedError(f"{path} holds arch {arch!r}, but {name} is Hara et al.'s 'resnet-{depth}'; "
                              f"build the model that matches (e.g. r3d_{str(arch).rpartition('-')[2]})")
    ours_shortcuts = {k.split(".shortcut.")[0] for k in own if ".shortcut." in k}
    theirs = {k.split(".downsample.")[0] for k in state if ".downsample." in k}
    if ours_shortcuts and not theirs & ours_shortcuts:
        raise PretrainedError(f"{path} has no downsample (projection) keys: it was trained with shortcut A "
                              f"(zero-padded identity, Hara et al.'s older 18/34 releases), but {name} uses "
                              "shortcut B (1x1x1 projections: " + ", ".join(sorted(ours_shortcuts)[:3]) +
                              "); use their newer r3dNN_K_200ep.pth files, which use shortcut B")


# ----------------------------------------------------------------- loading


def _show(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def _classifier(model: nn.Module) -> str:
    """The qualified name of the last module with parameters: the classifier."""
    last = ""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def resolve(name: str, source: str) -> tuple[Path, Optional[WeightSet]]:
    """The local file for ``source`` (a tag of ``name``, a URL, or a path) and its weight set, if any."""
    source = str(source)
    if (name, source) in WEIGHTS:
        weights = WEIGHTS[(name, source)]
        return cached_file(weights.file_name, weights.url, weights.page), weights
    if is_url(source):
        file_name = os.path.basename(urlparse(source).path)
        if not file_name:
            raise PretrainedError(f"the URL {source} names no file")
        return cached_file(file_name, source), None
    path = Path(source).expanduser()
    if path.is_file():
        return path, None
    tags = weight_tags(name)
    raise PretrainedError(f"pretrained={source!r} is neither a weight tag of {name} "
                          f"({', '.join(tags) if tags else 'it has none'}), nor a URL, nor a file")


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https", "file")


def local_file(name: str, source: str) -> Optional[Path]:
    """The file ``resolve`` would give for ``source``, a URL or a path, where it is already here; None for a
    tag of ``name``, a URL not downloaded yet (nothing is fetched) or a path with no file."""
    source = str(source)
    if (name, source) in WEIGHTS:
        return None
    path = cache_dir() / os.path.basename(urlparse(source).path) if is_url(source) else Path(source).expanduser()
    return path if path.is_file() else None


def load_pretrained_weights(model: nn.Module, name: str, source: Union[str, Path]) -> list[str]:
    """Load weights ``source`` (a tag, a path or a URL) into ``model``, built as ``name``; returns the
    classifier keys left re-initialised (empty when the class counts agree).

    Every tensor outside the classifier must match the model's key for key and shape: otherwise the
    error lists the keys, names the file and the architecture. Hara et al.'s key layout is mapped
    onto ``r3d_*`` (their ``arch`` is checked); a classifier stored under another module name (e.g.
    ``fc`` where the model has a dropout and ``fc.1``) is mapped onto the model's.
    """
    path, weights = resolve(name, str(source))
    state, outer = read_state_dict(path)
    own = model.state_dict()
    if name.startswith("r3d_") and is_hara_layout(state):
        _check_hara(name, path, state, outer, own)
        state = hara_to_ours(state)

    head = _classifier(model)
    file_head = weights.classifier if weights is not None else next(reversed(state)).rpartition(".")[0]
    if file_head != head:   # the same classifier under another name (a dropout in front of it)
        state = {(head + k[len(file_head):] if k.startswith(file_head + ".") else k): v for k, v in state.items()}
    in_head = lambda key: key.startswith(head + ".")  # noqa: E731

    # BatchNorm's num_batches_tracked does not exist in old files (PyTorch < 0.4); it is not a weight.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                   if k in own and state[k].shape != own[k].shape and not in_head(k)]
    if missing or unexpected or wrong_shape:
        raise PretrainedError(
            f"{path} does not fit {name} ({type(model).__name__}): "
            + "; ".join(f"{label} [{_show(keys)}]" for label, keys in
                        (("missing", missing), ("unexpected", unexpected), ("other shape", wrong_shape)) if keys))

    skipped = [k for k in state if in_head(k) and state[k].shape != own[k].shape]
    if skipped:
        logger.warning("%s: re-initialised the classifier %s: the file has %d classes, the model %d",
                       path.name, ", ".join(skipped), state[skipped[0]].shape[0], own[skipped[0]].shape[0])
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    logger.info("loaded %s into %s%s", path, name, f" ({weights.source}, {weights.tag})" if weights else "")
    return skipped


_noted: set[tuple] = set()


def normalisation_notes(weights: WeightSet, clip_len: int, crop_size: int, mean: tuple, std: tuple) -> None:
    """Log (once per setting) the normalisation taken with ``weights``, and warn where the clip or the
    normalisation differs from what the weights were trained with (a silent loss of accuracy)."""
    key = (weights.model, weights.tag, clip_len, crop_size, tuple(mean), tuple(std))
    if key in _noted:
        return
    _noted.add(key)
    logger.info("%s %s: normalising with mean %s, std %s; the weights were trained on %d-frame %dx%d clips",
                weights.model, weights.tag, tuple(mean), tuple(std), weights.clip_len, weights.crop_size,
                weights.crop_size)
    differs = [f"{label} {ours} (the weights': {theirs})" for label, ours, theirs in
               (("mean", tuple(mean), weights.mean), ("std", tuple(std), weights.std),
                ("clip_len", clip_len, weights.clip_len), ("crop_size", crop_size, weights.crop_size))
               if ours != theirs]
    if differs:
        logger.warning("%s %s: the config differs from what the weights were trained with: %s",
                       weights.model, weights.tag, "; ".join(differs))
