"""``SummaryMonitor``: what the summary says while it is being distilled, in TensorBoard.

Every ``every_n_steps`` outer steps (and at the start and end of fit) rank zero writes, at the trainer's step:

- text ``summary/sequences``: the first sequences decoded (words, item titles, or ids), one a line;
- text ``summary/top_k``: the top-k alternatives at a few positions of the first sequence, with probabilities;
- image ``summary/mass``: positions (rows) × the most-used tokens (columns), the probability mass averaged over
  sequences, brighter = more (square-root scale);
- image ``summary/entropy``: sequences (rows) × positions (columns), each position's entropy as a share of the
  largest possible (log V), brighter = flatter;
- histograms ``summary/token_usage`` and ``data/token_usage``: the summary's probability mass, and the training
  data's token counts scaled to the summary's size, over the tokens' frequency rank in the training data
  (0 = most frequent), so the two overlay.

Images are built from tensors (no plotting library); the writer is any logger whose ``experiment`` has
TensorBoard's ``add_text``/``add_image``/``add_histogram_raw`` (``TensorBoardLogger``). Without one the callback
does nothing and says so once.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from farzi_lightning.export import decode_rows

from .schedule import EveryNSteps

# Anchors of a perceptually ordered colour map (dark blue → green → yellow), RGB in [0, 1].
_COLOURS = torch.tensor([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                         [0.99, 0.91, 0.14]])


def colour_map(values: Tensor, scale: int = 1) -> Tensor:
    """``(H, W)`` values in [0, 1] → a ``(3, H·scale, W·scale)`` RGB image (linear between the anchors)."""
    x = values.clamp(0, 1).float() * (len(_COLOURS) - 1)
    low = x.floor().long().clamp(max=len(_COLOURS) - 2)
    frac = (x - low).unsqueeze(-1)
    rgb = _COLOURS[low] * (1 - frac) + _COLOURS[low + 1] * frac  # (H, W, 3)
    rgb = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return rgb.permute(2, 0, 1).contiguous()


def token_names(data, vocab_size: int) -> list[str]:
    """What a person reads for every id (the data module's ``names()``), else the ids."""
    names = data.names() if hasattr(data, "names") else None
    return list(names) if names is not None else [str(i) for i in range(vocab_size)]


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "/") + "`"


