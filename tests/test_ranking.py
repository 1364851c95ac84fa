"""``ddtool eval --scores`` (DD-Ranking's LRS and ARS) and ``--accuracy max-over-checkpoints``."""

import json

import pytest
import torch
import torch.nn.functional as F

from ddtoolbox.io import save_tensors
from ddtoolbox.ranking import plan
from ddtoolbox.scores import squash
from ddtoolbox.testing import toy_images

FAST = ("--runs", "2", "--epochs", "2", "--device", "cpu", "--quiet", "--threads", "1")


@pytest.fixture
def teacher(ddtool, toy_dataset, tmp_path):
    """A toy teacher; its full-data accuracy lands in tmp_path/full.json."""
    path = tmp_path / "teacher.pt"
    r = ddtool("train-full", "--dataset", toy_dataset, "--width", "8", "--epochs", "2", "--lr", "0.05",
               "--device", "cpu", "--quiet", "--threads", "1", "--save-model", path,
               "--full-results", tmp_path / "full.json")
    assert r.code == 0, r.err
    return path


def _set(path, toy_dataset, targets=None):
    images, labels = toy_images(2, seed=5)
    record = {"images": images, "labels": labels, "lr": torch.tensor(0.05),
              "meta": {"dataset": toy_dataset, "model": "ConvNet", "model_options": {"width": 8},
                       "matcher": "datm" if targets is not None else "mtt", "ipc": 2}}
    if targets is not None:
        record["targets"] = targets
    save_tensors(path, record)
    return path


def test_plan_pairs_each_set_evaluation_with_a_random_one_under_the_same_labels():
    hard = plan(learned=False)
    assert set(hard) == {"syn_hard", "syn_soft", "random_soft", "random_hard", "syn_hard_noaug", "random_hard_noaug"}
    assert hard["syn_soft"][1] == hard["random_soft"][1] == "kd"       # teacher in the loop for both
    soft = plan(learned=True)
    assert set(soft) == {"syn_hard", "syn_soft", "random_soft", "syn_soft_noaug", "random_soft_noaug"}
    assert soft["syn_soft"][1:3] == ("soft", False)                     # the set's own learned labels
    assert soft["random_soft"][1:3] == ("soft-no-teacher", True)        # the teacher's static labels
    for jobs in (hard, soft):
        for name, (on_set, _, _, dsa) in jobs.items():
            assert on_set == name.startswith("syn") and dsa == (not name.endswith("noaug"))


def test_scores_end_to_end_and_reuse(ddtool, toy_dataset, teacher, tmp_path):
    s = _set(tmp_path / "s.pt", toy_dataset)
    args = ("eval", "--synthetic", s, "--scores", "--teacher", teacher, "--full-results", tmp_path / "full.json",
            *FAST, "--json", tmp_path / "scores.json")
    r = ddtool(*args)
    assert r.code == 0, r.err
    out = json.loads((tmp_path / "scores.json").read_text())
    acc = out["accuracies"]
    assert acc["syn_soft"]["protocol"] == "kd" and acc["random_hard"]["protocol"] == "standard"
    full = json.loads((tmp_path / "full.json").read_text())["results"]
    (full_mean,) = [e["mean"] for e in full.values()]
    # the scores are DD-Ranking's formulas on these very accuracies, round by round, in fractions
    lrs = [squash(0.5 * (acc["syn_soft"]["runs"][i] - acc["random_soft"]["runs"][i])
                  - 0.5 * (full_mean - acc["syn_hard"]["runs"][i])) for i in range(2)]
    ars = [squash(0.5 * (acc["syn_hard"]["runs"][i] - acc["random_hard"]["runs"][i])
                  + 0.5 * (acc["syn_hard_noaug"]["runs"][i] - acc["random_hard_noaug"]["runs"][i])) for i in range(2)]
    assert out["scores"]["LRS"]["rounds"] == pytest.approx(lrs) and out["scores"]["ARS"]["rounds"] == pytest.approx(ars)
    assert out["scores"]["unit"] == "fractions" and out["scores"]["ARS"]["labels"] == "hard"
    assert out["mean"] == acc["syn_hard"]["mean"] and out["accuracy"] == "final"
    assert "Label-Robust Score Mean:" in out["scores"]["dd_ranking_code_would_print"]["LRS"]
    assert "LRS " in r.out and "would print" in r.out and "MAX" not in r.out
    # the same command again evaluates nothing: every accuracy is kept from the parts file
    r2 = ddtool(*args)
    assert r2.code == 0, r2.err
    assert r2.out.count("(kept from") == 6
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == out["scores"]


