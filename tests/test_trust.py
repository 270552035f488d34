"""Files from elsewhere run no code: every kind of file the package reads is crafted here with a harmless payload
(creating a marker folder, or a module / hubconf.py that writes a marker when run), and each test asserts the
refusal names the file and that the marker never appeared."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning
import pytest
import torch

from farzi_lightning import LearnerModule, load_summary
from farzi_lightning.learners import SASRec, build_learner
from farzi_lightning.summaries import TokenSummary
from farzi_lightning.trajectories import TrajectoryBank
from farzi_lightning.trust import UntrustedFile, resolve


@pytest.fixture
def traps(tmp_path, monkeypatch):
    """A folder on sys.path holding a module and a hubconf.py that each leave a marker when run."""
    marker = tmp_path / "ran"
    (tmp_path / "farzi_trap_module.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).mkdir()\nclass Thing:\n    pass\n")
    (tmp_path / "hubconf.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).mkdir()\ndef m(**kw):\n"
                                         "    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, marker
    sys.modules.pop("farzi_trap_module", None)


def payloads(tmp_path: Path, marker: Path) -> dict[str, dict]:
    """Class configs that would run code if built: a function, a foreign module, torch.hub's loader."""
    return {
        "function": {"class_path": "os.makedirs", "init_args": {"name": str(marker)}},
        "foreign module": {"class_path": "farzi_trap_module.Thing", "init_args": {}},
        "torch.hub.load": {"class_path": "torch.hub.load",
                           "init_args": {"repo_or_dir": str(tmp_path), "model": "m", "source": "local",
                                         "trust_repo": True}},
        "attribute chain": {"class_path": "torch.utils.cpp_extension.subprocess.Popen",
                            "init_args": {"args": ["mkdir", str(marker)]}},
        "class of the wrong kind": {"class_path": "subprocess.Popen", "init_args": {"args": ["mkdir", str(marker)]}},
    }


KINDS = ["function", "foreign module", "torch.hub.load", "attribute chain", "class of the wrong kind"]


def test_resolve_allows_only_classes_of_the_expected_kind():
    assert resolve("farzi_lightning.learners.SASRec", SASRec.__mro__[-3], "x") is SASRec  # a Learner
    assert resolve("torch.optim.Adam", torch.optim.Optimizer, "x") is torch.optim.Adam
    for bad in ("torch.hub.load", "os.makedirs", "farzi_lightning.learners.SASRec.forward", "nope", "a b.c"):
        with pytest.raises(UntrustedFile, match="^where names"):
            resolve(bad, torch.optim.Optimizer, "where")
    with pytest.raises(UntrustedFile, match=r"a class of another kind; refused, nothing was run \(a file may name only "
                                            r"a subclass of Optimizer"):
        resolve("farzi_lightning.learners.SASRec", torch.optim.Optimizer, "where")


@pytest.mark.parametrize("kind", KINDS)
def test_a_crafted_summary_file_runs_nothing(traps, kind):
    tmp_path, marker = traps
    summary = TokenSummary(num_sequences=2, seq_len=3, vocab_size=7)
    from farzi_lightning.export import save_summary, summary_payload

    payload = summary_payload(summary, [str(i) for i in range(7)])
    config = payloads(tmp_path, marker)[kind]
    payload["class"], payload["init_args"] = config["class_path"], config["init_args"]
    path = save_summary(tmp_path / "crafted.summary.pt", payload)
    with pytest.raises(UntrustedFile, match=r"crafted\.summary\.pt: class \(class_path\) names"):
        load_summary(path)
    assert not marker.exists() and "farzi_trap_module" not in sys.modules


@pytest.mark.parametrize("kind", KINDS)
def test_a_crafted_bank_manifest_runs_nothing(traps, kind):
    tmp_path, marker = traps
    bank = tmp_path / "bank"
    (bank / "seed-0").mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, bank / "seed-0" / "step-0000000.pt")
    manifest = {"fingerprint": None, "vocab_size": 7, "learner": payloads(tmp_path, marker)[kind],
                "entries": [{"run": "seed-0", "step": 0, "max_step": 1, "file": "seed-0/step-0000000.pt",
                             "metrics": {}}]}
    (bank / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UntrustedFile, match=r"bank/manifest\.json: learner \(class_path\) names"):
        TrajectoryBank(bank).model(0)
    assert not marker.exists() and "farzi_trap_module" not in sys.modules


def test_a_bank_step_file_with_a_pickled_object_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    bank = tmp_path / "bank"
    (bank / "seed-0").mkdir(parents=True)
    torch.save({"w": Payload()}, bank / "seed-0" / "step-0000000.pt")
    learner = {"class_path": "farzi_lightning.learners.SASRec",
               "init_args": {"vocab_size": 7, "d_model": 8, "n_layers": 1, "n_heads": 1, "max_len": 4}}
    manifest = {"fingerprint": None, "vocab_size": 7, "learner": learner,
                "entries": [{"run": "seed-0", "step": 0, "max_step": 1, "file": "seed-0/step-0000000.pt"}]}
    (bank / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"step-0000000\.pt: not a bank checkpoint of tensors"):
        TrajectoryBank(bank).load(0)
    assert not marker.exists()


