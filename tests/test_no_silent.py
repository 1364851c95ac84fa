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
    nested = {"a": torch.zeros(2), "b": [torch.ones(1), torch.tensor([1.0, float("nan")])]}
    assert first_non_finite(nested) == "['b'][1]"
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


@pytest.mark.parametrize("lr", ["1e30", "3e38"])
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
    one_line(r, 3, "diverged at iteration 0 (counted from 0", f"the last good state is {tmp_path / 'd' / 'checkpoint.pt'}")
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
                    f'width = 8\n[distill]\niterations = 1\nmax_start_epoch = 1\nexpert_epochs = 1\n'
                    f'[methods.MTT]\nmatcher = "mtt"\n'
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


# ---------------------------------------------------------------------------- input checks


def test_a_buffer_whose_recorded_normalisation_is_not_the_datas_is_refused(toy_dataset, toy_buffer, tmp_path):
    import shutil

    for bad in (float("nan"), 0.5):
        buf = tmp_path / f"buf-{bad}"
        shutil.copytree(toy_buffer, buf)
        meta = json.loads((buf / "buffer.json").read_text())
        meta["mean"] = [bad]
        (buf / "buffer.json").write_text(json.dumps(meta))
        r = run_cli(*distill_argv(str(buf), tmp_path / f"out-{bad}", "--iterations", "1"))
        one_line(r, 2, "records the normalisation mean", "toy-quadrants's is [0.3]")


def test_a_synthetic_set_whose_recorded_normalisation_is_not_the_datas_is_refused(toy_dataset, toy_buffer, tmp_path):
    from ddtoolbox.outputs import publish

    assert run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "0")).code == 0
    record = torch.load(tmp_path / "synthetic.pt", weights_only=True)
    record["meta"]["std"] = [0.6]
    publish(tmp_path / "edited", {"synthetic.pt": lambda p: save_tensors(p, record)})
    r = run_cli("eval", "--synthetic", tmp_path / "edited" / "synthetic.pt", "--runs", "1", "--epochs", "1", *TINY)
    one_line(r, 2, "records the normalisation std [0.6]")


@pytest.mark.parametrize("threshold", [5.0, 0.0, -1.0, float("nan")])
def test_a_complexity_threshold_outside_zero_one_is_refused(threshold):
    from ddtoolbox.compdd.complexity import check_threshold, score_classes
    from ddtoolbox.errors import UsageError

    with pytest.raises(UsageError, match=r"--threshold must be in \(0, 1\]"):
        score_classes(None, iter(()), torch.zeros(1), None, 0, "cpu", threshold=threshold, progress=False)
    assert check_threshold(1) == 1.0 and check_threshold(0.5) == 0.5


@pytest.mark.parametrize("argv, name", [
    (("buffer", "--dataset", TOY_NAME, "--out", ""), "--out"),
    (("distill", "--out", " "), "--out"),
    (("eval", "--random-ipc", "1", "--dataset", TOY_NAME, "--json", ""), "--json"),
    (("bench", ""), "SPEC"),
    (("bench", "spec.toml", "--devices", ""), "--devices"),
    (("presets", "--show", ""), "--show"),
    (("distill", "--out", "x", "--plugin", ""), "--plugin"),
    (("eval", "--random-ipc", "1", "--dataset", TOY_NAME, "--data-root", ""), "--data-root"),
])
def test_an_empty_value_is_refused_not_taken_for_a_default(tmp_path, monkeypatch, argv, name):
    monkeypatch.chdir(tmp_path)
    one_line(run_cli(*argv), 2, f"{name} is empty")
    assert list(tmp_path.iterdir()) == []


def test_bench_speed_results_may_still_be_empty_for_none():
    from ddtoolbox.cli import build_parser, manager

    parser = build_parser(manager()).commands["bench-speed"]
    assert next(a for a in parser._actions if a.dest == "results").allow_empty


def test_a_module_that_is_no_plugin_is_refused(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "1", "--plugin", "os.path"))
    one_line(r, 2, "module 'os.path' is not a ddtoolbox plugin")


