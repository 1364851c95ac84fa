"""Coreset selection: each rule on a case worked out by hand, and ``ddtool select`` end to end."""

import json
import math

import pytest
import torch

from ddtoolbox.coreset import forgetting_counts, herding, kcenter_greedy, most_forgotten
from ddtoolbox.evaluate import load_synthetic
from ddtoolbox.models import create_model
from ddtoolbox.selection import choose, forgetting_history, penultimate_features
from ddtoolbox.testing import TOY_CLASSES

# a = (0, 0), b = (2, 0), c = (0, 2), d = (10, 10); class mean (3, 3)
POINTS = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [10.0, 10.0]])


def test_herding_matches_the_running_mean_by_hand():
    # t=1: squared distances to (3, 3): a 18, b 10, c 10, d 98 -> b (tie with c: lower index)
    # t=2: (b + x) / 2 vs (3, 3): a -> (1, 0) 13, c -> (1, 1) 8, d -> (6, 5) 13 -> c
    # t=3: (b + c + x) / 3: a -> (2/3, 2/3) 10.9, d -> (4, 4) 2 -> d
    assert herding(POINTS, 3) == [1, 2, 3]
    # not a ranking by distance to the mean, which would give b, c, a
    assert herding(POINTS, 4) == [1, 2, 3, 0]


def test_herding_reaches_the_mean_when_it_can():
    # two symmetric pairs: after two picks the chosen mean is exactly the class mean
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    first, second = herding(x, 2)
    assert x[[first, second]].mean(0).tolist() == [0.0, 0.0]


def test_kcenter_greedy_by_hand():
    # start: closest to the mean, b (10; tie with c); farthest from b: d (164 vs a 4, c 8);
    # then min distance to {b, d}: a 4, c 8 -> c
    assert kcenter_greedy(POINTS, 3) == [1, 3, 2]
    # from a: d is farthest (200); then b and c both sit 4 from a: the lower index, b
    assert kcenter_greedy(POINTS, 3, first=0) == [0, 3, 1]


def test_kcenter_covers_clusters_that_herding_ignores():
    # three tight clusters of unequal size: k-center takes one from each, herding from the big one
    big = torch.randn(20, 2, generator=torch.Generator().manual_seed(0)) * 0.01
    x = torch.cat([big, torch.tensor([[5.0, 0.0], [5.01, 0.0], [0.0, 5.0]])])
    picks = kcenter_greedy(x, 3)
    assert picks[0] < 20 and sorted(picks[1:]) in ([20, 22], [21, 22])
    assert min(herding(x, 1)) < 20


def test_forgetting_counts_and_ties_from_a_scripted_history():
    correct = torch.tensor([
        # ex0  ex1  ex2  ex3
        [1, 1, 0, 1],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 0, 1],
        [1, 1, 0, 0],
    ], dtype=torch.bool)
    counts = forgetting_counts(correct)
    assert counts[:2].tolist() == [2.0, 0.0] and counts[3] == 2 and math.isinf(counts[2])
    # never learned first (forgotten "infinitely" often), then 2 and 2: the tie goes to the lower index
    assert most_forgotten(counts, 3) == [2, 0, 3]
    assert most_forgotten(counts, 4) == [2, 0, 3, 1]


def test_choose_groups_by_class_and_picks_within_each():
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    features = torch.tensor([[0.0], [5.0], [1.0], [6.0], [2.0], [7.0]])
    # class 0: rows 1, 3, 5 (5, 6, 7): herding picks 6 (row 3); class 1: rows 0, 2, 4 (0, 1, 2): row 2
    assert choose("herding", 1, labels, 2, features=features).tolist() == [3, 2]
    g = lambda: torch.Generator().manual_seed(3)   # noqa: E731
    drawn = choose("random", 2, labels, 2, generator=g())
    assert drawn.tolist() == choose("random", 2, labels, 2, generator=g()).tolist()
    assert labels[drawn].tolist() == [0, 0, 1, 1] and len(set(drawn.tolist())) == 4