def crafted_checkpoint(path: Path, learner: dict, **extra) -> Path:
    hparams = {"_class_path": "farzi_lightning.LearnerModule", "learner": learner,
               "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}},
               "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    hparams.update(extra)
    torch.save({"pytorch-lightning_version": lightning.__version__, "state_dict": {}, "hyper_parameters": hparams},
               path)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_a_crafted_checkpoint_runs_nothing_through_the_python_api(traps, kind):
    tmp_path, marker = traps
    path = crafted_checkpoint(tmp_path / "crafted.ckpt", payloads(tmp_path, marker)[kind])
    with pytest.raises(UntrustedFile, match=r"checkpoint_path: .*crafted\.ckpt: learner\.class_path names"):
        LearnerModule.load_from_checkpoint(path)
    assert not marker.exists() and "farzi_trap_module" not in sys.modules


def test_a_checkpoints_instantiator_and_stored_data_config_are_checked(traps):
    tmp_path, marker = traps
    good = {"class_path": "farzi_lightning.learners.SASRec", "init_args": {"vocab_size": 7}}
    path = crafted_checkpoint(tmp_path / "a.ckpt", good, _instantiator="os.makedirs")
    with pytest.raises(UntrustedFile, match="_instantiator names 'os.makedirs'"):
        LearnerModule.load_from_checkpoint(path)
    data = torch.load(path, weights_only=True)
    data["hyper_parameters"]["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    data["datamodule_hyper_parameters"] = {"_class_path": "os.makedirs", "name": str(marker)}
    torch.save(data, path)
    with pytest.raises(UntrustedFile, match="_class_path names 'os.makedirs'"):
        LearnerModule.load_from_checkpoint(path)
    assert not marker.exists()


def test_a_class_this_program_defined_is_trusted(tmp_path):
    """A researcher's own learner (imported by their script or config) loads from their own bank or file."""
    from farzi_lightning.learners import TransformerLM

    class Mine(TransformerLM):
        pass

    Mine.__module__ = __name__
    globals()["Mine"] = Mine
    try:
        built = build_learner({"class_path": f"{__name__}.Mine", "init_args": {"vocab_size": 7, "d_model": 8,
                                                                             "n_layers": 1, "n_heads": 1,
                                                                             "max_len": 4}})
        assert type(built) is Mine
    finally:
        del globals()["Mine"]


@pytest.mark.parametrize("kind", ["torch.hub.load", "attribute chain"])
def test_a_crafted_downstream_learner_in_a_distillation_checkpoint_runs_nothing(traps, kind):
    """The downstream harness's extra learners are plain configs (built only when evaluated): the boundary checks
    them when the checkpoint is read, not when it is too late."""
    from farzi_lightning import FarziLightningModule

    tmp_path, marker = traps
    learner = {"class_path": "farzi_lightning.learners.SASRec", "init_args": {"vocab_size": 7, "max_len": 4}}
    path = crafted_checkpoint(tmp_path / "distil.ckpt", learner, _class_path="farzi_lightning.FarziLightningModule",
                              downstream={"class_path": "farzi_lightning.Downstream",
                                          "init_args": {"learners": [payloads(tmp_path, marker)[kind]]}})
    with pytest.raises(UntrustedFile, match=r"downstream\.init_args\.learners\[0\]\.class_path names"):
        FarziLightningModule.load_from_checkpoint(path)
    assert not marker.exists()


def test_a_damaged_or_foreign_summary_file_is_named(tmp_path):
    from farzi_lightning.export import save_summary, summary_payload

    good = save_summary(tmp_path / "good.summary.pt",
                        summary_payload(TokenSummary(7, num_sequences=2, seq_len=3), [str(i) for i in range(7)]))
    (tmp_path / "cut.summary.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut.summary.pt: not a complete summary.pt \(truncated"):
        load_summary(tmp_path / "cut.summary.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights.pt: not a summary.pt \(found \['w'\]"):
        load_summary(tmp_path / "weights.pt")
    old = torch.load(good, weights_only=True)
    del old["init_args"], old["feed"]
    torch.save(old, tmp_path / "old.summary.pt")
    with pytest.raises(ValueError, match=r"old.summary.pt: a summary.pt without init_args, feed \(written by an older"):
        load_summary(tmp_path / "old.summary.pt")
    with pytest.raises(FileNotFoundError, match=r"a directory; name its summary.pt"):
        load_summary(tmp_path)
    assert load_summary(good).num_sequences == 2


def test_an_inner_batch_larger_than_the_summary_is_said():
    from farzi_lightning import FarziLightningModule
    from farzi_lightning.inner import ReverseAdam

    learner = SASRec(7, d_model=8, n_layers=1, n_heads=1, max_len=4)
    with pytest.warns(UserWarning, match=r"model.init_args.inner_batch_size=8 is larger than the summary "
                                         r"\(model.init_args.summary.init_args.num_sequences=3\): every inner step"):
        FarziLightningModule(learner, lambda v: TokenSummary(v, num_sequences=3, seq_len=4), ReverseAdam(steps=2),
                             inner_batch_size=8)
