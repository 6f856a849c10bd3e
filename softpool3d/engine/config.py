"""Experiment configs: YAML files checked against a typed schema, with ``key=value`` overrides.

A YAML file may name other files it builds on, merged first, in order, with paths relative to it::

    base: [../datasets/ucf101.yaml, ../models/r3d_18.yaml]
    model: {pool: max}

An unknown key is an error that names it and suggests the closest valid key; a value of the
wrong type is an error that names the key. YAML is parsed safely (no tags, no code).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ..datasets.io import BACKENDS as DECODER_BACKENDS
from ..datasets.synthetic import MIRROR_PAIRS as SYNTHMOTION_MIRROR_PAIRS
from ..models import list_models
from ..nn import POOL_KINDS

DATASETS = ("synthmotion", "ucf101", "hmdb51", "kinetics", "list", "folder")
SYNTHMOTION_GROUPS = 10                 # make_synthmotion's default: groups 1-3 test, 4-10 train


@dataclass
class ModelConfig:
    name: str = "r3d_18"
    pool: str = "soft"                  # soft | max | avg: the model's pooling layers
    head_pool: str = "avg"              # the global pool before the classifier
    dropout: float = 0.0
    pretrained: Optional[str] = None    # a checkpoint to fine-tune from; a classifier of another size is re-initialised


@dataclass
class DataConfig:
    dataset: str = "synthmotion"        # one of DATASETS
    root: str = "data/synthmotion"      # the videos (for synthmotion: the folder it is generated into)
    annotations: Optional[str] = None   # ucf101, hmdb51: the folder of official split files
    fold: int = 1                       # ucf101, hmdb51: official fold 1-3
    train_list: Optional[str] = None    # kinetics: the train CSV; list: the train list file
    val_list: Optional[str] = None      # kinetics: the validate CSV; list: the val list file
    classes: Optional[str] = None       # kinetics, list: a file with one class name per line
    clip_len: int = 16
    frame_interval: int = 2
    short_side: int = 128
    crop_size: int = 112
    min_area: float = 0.25
    flip: Optional[bool] = None         # horizontal flip in training; None: on, except synthmotion without flip_pairs
    flip_pairs: list[list[str]] = field(default_factory=list)   # classes a flip swaps: [[MoveLeft, MoveRight], ...]
    backend: str = "auto"               # video decoder: auto | pyav | torchcodec | decord | frames
    num_workers: int = 4
    generate: bool = True               # synthmotion: generate the dataset when it is absent
    synth_videos_per_class: int = 30
    keep_classes: Optional[list[str]] = None   # only these classes (by name, in the dataset's order), every split
    train_videos_per_class: Optional[int] = None   # at most N train videos per class: the first N in list order
    mean: Optional[list[float]] = None  # RGB normalisation on [0, 1]; None: torchvision's Kinetics-400 mean and std
    std: Optional[list[float]] = None


@dataclass
class OptimConfig:
    name: str = "sgd"                   # sgd | adamw
    lr: float = 0.1                     # for a total batch of 64 (scaled linearly, see train.scale_lr)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.1
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16                # per process
    accumulate: int = 1                 # optimizer step every N batches, and after the last of each epoch
    label_smoothing: float = 0.0
    clip_grad_norm: Optional[float] = None
    amp: str = "none"                   # none | bf16 | fp16 (fp16 needs a GPU and uses a GradScaler)
    channels_last: bool = False         # channels_last_3d memory format for model and clips
    compile: bool = False               # torch.compile the model
    reuse_freed_memory: bool = True     # CPU, tools/train.py: glibc keeps freed memory for reuse (engine/host.py)
    device: str = "auto"                # auto | cpu | cuda
    scale_lr: bool = True               # lr *= total batch / 64
    val_every: int = 1                  # epochs between clip-level validations (0: never)
    log_every: int = 10                 # steps between TensorBoard points
    stop_after_steps: Optional[int] = None   # save last.pt and stop after this many optimizer steps
    progress: bool = True               # tqdm bar on rank 0


@dataclass
class TestConfig:
    views: str = "10x3"                 # num_clips x num_crops per video
    batch_size: int = 4
    on_error: str = "skip"              # skip | raise: what an undecodable test video does
    output_dir: Optional[str] = None    # default: <run folder>/test


@dataclass
class ExperimentConfig:
    name: str = "synthmotion_r3d_18_soft"
    output_dir: str = "runs"            # the run folder is <output_dir>/<name>
    seed: int = 0
    resume: Optional[str] = None        # auto (<run folder>/last.pt if present) or a checkpoint path
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key and the source."""


def _valid_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        full = f"{prefix}{key}"
        keys.append(full)
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            keys += _valid_keys(value, f"{full}.")
    return keys


