"""A trainable mini-Transformer for English→French translation: YAML → data → model → checkpoint → BLEU.

Importing the package loads what translation needs, nothing of training: the trainer lives in
`transformer.prepare` (a run's data, model and optimizer) and `transformer.trainer` (the loop).
"""

from transformer.config import Config, load_config
from transformer.errors import CheckpointError, ConfigError, DataError, ToolkitError, TrainingError
from transformer.model import Transformer
from transformer.translator import Translator

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "ToolkitError",
    "TrainingError",
    "Transformer",
    "Translator",
    "load_config",
]
