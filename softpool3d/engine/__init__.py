"""Training, evaluation, metrics and checkpoints for clip-level video classification."""

from .checkpoint import CheckpointError, load_checkpoint, load_pretrained, save_checkpoint
from .config import ConfigError, ExperimentConfig, load_config
from .data import DataError
from .inference import model_from_checkpoint, predict, run_test
from .train import train

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "ExperimentConfig", "load_checkpoint", "load_config",
    "load_pretrained", "model_from_checkpoint", "predict", "run_test", "save_checkpoint", "train",
]