def test_penultimate_features_are_the_classifier_input():
    net = create_model("ConvNet", 1, 4, (16, 16), width=8)
    x = torch.randn(7, 1, 16, 16)
    feats = penultimate_features(net, x, torch.device("cpu"), batch_size=3)
    with torch.no_grad():
        expected = net.features(x).flatten(1)
    assert torch.allclose(feats, expected) and feats.shape == (7, 8 * 2 * 2)


def test_forgetting_history_records_every_presentation():
    torch.manual_seed(0)
    x = torch.randn(10, 1, 16, 16)
    y = torch.arange(10) % 4
    net = create_model("ConvNet", 1, 4, (16, 16), width=8)
    h = forgetting_history(net, x, y, epochs=30, lr=0.05, batch_size=4, device=torch.device("cpu"),
                           generator=torch.Generator().manual_seed(0))
    assert h.shape == (30, 10) and h.dtype == torch.bool
    assert h[-1].float().mean() > h[0].float().mean()      # it learns the ten examples


# ---------------------------------------------------------------------------- the command


def test_select_writes_a_set_eval_and_report_take(ddtool, toy_dataset, toy_buffer, tmp_path):
    out = tmp_path / "herding"
    r = ddtool("select", "--method", "herding", "--dataset", toy_dataset, "--ipc", "2", "--buffer", toy_buffer,
               "--out", out, "--device", "cpu", "--threads", "1")
    assert r.code == 0, r.err
    record = load_synthetic(out / "synthetic.pt")
    meta = record["meta"]
    assert meta["matcher"] == "coreset-herding" and meta["ipc"] == 2 and meta["model_options"]["width"] == 8
    assert record["labels"].tolist() == [c for c in range(TOY_CLASSES) for _ in range(2)]
    # the images are the training images the metadata names
    from ddtoolbox.data import load_dataset

    train = load_dataset(toy_dataset, "train")
    assert torch.equal(record["images"], train.images[meta["coreset"]["indices"]])
    assert train.labels[meta["coreset"]["indices"]].tolist() == record["labels"].tolist()
    r = ddtool("eval", "--synthetic", out / "synthetic.pt", "--runs", "1", "--epochs", "2", "--device", "cpu",
               "--quiet", "--threads", "1", "--json", out / "eval.json")
    assert r.code == 0, r.err
    assert "coreset-herding, IPC 2" in r.out
    r = ddtool("report", out)
    assert r.code == 0, r.err
    assert (out / "report.html").is_file()
    # a second selection into the same folder is refused, with --overwrite replaced
    r = ddtool("select", "--method", "random", "--dataset", toy_dataset, "--out", out, "--device", "cpu")
    assert r.code == 2 and "--overwrite" in r.err
    r = ddtool("select", "--method", "random", "--dataset", toy_dataset, "--out", out, "--device", "cpu",
               "--overwrite", "--width", "8")
    assert r.code == 0, r.err
    assert load_synthetic(out / "synthetic.pt")["meta"]["matcher"] == "coreset-random"


@pytest.mark.parametrize("method", ["kcenter", "forgetting"])
def test_select_other_methods_run(ddtool, toy_dataset, toy_buffer, tmp_path, method):
    extra = ["--buffer", toy_buffer] if method == "kcenter" else ["--width", "8", "--epochs", "2", "--batch-size", "64"]
    r = ddtool("select", "--method", method, "--dataset", toy_dataset, "--ipc", "3", "--out", tmp_path,
               "--device", "cpu", "--threads", "1", *extra)
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "metrics.json").read_text())["meta"]
    assert meta["matcher"] == f"coreset-{method}" and len(meta["coreset"]["indices"]) == 3 * TOY_CLASSES
    if method == "forgetting":
        assert len(meta["coreset"]["forgetting_events"]) == 3 * TOY_CLASSES


def test_select_refuses_feature_methods_without_a_network(ddtool, toy_dataset, tmp_path):
    r = ddtool("select", "--method", "kcenter", "--dataset", toy_dataset, "--out", tmp_path)
    assert r.code == 2 and "--buffer" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "synthetic.pt").exists()
