"""A trainable mini-Transformer for English→French translation: YAML → data → model → checkpoint → BLEU."""

from transformer.config import Config, load_config
from transformer.errors import CheckpointError, ConfigError, DataError, ToolkitError
from transformer.model import Transformer
from transformer.trainer import Trainer
from transformer.translator import Translator

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "ToolkitError",
    "Trainer",
    "Transformer",
    "Translator",
    "load_config",
]