def test_scores_of_a_set_with_learned_labels(ddtool, toy_dataset, teacher, tmp_path):
    labels = torch.arange(4).repeat_interleave(2)
    s = _set(tmp_path / "s.pt", toy_dataset, F.one_hot(labels, 4).float() * 5)
    r = ddtool("eval", "--synthetic", s, "--scores", "--teacher", teacher, "--full-results", tmp_path / "full.json",
               *FAST, "--json", tmp_path / "scores.json")
    assert r.code == 0, r.err
    out = json.loads((tmp_path / "scores.json").read_text())
    assert out["accuracies"]["syn_soft"]["protocol"] == "soft"
    assert out["accuracies"]["random_soft"]["protocol"] == "soft-no-teacher"
    assert out["scores"]["ARS"]["labels"] == "soft" and out["protocol"] == "soft"


def test_scores_refuse_what_they_cannot_compute(ddtool, toy_dataset, teacher, tmp_path):
    s = _set(tmp_path / "s.pt", toy_dataset)
    cases = [
        ((), "--teacher"),
        (("--teacher", teacher, "--full-results", tmp_path / "empty.json"), "train-full"),
        (("--teacher", teacher, "--protocol", "kd"), "drop --protocol"),
    ]
    for extra, message in cases:
        r = ddtool("eval", "--synthetic", s, "--scores", *FAST, *extra)
        assert r.code == 2 and message in r.err and r.err.count("\n") == 1, (extra, r.err)


def test_max_over_checkpoints_is_marked_and_never_below_the_final_accuracy(ddtool, toy_dataset, tmp_path):
    common = ("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--width", "8", "--runs", "2",
              "--epochs", "60", "--lr", "0.05", "--device", "cpu", "--quiet", "--threads", "1")
    r = ddtool(*common, "--json", tmp_path / "final.json")
    assert r.code == 0 and "MAX" not in r.out
    r = ddtool(*common, "--accuracy", "max-over-checkpoints", "--json", tmp_path / "max.json")
    assert r.code == 0 and "MAX over checkpoints" in r.out
    final, best = (json.loads((tmp_path / f).read_text()) for f in ("final.json", "max.json"))
    assert final["accuracy"] == "final" and best["accuracy"] == "max-over-checkpoints"
    # the same networks (same seeds): testing along the way changes nothing but the reported number
    assert all(b >= f for b, f in zip(best["runs"], final["runs"]))
    # and the final epoch of those networks is reported beside the maximum, equal to the final mode's
    assert final["final"] is None and best["final"]["runs"] == final["runs"]
    assert "the same networks' final epoch: " in r.out
    assert best["test_every"] == 20 and final["test_every"] is None


def test_test_every_sets_the_checkpoints_the_maximum_is_taken_over(ddtool, toy_dataset, tmp_path, monkeypatch):
    """The maximum is over the tests at every N-th epoch and the last, exactly: recorded by wrapping
    the accuracy function, and the reported maximum is the largest of those recorded."""
    import ddtoolbox.evaluate as evaluate

    seen = []

    def recording(net, x, y):
        seen.append(real(net, x, y))
        return seen[-1]

    real = evaluate.accuracy
    monkeypatch.setattr(evaluate, "accuracy", recording)
    common = ("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--width", "8", "--runs", "1",
              "--epochs", "30", "--lr", "0.05", "--device", "cpu", "--quiet", "--threads", "1")
    r = ddtool(*common, "--accuracy", "max-over-checkpoints", "--test-every", "7", "--json", tmp_path / "m.json")
    assert r.code == 0, r.err
    assert len(seen) == 5                                  # epochs 7, 14, 21, 28, then the final (30)
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["runs"] == [max(seen)] and result["final"]["runs"] == [seen[-1]] and result["test_every"] == 7
    assert "every 7 epochs" in r.out
    r = ddtool(*common, "--test-every", "7")
    assert r.code == 2 and "--accuracy max-over-checkpoints" in r.err and r.err.count("\n") == 1, r.err