def _suggest(key: str, valid: list[str]) -> Optional[str]:
    """The valid key closest to ``key``: a sibling first, then any key, then any key with a close last part."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in valid if k.rpartition(".")[0] == parent]
    for pool, word in ((siblings, key), (valid, key)):
        close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
        if close:
            return close[0]
    leaves = {k.rpartition(".")[2]: k for k in valid}
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
    return leaves[close[0]] if close else None


def _explain(error: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(error, "full_key", None) or ""
    if isinstance(error, ConfigKeyError):
        close = _suggest(key, _valid_keys(schema))
        hint = f"; did you mean '{close}'?" if close else ""
        return ConfigError(f"{source}: unknown config key '{key}'{hint}")
    if isinstance(error, ValidationError):
        return ConfigError(f"{source}: bad value for '{key}': {str(getattr(error, 'msg', error)).splitlines()[0]}")
    return ConfigError(f"{source}: {error}")


def _apply_overrides(config: DictConfig, schema: DictConfig, overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=0.05")
        try:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as error:
            raise _explain(error, schema, f"override {item!r}") from None
    return config


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The file and the files it builds on (``base``), as (mapping, source name) pairs, bases first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' files include each other in a cycle")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    layers = []
    for base in bases:
        layers += _read_yaml(path.parent / base, seen + (path,))
    return layers + [(data, str(path))]


def configs_root() -> Path:
    """The shipped configs: ``softpool3d/configs`` in an installed wheel, ``configs/`` in a source checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> tuple[Path, list[str]]:
    """(the folder, the names in it): ``ucf101/r3d_18_soft`` for ``<folder>/ucf101/r3d_18_soft.yaml``."""
    root = configs_root()
    names = sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.rglob("*.yaml"))
    return root, names


def resolve_config(path: Union[str, Path]) -> Path:
    """A config file: ``path`` itself when it exists, else the shipped config of that name (``.yaml`` optional)."""
    given = Path(path)
    if given.is_file():
        return given
    root, names = shipped_configs()
    name = given.as_posix().removesuffix(".yaml").removeprefix("configs/")
    if name in names:
        return root / f"{name}.yaml"
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; 'softpool3d configs' lists the shipped ones"
    raise ConfigError(f"--config {str(path)!r}: no such file, and no shipped config of that name{hint}")


