"""A new learner: GRU4Rec (Hidasi et al., 2016), a GRU over item embeddings, reading ids or soft items."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from farzi_lightning.learners import Learner
from farzi_lightning.learners.embedding import SoftEmbedding


class GRU4Rec(Learner):
    """Session-based recommendation with a GRU.

    Args:
        vocab_size: items + padding (linked from the data by the CLI).
        d_model: embedding and hidden width.
        n_layers: stacked GRU layers.
        max_len: longest history read (the summary's ``seq_len - 1`` must fit).
    """

    def __init__(self, vocab_size: int, d_model: int = 32, n_layers: int = 1, max_len: int = 50) -> None:
        super().__init__()
        # The contract (farzi_lightning.contracts): these three, config() (from Learner) and forward.
        self.vocab_size, self.max_len, self.padding_idx = vocab_size, max_len, 0
        self.embed = SoftEmbedding(vocab_size, d_model, padding_idx=0)
        self.gru = nn.GRU(d_model, d_model, n_layers, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` ids or ``(B, L, V)`` probabilities → next-item logits ``(B, L, V)``."""
        with torch.backends.cudnn.flags(enabled=not tokens.is_floating_point()):  # cuDNN has no double backward
            h, _ = self.gru(self.embed(tokens))  # (B, L, D)
        return self.head(h)
