"""What a person watches: SummaryMonitor's TensorBoard text, images and histograms, the progress bar, the
model summary's size line; on small interaction data with an item-title CSV that the test writes."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from farzi_lightning.callbacks import DownstreamEvaluation, SummaryMonitor
from farzi_lightning.callbacks.monitor import colour_map
from farzi_lightning.data import InteractionDataModule

from cli_utils import ROOT, SHORT_DOWNSTREAM, run
from small_data import write_interactions

PRETRAIN, DISTIL = ROOT / "configs" / "ml100k_pretrain.yaml", ROOT / "configs" / "ml100k.yaml"
SMALL = ["--data.init_args.file=ratings.csv", "--data.init_args.delimiter=,", "--data.init_args.header=true",
         "--data.init_args.user_col=1", "--data.init_args.item_col=0", "--data.init_args.verify=false",
         "--data.init_args.download=false", "--data.init_args.seq_len=10",
         "--model.init_args.learner.init_args.max_len=10"]
TITLES = ["--data.init_args.titles.file=titles.csv", "--data.init_args.titles.delimiter=,",
          "--data.init_args.titles.header=true", "--data.init_args.titles.encoding=utf-8"]


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    """A tiny pretrain and a 3-step distillation with both callbacks, on generated data."""
    root = tmp_path_factory.mktemp("monitor")
    data = write_interactions(root / "data")
    patch = pytest.MonkeyPatch()
    patch.chdir(root)
    patch.setattr("sys.argv", ["farzi"])
    try:
        run("fit", f"--data.init_args.data_dir={data}", *SMALL, config=PRETRAIN)
        cli = run("fit", f"--data.init_args.data_dir={data}", *SMALL, *TITLES, *SHORT_DOWNSTREAM,
                  "--model.init_args.summary.init_args.seq_len=11", "--trainer.max_steps=3",
                  "--trainer.enable_model_summary=true", config=DISTIL)
    finally:
        patch.undo()
    cli.log_dir_abs = str(root / cli.trainer.log_dir)  # the run folder is relative to the cwd it ran in
    return cli


def test_tensorboard_holds_text_images_and_histograms(small_fit):
    cli = small_fit
    events = EventAccumulator(cli.log_dir_abs, size_guidance={"tensors": 0, "images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert {"summary/sequences/text_summary", "summary/top_k/text_summary"} <= set(tags["tensors"])
    assert {"summary/mass", "summary/entropy"} <= set(tags["images"])
    assert {"summary/token_usage", "data/token_usage"} <= set(tags["histograms"])
    # logged at the start, at the end: steps 0 and 3
    assert [e.step for e in events.Tensors("summary/sequences/text_summary")] == [0, 3]
    text = events.Tensors("summary/sequences/text_summary")[-1].tensor_proto.string_val[0].decode()
    data, summary = cli.datamodule, cli.model.summary
    expected = [data.decode(row) for row in summary.decode()[:8]]
    assert [line.removeprefix("    ") for line in text.split("\n")] == expected
    assert "Film <1>, part 1" in data.names() and " | " in expected[0]  # titles, not ids
    assert data.names()[data.split.item_ids.index("B00029X") + 1] == "B00029X"  # no title: its id
    top_k = events.Tensors("summary/top_k/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert len(top_k.split("\n")) == 2 + 4  # header, rule, four positions
    probs = summary().detach()
    best = probs[0, 0].topk(5)
    assert f"{float(best.values[0]):.3f}" in top_k.split("\n")[2]
    image = events.Images("summary/entropy")[-1]
    assert image.height >= 20 and image.width >= 11  # (sequences × positions), upscaled
    usage = events.Histograms("summary/token_usage")[-1].histogram_value
    assert usage.num == pytest.approx(summary.size_tokens, rel=1e-5)  # every token's mass, once
    real = events.Histograms("data/token_usage")[-1].histogram_value
    assert real.num == pytest.approx(summary.size_tokens, rel=1e-5)  # scaled to the summary's size
    assert sum(real.bucket) == pytest.approx(real.num, rel=1e-6)


def test_progress_bar_and_model_summary(small_fit, capsys):
    bar = small_fit.trainer.progress_bar_metrics
    assert {"outer_loss", "s/step", "drift", "valid_ndcg@10"} <= set(bar)
    downstream = next(c for c in small_fit.trainer.callbacks if isinstance(c, DownstreamEvaluation))
    shown = [h for h in downstream.history if h["step"] < 3][-1]  # the last evaluation before the last step
    assert bar["valid_ndcg@10"] == pytest.approx(shown["metrics"]["downstream/sasrec/summary/ndcg@10"])
    line = small_fit.model.size_line()
    events = sum(len(t) for t in small_fit.datamodule.split.train)
    assert f"= 10 sequences x 11 tokens = 110 tokens, {100 * 110 / events:.2f}% of the {events:,} training" in line
    assert "[z (10, 11, 31)]" in line  # the summary's parameters


def test_colour_map_is_ordered_and_shaped():
    image = colour_map(torch.tensor([[0.0, 0.5, 1.0]]), scale=2)
    assert image.shape == (3, 2, 6)
    brightness = image.sum(0)[0, ::2]
    assert brightness[0] < brightness[1] < brightness[2]


def test_monitor_without_a_logger_warns_once_and_does_nothing(tmp_path):
    data = InteractionDataModule(data_dir=str(write_interactions(tmp_path)), file="ratings.csv", delimiter=",",
                                 header=True, user_col=1, item_col=0, seq_len=10, download=False, verify=False)
    monitor = SummaryMonitor()
    trainer = Trainer(logger=False, callbacks=[monitor], enable_progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert monitor.writer(trainer) is None and monitor.writer(trainer) is None
    assert sum("SummaryMonitor: no TensorBoard logger" in str(w.message) for w in caught) == 1
    assert data.names()[1] == data.split.item_ids[0]  # no titles configured: ids