def load_config(path: Union[str, Path, None] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The schema's defaults, then the YAML file (and its bases), then ``key=value`` overrides.

    ``path`` is a file, or the name of a shipped config (``ucf101/r3d_18_soft``, see ``shipped_configs``).
    Returns a read-only OmegaConf config typed by ``ExperimentConfig``; raises ConfigError.
    """
    schema = OmegaConf.structured(ExperimentConfig)
    config = schema
    layers = _read_yaml(resolve_config(path)) if path is not None else []
    for data, source in layers:
        try:
            config = OmegaConf.merge(config, OmegaConf.create(data))
        except OmegaConfBaseException as error:
            raise _explain(error, schema, source) from None
    config = _apply_overrides(config, schema, overrides)
    check(config)
    OmegaConf.set_readonly(config, True)
    return config


def check(config: DictConfig) -> None:
    """Value checks the types cannot express."""
    choices = {
        "model.name": (config.model.name, list_models("video")),
        "data.dataset": (config.data.dataset, DATASETS),
        "model.pool": (config.model.pool, POOL_KINDS),
        "model.head_pool": (config.model.head_pool, POOL_KINDS),
        "data.backend": (config.data.backend, DECODER_BACKENDS),
        "optim.name": (config.optim.name, ("sgd", "adamw")),
        "train.amp": (config.train.amp, ("none", "bf16", "fp16")),
        "train.device": (config.train.device, ("auto", "cpu", "cuda")),
        "test.on_error": (config.test.on_error, ("skip", "raise")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    positive = {"train.epochs": config.train.epochs, "train.batch_size": config.train.batch_size,
                "train.accumulate": config.train.accumulate, "data.clip_len": config.data.clip_len,
                "data.frame_interval": config.data.frame_interval, "test.batch_size": config.test.batch_size}
    positive.update({"data.short_side": config.data.short_side, "data.crop_size": config.data.crop_size,
                     "train.log_every": config.train.log_every, "data.fold": config.data.fold})
    if config.train.stop_after_steps is not None:
        positive["train.stop_after_steps"] = config.train.stop_after_steps
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    not_negative = {"data.num_workers": config.data.num_workers, "train.val_every": config.train.val_every,
                    "optim.momentum": config.optim.momentum, "optim.weight_decay": config.optim.weight_decay,
                    "optim.warmup_epochs": config.optim.warmup_epochs, "optim.min_lr": config.optim.min_lr,
                    "model.dropout": config.model.dropout, "train.label_smoothing": config.train.label_smoothing}
    for key, value in not_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {config.optim.lr}")
    in_unit_interval = {"data.min_area": config.data.min_area,
                        "optim.warmup_start_factor": config.optim.warmup_start_factor}
    for key, value in in_unit_interval.items():
        if not 0 < value <= 1:
            raise ConfigError(f"{key} must be in (0, 1], got {value}")
    if config.model.dropout >= 1 or config.train.label_smoothing > 1:
        raise ConfigError("model.dropout must be < 1 and train.label_smoothing <= 1, got "
                          f"{config.model.dropout} and {config.train.label_smoothing}")
    if config.train.clip_grad_norm is not None and config.train.clip_grad_norm <= 0:
        raise ConfigError(f"train.clip_grad_norm must be > 0 (or null for none), got {config.train.clip_grad_norm}")
    if config.data.crop_size > config.data.short_side:
        raise ConfigError(f"data.crop_size={config.data.crop_size} is larger than data.short_side="
                          f"{config.data.short_side}, the size frames are resized to before cropping")
    if config.data.dataset in ("ucf101", "hmdb51") and config.data.fold not in (1, 2, 3):
        raise ConfigError(f"data.fold={config.data.fold}: {config.data.dataset} has official folds 1, 2 and 3")
    if config.data.dataset == "synthmotion" and config.data.synth_videos_per_class < SYNTHMOTION_GROUPS:
        raise ConfigError(f"data.synth_videos_per_class must be >= {SYNTHMOTION_GROUPS} (one video per group), "
                          f"got {config.data.synth_videos_per_class}")
    unpaired = unpaired_mirror_classes(config.data)
    if config.data.flip and unpaired:
        raise ConfigError(f"data.flip=true with data.dataset=synthmotion: a horizontal flip changes SynthMotion's "
                          f"labels (MoveLeft becomes MoveRight, clockwise becomes counter-clockwise); name them "
                          f"in data.flip_pairs, or set data.flip=false (in no pair: {', '.join(unpaired)})")
    if config.data.train_videos_per_class is not None and config.data.train_videos_per_class < 1:
        raise ConfigError(f"data.train_videos_per_class must be >= 1 (or null for all), got "
                          f"{config.data.train_videos_per_class}")
    check_keep_classes(config)
    parse_views(config.test.views)


def unpaired_mirror_classes(data: DictConfig) -> list[str]:
    """SynthMotion's classes that a horizontal flip relabels (``MIRROR_PAIRS``), kept (``data.keep_classes``, or
    all) and in no pair of ``data.flip_pairs``: a flipped clip of one would keep a wrong label. Empty for other
    datasets, whose classes softpool3d cannot know here, and when every kept class is its own mirror image."""
    if data.dataset != "synthmotion":
        return []
    paired = {name for pair in data.flip_pairs for name in pair}
    kept = [name for pair in SYNTHMOTION_MIRROR_PAIRS for name in pair
            if data.keep_classes is None or name in data.keep_classes]
    return [name for name in kept if name not in paired]


def check_keep_classes(config: DictConfig) -> None:
    """``data.keep_classes``: two or more distinct names, and, when training flips, no ``data.flip_pairs`` pair
    split by it."""
    keep = config.data.keep_classes
    if keep is None:
        return
    if len(keep) < 2 or len(set(keep)) != len(keep):
        raise ConfigError(f"data.keep_classes must name two or more different classes (or be null for all), "
                          f"got {list(keep)}")
    if config.data.flip is False:    # no flip, so no flipped clip to label (null: on where flip_pairs are)
        return
    for pair in config.data.flip_pairs:
        kept = [name for name in pair if name in keep]
        if len(kept) == 1:
            raise ConfigError(f"data.keep_classes keeps {kept[0]!r} but not its flip_pairs mirror "
                              f"{[n for n in pair if n != kept[0]][0]!r}: a flipped clip would have no label; "
                              f"keep both, or drop the pair from data.flip_pairs")


def parse_views(views: str, name: str = "test.views") -> tuple[int, int]:
    """'10x3' -> (num_clips=10, num_crops=3); crops must be 1 or 3. Errors name the setting ``name``."""
    try:
        clips, crops = (int(part) for part in str(views).lower().split("x"))
    except ValueError:
        raise ConfigError(f"{name}={views!r} must look like CLIPSxCROPS, e.g. 10x3") from None
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"{name}={views!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def save_config(config: DictConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(OmegaConf.to_yaml(config))


def to_plain(config: DictConfig) -> dict:
    """The config as plain dicts, lists and scalars (what a checkpoint stores)."""
    return OmegaConf.to_container(config, resolve=True)


def from_plain(data: dict, overrides: Sequence[str] = ()) -> DictConfig:
    """A config stored in a checkpoint, validated against today's schema, with overrides."""
    schema = OmegaConf.structured(ExperimentConfig)
    try:
        config = OmegaConf.merge(schema, OmegaConf.create(data))
    except OmegaConfBaseException as error:
        raise _explain(error, schema, "the checkpoint's config") from None
    config = _apply_overrides(config, schema, overrides)
    check(config)
    OmegaConf.set_readonly(config, True)
    return config