def test_label_experts_beyond_the_buffer_is_refused(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "1", "--matcher", "datm", "--label-experts", "99"))
    one_line(r, 2, "--label-experts 99", "holds 2 experts")


def test_ddtool_data_pointing_nowhere_is_an_error(toy_dataset, tmp_path, monkeypatch):
    from ddtoolbox.data import ENV_VAR

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    r = run_cli("eval", "--random-ipc", "1", "--dataset", "fashion-mnist", "--runs", "1", "--epochs", "1", *TINY)
    one_line(r, 2, f"{ENV_VAR}={tmp_path / 'missing'} does not exist")


BENCH = ('[bench]\ndatasets = ["{dataset}"]\nipcs = {ipcs}\n[buffer]\nnum_experts = 1\ntrain_epochs = 2\nwidth = 8\n'
         '[distill]\niterations = 1\nmax_start_epoch = {start}\nexpert_epochs = 1\n{extra}'
         '[methods.MTT]\nmatcher = "mtt"\n')


@pytest.mark.parametrize("ipcs, start, extra, needle", [
    ("[1, 7]", 1, "[ipc.2.eval]\neval_runs = 1\n", "[ipc.2] is for IPC 2, which is not in [bench] ipcs"),
    ("[1, 1]", 1, "", "ipcs lists 1 more than once"),
    ("[1]", 5, "", "max_start_epoch + expert_epochs = 6, but the [buffer] experts train for 2 epochs"),
])
def test_bench_spec_mistakes_are_found_before_anything_runs(toy_dataset, tmp_path, ipcs, start, extra, needle):
    spec = tmp_path / "spec.toml"
    spec.write_text(BENCH.format(dataset=toy_dataset, ipcs=ipcs, start=start, extra=extra))
    r = run_cli("bench", spec, "--device", "cpu", "--quiet")
    one_line(r, 2, needle)
    assert not (tmp_path / "buffers").exists()


def test_a_spec_of_random_bytes_is_one_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_bytes(bytes(range(128, 256)) * 4)
    one_line(run_cli("bench", spec), 2, "is not a text file")


def test_a_preset_value_is_checked_even_when_a_flag_replaces_it(toy_dataset, toy_buffer, tmp_path, monkeypatch):
    import ddtoolbox.cli as cli
    from ddtoolbox.plugins import Registered

    real = cli.manager

    def with_preset(blocked=()):
        pm = real(blocked)
        pm.presets["bad"] = Registered("bad", {"distill": {"syn_steps": -5}}, "test", "a bad value")
        return pm

    monkeypatch.setattr(cli, "manager", with_preset)
    r = run_cli(*distill_argv(toy_buffer, tmp_path, "--iterations", "1", "--preset", "bad", "--syn-steps", "3"))
    one_line(r, 2, "preset 'bad' [distill] syn_steps = -5", "--syn-steps must be at least 1")


