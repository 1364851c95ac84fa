"""No silent wrong results: a diverged network is never published or stored, and a damaged file is
reported as damaged (issue 23)."""

import json

import pytest
import torch

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.errors import Diverged
from ddtoolbox.finite import first_non_finite
from ddtoolbox.io import save_tensors
from ddtoolbox.losses import accuracy
from ddtoolbox.testing import TOY_DISTILL, TOY_NAME

TINY = ("--width", "8", "--device", "cpu", "--quiet", "--threads", "1")


def one_line(r, code, *needles):
    assert r.code == code, (r.code, r.out, r.err)
    lines = [line for line in r.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_first_non_finite_names_where():
    assert first_non_finite({"a": torch.zeros(2), "b": [torch.ones(1), torch.tensor([1.0, float("nan")])]}) == "['b'][1]"
    assert first_non_finite({"ints": torch.arange(3), "x": 1.5, "label": "nan"}) is None
    assert first_non_finite(torch.tensor([float("inf")])) == ""


def test_save_tensors_refuses_non_finite_and_writes_nothing(tmp_path):
    with pytest.raises(Diverged, match=r"\['state'\]\['w'\]"):
        save_tensors(tmp_path / "x.pt", {"state": {"w": torch.tensor([0.0, float("inf")])}})
    assert list(tmp_path.iterdir()) == []


def test_accuracy_of_a_network_with_overflowing_outputs_is_nan():
    net = torch.nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.fill_(3e38)
    x, y = torch.full((4, 2), 10.0), torch.zeros(4, dtype=torch.long)
    assert torch.isinf(net(x)).any()
    assert accuracy(net, x, y) != accuracy(net, x, y)       # NaN, not the argmax's chance accuracy
    with torch.no_grad():
        net.weight.fill_(0.0)
        net.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    assert accuracy(net, x, y) == 1.0


@pytest.mark.parametrize("lr", ["1e30", "inf"])
def test_buffer_with_a_diverging_lr_publishes_nothing(toy_dataset, tmp_path, lr):
    r = run_cli("buffer", "--dataset", toy_dataset, "--out", tmp_path, "--num-experts", "1", "--epochs", "1",
                "--batch-size", "32", "--lr", lr, *TINY)
    one_line(r, 3, "expert 0", "diverged", "lower --lr")
    assert not list(tmp_path.glob("expert_*")) and not (tmp_path / "buffer.json").exists()


def test_train_full_with_a_diverging_lr_stores_nothing(toy_dataset, tmp_path):
    store = tmp_path / "full.json"
    r = run_cli("train-full", "--dataset", toy_dataset, "--epochs", "1", "--lr", "1e30", "--full-results", store,
                "--json", tmp_path / "r.json", *TINY)
    one_line(r, 3, "full-data network 1 diverged", "lower --lr")
    assert not store.exists() and not (tmp_path / "r.json").exists()


def test_eval_of_a_diverging_network_writes_no_json(toy_dataset, tmp_path):
    r = run_cli("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--runs", "2", "--epochs", "2", "--lr", "1e30",
                "--json", tmp_path / "e.json", *TINY)
    one_line(r, 3, "evaluation network 1 diverged", "lower --lr")
    assert not (tmp_path / "e.json").exists()


def distill_argv(toy_buffer, out, *extra):
    return ("distill", "--dataset", TOY_NAME, "--buffer", toy_buffer, "--out", out, "--threads", "1", *TOY_DISTILL,
            *extra)


def test_divergence_at_the_first_iteration_keeps_the_starting_state(toy_dataset, toy_buffer, tmp_path):
    """The README's promise, also before the first periodic checkpoint: exit 3 keeps a good state."""
    r = run_cli(*distill_argv(toy_buffer, tmp_path / "d", "--iterations", "3", "--lr-img", "1e29"))
    one_line(r, 3, "diverged at iteration 1", f"the last good state is {tmp_path / 'd' / 'checkpoint.pt'}")
    ckpt = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == -1 and torch.isfinite(ckpt["images"]).all() and ckpt["history"] == []
    assert not (tmp_path / "d" / "synthetic.pt").exists()


def test_a_run_resumed_from_its_starting_state_is_the_uninterrupted_run(toy_dataset, toy_buffer, tmp_path,
                                                                       monkeypatch):
    import ddtoolbox.loop as loop

    assert run_cli(*distill_argv(toy_buffer, tmp_path / "ref", "--iterations", "2")).code == 0
    real = loop.Loop.step

    def stop_at_once(self, it):
        raise KeyboardInterrupt    # killed before its first iteration finished

    monkeypatch.setattr(loop.Loop, "step", stop_at_once)
    assert run_cli(*distill_argv(toy_buffer, tmp_path / "run", "--iterations", "2")).code == 130
    monkeypatch.setattr(loop.Loop, "step", real)
    r = run_cli("distill", "--resume", "--out", tmp_path / "run", "--quiet")
    assert r.code == 0, r.err
    one, two = (torch.load(tmp_path / d / "synthetic.pt", weights_only=True) for d in ("ref", "run"))
    assert torch.equal(one["images"], two["images"]) and torch.equal(one["lr"], two["lr"])


def test_zero_iterations_say_the_images_are_the_initial_ones(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "0"))
    assert r.code == 0, r.err
    assert "initial images, unmatched" in r.out and "nan" not in r.out.lower()


