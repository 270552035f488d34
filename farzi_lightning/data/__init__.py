"""Datamodules: word-level text corpora and user–item interaction logs (leave-last-out)."""

from .events import Split, leave_last_out, read_interactions
from .interactions import InteractionDataModule
from .locate import ENV_VAR, resolve
from .text import TextDataModule, Vocabulary
from .windows import IGNORE_INDEX

__all__ = ["ENV_VAR", "IGNORE_INDEX", "InteractionDataModule", "Split", "TextDataModule", "Vocabulary",
           "leave_last_out", "read_interactions", "resolve"]
