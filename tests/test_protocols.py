"""Evaluation protocols: standard, soft, kd (SRe2L/RDED), soft-no-teacher (EDF Table 10)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ddtoolbox.errors import UsageError
from ddtoolbox.evaluate import (DEFAULT_TEMPERATURE, TrainRecipe, Protocol, kd_loss, resolve_protocol,
                                soft_cross_entropy, train_on_set)
from ddtoolbox.models import create_model
from ddtoolbox.testing import toy_images


@pytest.fixture(autouse=True)
def _private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DDTOOL_HOME", str(tmp_path / "home"))   # never read or write the user's store


# ---------------------------------------------------------------------------- the KD loss


def test_kd_loss_equals_hand_computation():
    # teacher logits (0, 2 ln 3) at T = 2 -> probabilities (1/4, 3/4); student logits 0 -> (1/2, 1/2)
    teacher = torch.tensor([[0.0, 2 * math.log(3)]])
    student = torch.zeros(1, 2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl, rel=1e-6)
    # T = 1 on a batch of two: the batch mean
    t2 = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]])
    assert kd_loss(torch.zeros(2, 2), t2, 1.0).item() == pytest.approx(kl / 2, rel=1e-6)
    # equals torch's KLDivLoss(batchmean) * T^2, as SRe2L computes it (but for the T^2)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    ref = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean") * 9
    assert kd_loss(s, t, 3.0).item() == pytest.approx(ref.item(), rel=1e-5)
    assert kd_loss(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_gradient_is_T_times_probability_gap():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 5, generator=g, requires_grad=True)
    t = torch.randn(4, 5, generator=g)
    T = 4.0
    kd_loss(s, t, T).backward()
    expected = T * (F.softmax(s.detach() / T, 1) - F.softmax(t / T, 1)) / 4
    assert torch.allclose(s.grad, expected, atol=1e-6)
    assert DEFAULT_TEMPERATURE == 4.0


# ---------------------------------------------------------------------------- protocol selection


def test_protocol_resolution():
    teacher = torch.nn.Identity()
    assert resolve_protocol("auto", has_learned_labels=True).name == "soft"
    assert resolve_protocol("auto", has_learned_labels=False).name == "standard"
    assert resolve_protocol("kd", False, teacher).teacher is teacher
    assert resolve_protocol("soft-no-teacher", True).teacher is None
    assert resolve_protocol("soft-no-teacher", False, teacher).soft_targets
    cases = [(("soft", False), "learned soft labels"), (("kd", False), "needs --teacher"),
             (("auto", False, teacher), "kd or soft-no-teacher"), (("standard", False, teacher), "does not use a teacher"),
             (("soft-no-teacher", False), "needs soft labels"), (("fancy", False), "unknown protocol 'fancy'")]
    for args, message in cases:
        with pytest.raises(UsageError, match=message):
            resolve_protocol(*args)
    with pytest.raises(UsageError, match="temperature"):
        resolve_protocol("kd", False, teacher, temperature=0)


class _Recorder(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


def test_kd_teacher_sees_the_same_augmented_batch():
    from ddtoolbox.augment import DSA

    torch.manual_seed(0)
    teacher = _Recorder(create_model("ConvNet", 1, 4, 16, width=4)).eval()
    student = _Recorder(create_model("ConvNet", 1, 4, 16, width=4))
    images, labels = toy_images(2, seed=0)
    x, _ = DSA()(images)
    Protocol("kd", teacher).loss(student, x, labels)
    assert len(teacher.seen) == len(student.seen) == 1
    assert torch.equal(teacher.seen[0], student.seen[0])


def test_soft_no_teacher_relabels_once_on_unaugmented_images():
    torch.manual_seed(0)
    teacher = create_model("ConvNet", 1, 4, 16, width=4).eval()
    images, labels = toy_images(3, seed=0)
    proto = Protocol("soft-no-teacher", teacher)
    targets = proto.prepare_targets(images, labels, batch_size=5)
    with torch.no_grad():
        assert torch.allclose(targets, teacher(images), atol=1e-6)
    logits = torch.randn(len(images), 4)
    assert torch.allclose(proto.loss(lambda x: logits, images, targets), soft_cross_entropy(logits, targets))
    # without a teacher it trains on the given (learned) labels, like 'soft'
    learned = torch.randn(len(images), 4)
    assert torch.equal(Protocol("soft-no-teacher").prepare_targets(images, learned), learned)


# ---------------------------------------------------------------------------- training


def _mean_kl(teacher, student, x, T=1.0):
    with torch.no_grad():
        return kd_loss(student(x), teacher(x), T).item()


def test_kd_student_moves_toward_its_teacher(toy_dataset):
    from ddtoolbox.data import load_dataset

    info = load_dataset(toy_dataset, "train").info
    images, labels = toy_images(5, seed=3)
    torch.manual_seed(7)
    teacher = create_model("ConvNet", 1, 4, 16, width=8)
    with torch.no_grad():   # a confident, non-trivial teacher: random net with sharpened logits
        teacher.classifier.weight.mul_(20)
    teacher.eval().requires_grad_(False)
    cfg = TrainRecipe("ConvNet", {"width": 8}, epochs=30, batch_size=20)
    torch.manual_seed(1)
    start = _mean_kl(teacher, create_model("ConvNet", 1, 4, 16, width=8).eval(), images)
    torch.manual_seed(1)   # the same initialisation as `start`
    kd_student = train_on_set(cfg, images, labels, 0.05, info, torch.device("cpu"), protocol=Protocol("kd", teacher))
    torch.manual_seed(1)
    ce_student = train_on_set(cfg, images, labels, 0.05, info, torch.device("cpu"), protocol=Protocol("standard"))
    after = _mean_kl(teacher, kd_student.eval(), images)
    assert after < 0.3 * start, (start, after)
    assert after < _mean_kl(teacher, ce_student.eval(), images)   # it learned the teacher, not just the labels


# ---------------------------------------------------------------------------- the command line


def _teacher_file(tmp_path, toy_dataset, ddtool):
    path = tmp_path / "teacher.pt"
    r = ddtool("train-full", "--dataset", toy_dataset, "--width", "8", "--epochs", "3", "--lr", "0.05",
               "--device", "cpu", "--quiet", "--save-model", path, "--full-results", tmp_path / "full.json")
    assert r.code == 0, r.err
    return path


def test_cli_protocols_and_several_models(ddtool, toy_dataset, tmp_path):
    teacher = _teacher_file(tmp_path, toy_dataset, ddtool)
    common = ("--random-ipc", "2", "--dataset", toy_dataset, "--runs", "1", "--epochs", "3", "--lr", "0.05",
              "--device", "cpu", "--quiet", "--width", "4")
    for protocol in ("kd", "soft-no-teacher"):
        r = ddtool("eval", *common, "--protocol", protocol, "--teacher", teacher, "--model", "convnet", "AlexNet",
                   "resnet18", "--json", tmp_path / f"{protocol}.json")
        assert r.code == 0, r.err
        assert r.out.count(f"({protocol} protocol)") == 3
        out = json.loads((tmp_path / f"{protocol}.json").read_text())
        assert [e["model"] for e in out["results"]] == ["ConvNet", "AlexNet", "ResNet18"]
        assert out["protocol"] == protocol and out["teacher"] == str(teacher)
        assert out["model"] == "ConvNet" and out["mean"] == out["results"][0]["mean"]
        assert out["runs"] == out["results"][0]["runs"] and out["std"] == out["results"][0]["std"]
        assert out["results"][1]["model_options"] == {"width": 4}   # no ConvNet options for AlexNet
        assert out["temperature"] == (4.0 if protocol == "kd" else None)


def test_cli_protocol_errors_are_one_line(ddtool, toy_dataset, tmp_path):
    common = ("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--runs", "1", "--epochs", "1", "--device", "cpu")
    cases = [
        (("--protocol", "soft"), "learned soft labels"),
        (("--protocol", "kd"), "needs --teacher"),
        (("--protocol", "kd", "--teacher", tmp_path / "none.pt"), "does not exist"),
        (("--temperature", "2"), "kd only"),
        (("--model", "VGG11", "--depth", "3"), "ConvNet family only"),
        (("--model", "ConvNet", "NoSuchNet"), "unknown model 'NoSuchNet'"),
        (("--protocol", "bogus"), "invalid choice"),
    ]
    for extra, message in cases:
        r = ddtool(*common, *extra)
        assert r.code == 2 and message in r.err and r.err.count("\n") == 1, (extra, r.err)


def test_teacher_for_another_dataset_is_refused(ddtool, toy_dataset, tmp_path):
    from ddtoolbox.data import DatasetInfo
    from ddtoolbox.io import save_tensors
    from ddtoolbox.teacher import save_model

    other = DatasetInfo("other-set", 1, (16, 16), 4, (0.3,), (0.3,), tuple("abcd"))
    save_model(tmp_path / "other.pt", create_model("ConvNet", 1, 4, 16, width=4), model="ConvNet",
               model_options={"width": 4}, info=other)
    save_tensors(tmp_path / "notamodel.pt", {"images": torch.zeros(1)})
    common = ("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--runs", "1", "--epochs", "1",
              "--device", "cpu", "--protocol", "kd", "--teacher")
    r = ddtool(*common, tmp_path / "other.pt")
    assert r.code == 2 and "trained on 'other-set', not 'toy-quadrants'" in r.err
    r = ddtool(*common, tmp_path / "notamodel.pt")
    assert r.code == 2 and "not a ddtoolbox network file" in r.err


def _synthetic(path, toy_dataset, learned_targets):
    from ddtoolbox.io import save_tensors

    images, labels = toy_images(5, seed=0)
    record = {"images": images, "labels": labels, "lr": torch.tensor(0.05),
              "meta": {"dataset": toy_dataset, "model": "ConvNet", "model_options": {"width": 8},
                       "matcher": "datm", "ipc": 5}}
    if learned_targets is not None:
        record["targets"] = learned_targets
    save_tensors(path, record)
    return labels


def test_soft_protocol_trains_on_the_learned_labels_standard_on_the_hard_ones(ddtool, toy_dataset, tmp_path):
    labels = torch.arange(4).repeat_interleave(5)
    shifted = F.one_hot((labels + 1) % 4, 4).float() * 10   # learned labels that contradict the hard ones
    _synthetic(tmp_path / "s.pt", toy_dataset, shifted)
    means = {}
    for protocol in ("auto", "soft", "standard", "soft-no-teacher"):
        r = ddtool("eval", "--synthetic", tmp_path / "s.pt", "--protocol", protocol, "--runs", "1", "--epochs", "30",
                   "--device", "cpu", "--quiet", "--no-dsa", "--json", tmp_path / f"{protocol}.json")
        assert r.code == 0, r.err
        out = json.loads((tmp_path / f"{protocol}.json").read_text())
        assert out["model_options"]["width"] == 8   # the set's own model options
        means[protocol] = out["mean"]
    assert means["standard"] > 0.7 and means["soft"] < 0.3, means
    assert means["auto"] == means["soft"] == means["soft-no-teacher"]

    _synthetic(tmp_path / "hard.pt", toy_dataset, None)
    r = ddtool("eval", "--synthetic", tmp_path / "hard.pt", "--protocol", "soft", "--device", "cpu")
    assert r.code == 2 and "learned soft labels" in r.err