class SummaryMonitor(EveryNSteps):
    """Logs the summary's decoded text, top-k alternatives, mass and entropy heatmaps and token-usage
    histograms (see the module docstring), from rank zero.

    Args:
        every_n_steps: outer steps between logs (also at the start and the end of fit).
        rows: sequences decoded in ``summary/sequences`` (and shown in the entropy image, up to 64).
        top_k: alternatives per position in ``summary/top_k``.
        positions: positions of the first sequence shown in ``summary/top_k`` (evenly spaced).
        tokens: columns of the mass image: the tokens with the most mass over the whole summary.
        buckets: bins of the token-usage histograms (over frequency rank).
    """

    def __init__(self, every_n_steps: int = 10, rows: int = 8, top_k: int = 5, positions: int = 4,
                 tokens: int = 64, buckets: int = 64) -> None:
        super().__init__(every_n_steps)
        for key, value in (("rows", rows), ("top_k", top_k), ("positions", positions), ("tokens", tokens),
                           ("buckets", buckets)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SummaryMonitor {key} must be an integer >= 1, got {value!r}")
        self.rows, self.top_k, self.positions, self.tokens, self.buckets = rows, top_k, positions, tokens, buckets
        self._warned = False

    def writer(self, trainer: Trainer):
        """The first TensorBoard-like writer among the trainer's loggers, or None (warned once)."""
        for logger in trainer.loggers:
            writer = getattr(logger, "experiment", None)
            if all(hasattr(writer, f) for f in ("add_text", "add_image", "add_histogram_raw")):
                return writer
        if not self._warned:
            self._warned = True
            rank_zero_warn("SummaryMonitor: no TensorBoard logger on the trainer (logger="
                           f"{[type(x).__name__ for x in trainer.loggers] or None}); it logs nothing")
        return None

    @torch.no_grad()
    def run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write everything at the current step (rank zero, with a TensorBoard writer)."""
        step = trainer.global_step
        writer = self.writer(trainer) if trainer.is_global_zero else None
        if writer is None:
            return
        summary, data = pl_module.summary, trainer.datamodule
        probs = summary().detach().float().cpu()  # (n, L, V)
        names = token_names(data, summary.vocab_size)
        writer.add_text("summary/sequences", self.sequences_text(summary.decode().cpu(), data), step)
        writer.add_text("summary/top_k", self.top_k_text(probs, names), step)
        writer.add_image("summary/mass", self.mass_image(probs), step, dataformats="CHW")
        writer.add_image("summary/entropy", self.entropy_image(probs), step, dataformats="CHW")
        counts = data.train_counts().double() if hasattr(data, "train_counts") else None
        rank = self.frequency_rank(counts, summary.vocab_size)
        usage = probs.double().sum((0, 1))  # expected count of every token in the summary
        writer.add_histogram_raw("summary/token_usage", **self.histogram(usage, rank), global_step=step)
        if counts is not None:
            scaled = counts * (summary.size_tokens / counts.sum())
            writer.add_histogram_raw("data/token_usage", **self.histogram(scaled, rank), global_step=step)

    def sequences_text(self, ids: Tensor, data) -> str:
        """The first ``rows`` sequences decoded, one a line, as a Markdown code block (no HTML in tokens)."""
        return "\n".join("    " + line for line in decode_rows(data, ids[: self.rows]))

    def top_k_text(self, probs: Tensor, names: list[str]) -> str:
        """A Markdown table: position of the first sequence, then its top-k tokens with probabilities."""
        length = probs.shape[1]
        picks = sorted({round(i * (length - 1) / max(1, self.positions - 1)) for i in range(self.positions)})
        k = min(self.top_k, probs.shape[-1])
        lines = ["| position | " + " | ".join(f"#{i + 1}" for i in range(k)) + " |", "|---" * (k + 1) + "|"]
        for pos in picks:
            p, idx = probs[0, pos].topk(k)
            cells = [f"{_cell(names[int(i)])} {float(q):.3f}" for q, i in zip(p, idx)]
            lines.append(f"| {pos} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def mass_image(self, probs: Tensor) -> Tensor:
        """``(3, ·, ·)``: positions × the ``tokens`` most-used tokens, mass averaged over sequences, scaled to
        the largest cell."""
        mean = probs.mean(0)  # (L, V)
        top = mean.sum(0).topk(min(self.tokens, mean.shape[1])).indices
        cells = mean[:, top]
        # square-root scale: one peaked position would otherwise leave every other cell dark
        return colour_map((cells / cells.max().clamp_min(1e-12)).sqrt(), scale=_scale(cells.shape))

    def entropy_image(self, probs: Tensor) -> Tensor:
        """``(3, ·, ·)``: the first 64 sequences × positions, entropy / log V."""
        rows = probs[:64]
        entropy = -(rows * torch.log(rows.clamp_min(1e-30))).sum(-1) / math.log(probs.shape[-1])  # (rows, L)
        return colour_map(entropy, scale=_scale(entropy.shape))

    @staticmethod
    def frequency_rank(counts: Tensor | None, vocab_size: int) -> Tensor:
        """``(V,)`` every token's rank by training frequency (0 = most frequent; ties by id); ids without counts."""
        if counts is None:
            return torch.arange(vocab_size, dtype=torch.float64)
        order = torch.argsort(-counts, stable=True)
        rank = torch.empty(vocab_size, dtype=torch.float64)
        rank[order] = torch.arange(vocab_size, dtype=torch.float64)
        return rank

    def histogram(self, weights: Tensor, rank: Tensor) -> dict:
        """``add_histogram_raw`` arguments for weights placed at the tokens' ranks, in ``buckets`` equal bins."""
        vocab = len(rank)
        width = math.ceil(vocab / self.buckets)
        bins = (rank // width).long()
        counts = torch.zeros(-(-vocab // width), dtype=torch.float64).index_add_(0, bins, weights.double())
        limits = [float(min(vocab, (i + 1) * width) - 1) for i in range(len(counts))]
        used = rank[weights > 0]
        return {"min": float(used.min()) if len(used) else 0.0, "max": float(used.max()) if len(used) else 0.0,
                "num": float(weights.sum()), "sum": float((weights * rank).sum()),
                "sum_squares": float((weights * rank**2).sum()), "bucket_limits": limits,
                "bucket_counts": counts.tolist()}


def _scale(shape: tuple[int, int]) -> int:
    """An integer upscale that makes the smaller side of a heatmap at least ~128 pixels (at most 16×)."""
    return max(1, min(16, 128 // max(1, min(shape))))