def test_a_garbled_expert_is_reported_as_corrupt_not_as_divergence(toy_dataset, toy_buffer, tmp_path):
    import shutil

    buf = tmp_path / "buf"
    shutil.copytree(toy_buffer, buf)
    path = buf / "expert_000.pt"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64            # inside the tensor's bytes: it still loads
    path.write_bytes(bytes(data))
    r = run_cli(*distill_argv(str(buf), tmp_path / "out", "--iterations", "2"))
    one_line(r, 2, f"expert trajectory {path} is corrupt")
    meta = json.loads((buf / "buffer.json").read_text())
    for entry in meta["experts"]:
        del entry["sha256"]                               # a buffer written before checksums were recorded
    (buf / "buffer.json").write_text(json.dumps(meta))
    r = run_cli(*distill_argv(str(buf), tmp_path / "out2", "--iterations", "2"))
    one_line(r, 2, f"expert trajectory {path} is corrupt", "NaN or infinite")


# ---------------------------------------------------------------------------- a plugin's options need the plugin


@pytest.mark.parametrize("extra, flag, fix", [
    (("--cpd-alpha", "0.5"), "--cpd-alpha", "add --plugin cpd"),
    (("--dae-beta", "3"), "--dae-beta", "add --plugin dae"),
    (("--cpd-alpha", "0"), "--cpd-alpha", "add --plugin cpd"),           # given, though equal to its default
    (("--threshold", "0.5"), "--threshold", "add --matcher datm"),     # a matcher's option
])
def test_a_plugin_option_without_its_plugin_is_refused(toy_dataset, toy_buffer, tmp_path, extra, flag, fix):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "1", *extra))
    one_line(r, 2, f"{flag} is an option of plugin", fix, "--plugin no:")
    assert not (tmp_path / "synthetic.pt").exists()


def test_blocking_the_plugin_says_its_options_are_meant_to_be_ignored(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "1", "--cpd-alpha", "0.5", "-p", "no:cpd"))
    assert r.code == 0, r.err
    assert "ignoring --cpd-alpha" in r.err


def test_a_trainer_option_without_its_trainer_names_the_trainer(toy_dataset, tmp_path):
    r = run_cli("buffer", "--dataset", toy_dataset, "--out", tmp_path, "--num-experts", "1", "--epochs", "1",
                "--rho", "0.1", *TINY)
    one_line(r, 2, "--rho is an option of plugin 'ftd'", "add --trainer ftd")
    assert not (tmp_path / "buffer.json").exists()


def test_the_python_api_refuses_an_inactive_plugins_option(toy_buffer, tmp_path):
    from ddtoolbox import distill
    from ddtoolbox.errors import UsageError
    from ddtoolbox.testing import toy_config

    with pytest.raises(UsageError, match="--cpd-alpha is an option of plugin 'cpd'"):
        distill(toy_config(toy_buffer, tmp_path, iterations=1), options={"cpd_alpha": 0.25})


def test_resume_refuses_an_option_of_a_plugin_the_run_lacks(toy_dataset, toy_buffer, tmp_path, monkeypatch):
    import ddtoolbox.loop as loop

    monkeypatch.setattr(loop.Loop, "step", lambda self, it: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "2")).code == 130
    r = run_cli("distill", "--resume", "--out", tmp_path, "--cpd-alpha", "0.5")
    one_line(r, 2, "--cpd-alpha is not an option of the run")


def test_a_bench_spec_with_a_plugin_option_but_not_the_plugin_fails_its_check(toy_dataset, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[bench]\ndatasets = ["{toy_dataset}"]\nipcs = [1]\n[buffer]\nnum_experts = 1\ntrain_epochs = 2\n'
                    f'width = 8\n[distill]\niterations = 1\n[methods.MTT]\nmatcher = "mtt"\n'
                    f'options = {{cpd_alpha = 0.25}}\n')
    r = run_cli("bench", spec, "--dry-run", "--device", "cpu")
    one_line(r, 2, "--cpd-alpha is an option of plugin 'cpd'", "add --plugin cpd")


def test_a_preset_with_a_plugin_option_but_not_the_plugin_is_refused(toy_dataset, toy_buffer, tmp_path, monkeypatch):
    import ddtoolbox.cli as cli
    from ddtoolbox.plugins import Registered

    real = cli.manager

    def with_preset(blocked=()):
        pm = real(blocked)
        pm.presets["bad"] = Registered("bad", {"distill": {"cpd_alpha": 0.25}}, "test", "cpd_alpha without cpd")
        return pm

    monkeypatch.setattr(cli, "manager", with_preset)
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "1", "--preset", "bad"))
    one_line(r, 2, "--cpd-alpha is an option of plugin 'cpd'", "add --plugin cpd")