def test_outputs_that_cannot_be_written_are_found_before_compute(toy_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spec = tmp_path / "spec.toml"
    spec.write_text(BENCH.format(dataset=toy_dataset, ipcs="[1]", start=1, extra=""))
    one_line(run_cli("bench", spec, "--out", blocker / "out", "--device", "cpu"), 2, "a file stands where a folder")
    r = run_cli("bench-speed", "--results", blocker / "r.jsonl", "--iterations", "1", "--device", "cpu")
    one_line(r, 2, "--results")
    assert "bench-speed on" not in r.out                       # refused before the timing, not after


def test_a_file_size_limit_is_exit_2_naming_the_file(toy_dataset, tmp_path):
    import resource
    import subprocess
    import sys

    launch = ("import sys; from ddtoolbox.testing import register_toy_dataset; register_toy_dataset(); "
              "from ddtoolbox.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", launch, "buffer", "--dataset", TOY_NAME, "--out", str(tmp_path / "b"),
                        "--num-experts", "1", "--epochs", "1", "--batch-size", "32", *TINY],
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and f"cannot write {tmp_path / 'b' / 'expert_000.pt'}" in r.stderr
    assert "ulimit -f" in r.stderr
    assert not [p for p in (tmp_path / "b").iterdir() if p.name != ".ddtool.lock"]


def test_a_full_disk_during_the_probe_leaves_no_probe_file(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from ddtoolbox.errors import UsageError
    from ddtoolbox.outputs import check_writable

    real = Path.write_bytes

    def full(self, data):
        with open(self, "wb") as fh:
            fh.write(data[:1])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(UsageError, match="the disk is full"):
        check_writable(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", real)
    assert not list(tmp_path.glob(".ddtool-probe-*"))


def test_an_os_error_on_a_users_path_is_exit_2_naming_it(toy_dataset, tmp_path, monkeypatch):
    import errno

    import ddtoolbox.cli.commands.evaluation as evaluation

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "somewhere"))

    monkeypatch.setattr(evaluation, "run_eval", read_only)
    monkeypatch.setattr("ddtoolbox.evaluate.evaluate_synthetic", read_only)
    r = run_cli("eval", "--random-ipc", "1", "--dataset", toy_dataset, *TINY)
    one_line(r, 2, f"cannot use {tmp_path / 'somewhere'}: read-only file system", "fix the permissions")


def test_two_eval_writers_of_one_json_file_are_refused(toy_dataset, tmp_path):
    from ddtoolbox.outputs import OutputLock

    with OutputLock(tmp_path, "--json", file="e.json"):
        r = run_cli("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--runs", "1", "--epochs", "1",
                    "--json", tmp_path / "e.json", *TINY)
        one_line(r, 2, f"another ddtool process is writing {tmp_path / 'e.json'}")
        r = run_cli("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--runs", "1", "--epochs", "1",
                    "--json", tmp_path / "other.json", *TINY)
        assert r.code == 0, r.err                               # another file in the same folder goes on
    assert not (tmp_path / "e.json").exists() and (tmp_path / "other.json").exists()


@pytest.mark.parametrize("command", ["eval", "buffer", "train-full", "select"])
@pytest.mark.parametrize("lr", ["1e40", "inf"])
def test_an_sgd_lr_beyond_float32_is_a_usage_error(toy_dataset, tmp_path, command, lr):
    """torch's SGD cannot hold a step size beyond float32 (eval --lr 1e40 was exit 1, 'value cannot be
    converted to type float without overflow'); such a rate is refused on the command line."""
    argv = {"eval": ("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--runs", "1", "--epochs", "1"),
            "buffer": ("buffer", "--dataset", toy_dataset, "--out", tmp_path / "b", "--num-experts", "1",
                       "--epochs", "1"),
            "train-full": ("train-full", "--dataset", toy_dataset, "--epochs", "1"),
            "select": ("select", "--method", "forgetting", "--dataset", toy_dataset, "--ipc", "1", "--out",
                       tmp_path / "s")}[command]
    one_line(run_cli(*argv, "--lr", lr, *TINY), 2, "--lr", "largest float32")
    assert not (tmp_path / "b").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("command, outputs", [
    ("score", ("--out", "{blocked}/s.csv")),
    ("score", ("--out", "{tmp}/s.csv", "--per-image", "{blocked}/p.csv")),
    ("stats", ("--out", "{blocked}/s.json")),
    ("stats", ("--out", "{tmp}/s.json", "--png", "{blocked}/s.png")),
])
def test_compdd_checks_its_outputs_before_scoring(toy_dataset, toy_buffer, tmp_path, monkeypatch, command, outputs):
    """An output that cannot be written is one line before any image is looked at, not after the scoring."""
    import ddtoolbox.compdd.complexity as complexity
    import ddtoolbox.compdd.stats as stats

    def scored(*args, **kwargs):
        raise AssertionError("scored before the outputs were checked")

    monkeypatch.setattr(complexity, "score_classes", scored)
    monkeypatch.setattr(stats, "activation_stats", scored)
    (tmp_path / "file").write_text("x")
    given = [o.format(blocked=tmp_path / "file", tmp=tmp_path) for o in outputs]
    r = run_cli("compdd", command, "--dataset", toy_dataset, "--buffer", toy_buffer, *given, *TINY)
    one_line(r, 2, "is a file, not a folder")
