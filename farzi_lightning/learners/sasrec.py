"""SASRec (Kang & McAuley, 2018): self-attentive sequential recommendation, reading hard or soft items."""

from __future__ import annotations

from .transformer import TransformerLM


class SASRec(TransformerLM):
    """Causal self-attention over a user's item history; logits score every item as the next one.

    Item ids run 1..vocab_size-1 and 0 is padding (left-padded histories); padded positions are hidden from
    attention. Scores use the shared item embedding table, as in the paper. Trained with full softmax
    cross-entropy over all items rather than the paper's sampled binary loss.

    Args:
        vocab_size: number of item ids including padding (``num_items + 1``).
        d_model: embedding / model width.
        n_layers: number of self-attention blocks.
        n_heads: attention heads per block.
        max_len: longest history considered (the paper's n).
        dropout: dropout rate (the paper uses 0.2 on ML-1M).
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 1,
                 max_len: int = 50, dropout: float = 0.2) -> None:
        super().__init__(vocab_size, d_model, n_layers, n_heads, max_len, dropout, padding_idx=0)
