"""The memory-saving unroll: the full unroll's gradients exactly, with memory flat in syn_steps."""

import pytest
import torch
import torch.nn.functional as F

import ddtoolbox.unroll as unroll_mod
from ddtoolbox.augment import DSA
from ddtoolbox.evaluate import soft_cross_entropy
from ddtoolbox.models import FlatModel, create_model
from ddtoolbox.speed import cpu_peak_bytes
from ddtoolbox.testing import TOY_DISTILL
from ddtoolbox.unroll import choose_unroll, unroll, unroll_checkpointed


def _problem(dtype=torch.float64, size=8, width=4):
    torch.manual_seed(0)
    student = FlatModel(create_model("ConvNet", 1, 3, (size, size), width=width, depth=2).to(dtype))
    theta_0 = student.flatten()
    theta_star = theta_0 + 0.1 * torch.randn_like(theta_0)
    images = torch.randn(6, 1, size, size, dtype=dtype, requires_grad=True)
    soft = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    lr = torch.tensor(0.05, dtype=dtype, requires_grad=True)
    return student, theta_0, theta_star, images, soft, lr


def _grads(fn, student, theta_0, theta_star, images, soft, lr, trace=None, steps=5):
    theta_n, trace = fn(student, theta_0, images, soft, lr, steps, 4, soft_cross_entropy, DSA(), trace=trace)
    loss = ((theta_n - theta_star) ** 2).sum() / ((theta_0 - theta_star) ** 2).sum()
    grads = torch.autograd.grad(loss, (images, soft, lr))
    return theta_n.detach(), grads, trace


def test_checkpointed_gradients_equal_the_full_unroll():
    problem = _problem()
    theta_c, grads_c, trace = _grads(unroll_checkpointed, *problem)
    theta_f, grads_f, _ = _grads(unroll, *problem, trace=trace)
    assert torch.allclose(theta_c, theta_f, rtol=0, atol=1e-12)
    for name, gc, gf in zip(("images", "soft labels", "lr"), grads_c, grads_f):
        assert gf.abs().sum() > 0, name
        rel = ((gc - gf).norm() / gf.norm()).item()
        assert rel < 1e-10, f"{name}: relative error {rel}"


def test_checkpointed_hard_labels_and_frozen_lr():
    """Inputs that need no gradient get none, and the others are still exact."""
    student, theta_0, theta_star, images, _, lr = _problem()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    frozen = lr.detach()
    out = {}
    trace = None
    for fn in (unroll_checkpointed, unroll):
        theta_n, trace = fn(student, theta_0, images, labels, frozen, 3, 6, F.cross_entropy, DSA(), trace=trace)
        out[fn] = torch.autograd.grad(((theta_n - theta_star) ** 2).sum(), images)[0]
    assert torch.allclose(out[unroll_checkpointed], out[unroll], rtol=1e-10, atol=0)


def test_checkpointed_memory_does_not_grow_with_steps():
    student, theta_0, theta_star, images, soft, lr = _problem(torch.float32, size=16, width=16)

    def peak(fn, steps):
        def run():
            theta_n, _ = fn(student, theta_0, images, soft, lr, steps, 6, soft_cross_entropy, DSA())
            ((theta_n - theta_star) ** 2).sum().backward()
        return cpu_peak_bytes(run)

    full = [peak(unroll, s) for s in (2, 16)]
    ckpt = [peak(unroll_checkpointed, s) for s in (2, 16)]
    assert full[1] > 4 * full[0], full  # the full unroll's graph grows with the steps ...
    params = theta_0.numel() * 4
    assert ckpt[1] - ckpt[0] < 14 * params + 0.25 * ckpt[0], ckpt  # ... the checkpointed one holds only thetas
    assert ckpt[1] < full[1] / 3


def test_auto_picks_checkpointed_only_when_full_does_not_fit(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(unroll_mod, "free_memory_bytes", lambda device: 10 * 2**30)
    assert choose_unroll("auto", 20, lambda: 2**20, cpu)[0] is unroll
    assert choose_unroll("auto", 20, lambda: 2**30, cpu)[0] is unroll_checkpointed
    assert choose_unroll("full", 20, lambda: 2**40, cpu)[0] is unroll
    assert choose_unroll("checkpointed", 20, lambda: 1, cpu)[0] is unroll_checkpointed


def test_distill_modes_agree(ddtool, toy_dataset, toy_buffer, tmp_path):
    images = {}
    for mode in ("full", "checkpointed"):
        r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / mode,
                   "--iterations", "2", *TOY_DISTILL, "--unroll", mode)
        assert r.code == 0, r.err
        record = torch.load(tmp_path / mode / "synthetic.pt", weights_only=True)
        assert record["meta"]["unroll"] == mode
        images[mode] = record["images"]
    assert torch.allclose(images["full"], images["checkpointed"], rtol=1e-4, atol=1e-5)


def test_hardware_peak_lookup(monkeypatch):
    from ddtoolbox.speed import hardware_peak_tflops

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert hardware_peak_tflops(cuda) == (51.2, "NVIDIA H100 PCIe float32, data sheet")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert hardware_peak_tflops(cuda, tf32=True)[0] == 494.7
    assert hardware_peak_tflops(cuda, tf32=False)[0] == 66.9
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert hardware_peak_tflops(cuda) is None
    cpu = hardware_peak_tflops(torch.device("cpu"))
    if cpu is not None:  # Linux: cores x clock x lanes x 4, scaled by the threads torch uses
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = hardware_peak_tflops(torch.device("cpu"))[0]
        finally:
            torch.set_num_threads(before)
        assert cpu[0] == pytest.approx(one * before)


def test_threads_option_applies_to_the_command_and_is_restored(ddtool, tmp_path):
    import json

    before = torch.get_num_threads()
    results = tmp_path / "speed.jsonl"
    r = ddtool("bench-speed", "--threads", str(before + 1), "--ipc", "1", "--num-classes", "2", "--size", "8",
               "--width", "2", "--syn-steps", "1", "--iterations", "1", "--modes", "full", "--no-dsa",
               "--device", "cpu", "--results", results, "--quiet")
    assert r.code == 0, r.err
    row = json.loads(results.read_text())
    assert row["device"] == f"cpu ({before + 1} threads)"
    assert len(row["load_average"]) == 2 and all(x >= 0 for x in row["load_average"])   # recorded with the time
    assert torch.get_num_threads() == before
    assert ddtool("bench-speed", "--threads", "0").code == 2


def test_auto_measuring_the_graph_does_not_change_the_run(toy_buffer, tmp_path):
    """--unroll auto measures one step's graph; the measurement draws nothing the run would have drawn."""
    from ddtoolbox import distill
    from ddtoolbox.testing import toy_config

    runs = [distill(toy_config(toy_buffer, tmp_path / mode, unroll=mode, iterations=2)) for mode in ("auto", "full")]
    assert runs[0].unroll_mode.startswith("full (auto")
    assert torch.equal(runs[0].images, runs[1].images)
    assert [h["expert"] for h in runs[0].history] == [h["expert"] for h in runs[1].history]
