"""``ddtool bench``: spec checking, the grid, skip-on-rerun, interrupted cells, the table."""

import json
from pathlib import Path

import pytest

from ddtoolbox.bench.report import csv_table, markdown_table, render
from ddtoolbox.bench.runner import BenchRunner, cells_of
from ddtoolbox.bench.spec import Method, check_spec, read_spec
from ddtoolbox.cli import manager
from ddtoolbox.cli.parsing import build_parser
from ddtoolbox.errors import UsageError
from ddtoolbox.plugins import PluginManager
from ddtoolbox.cli.testing import run_cli

TOY_SPEC = """
[bench]
title = "toy"
datasets = ["{dataset}"]
ipcs = [1, 2]

[buffer]
num_experts = 2
train_epochs = 4
width = 8
batch_size = 32
lr = 0.05

[distill]
iterations = 2
syn_steps = 3
expert_epochs = 1
max_start_epoch = 3
lr_img = 10

[eval]
eval_runs = 2
eval_epochs = 3

[ipc.2.eval]
eval_runs = 1

[methods.random]
random = true

[methods.MTT]
matcher = "mtt"
"""


class Recorder:
    """An in-process executor that remembers what ran and can fail on a chosen command."""

    def __init__(self, interrupt_on=None):
        self.calls, self.interrupt_on = [], interrupt_on

    def __call__(self, argv, log: Path):
        self.calls.append(list(argv))
        if self.interrupt_on and self.interrupt_on(argv):
            raise KeyboardInterrupt
        result = run_cli(*argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(result.out + result.err)
        if result.code != 0:
            raise UsageError(result.err.strip())


@pytest.fixture
def toy_spec(tmp_path, toy_dataset):
    path = tmp_path / "spec.toml"
    path.write_text(TOY_SPEC.format(dataset=toy_dataset))
    return read_spec(path)


def runner(spec, execute):
    return BenchRunner(spec, spec.path.parent, ["--device", "cpu", "--quiet"], {"device": "cpu", "date": "2026-11-26"},
                       build_parser(manager()).commands, execute, progress=False)


def test_grid_runs_every_cell_then_skips_them_and_reruns_an_interrupted_one(toy_spec):
    out = toy_spec.path.parent
    first = Recorder()
    records = runner(toy_spec, first).run(log=lambda *_: None)
    assert len(records) == 4
    assert sum(c[0] == "buffer" for c in first.calls) == 1           # one buffer serves every cell
    assert sum(c[0] == "distill" for c in first.calls) == 2
    assert all((c.folder(out) / "result.json").is_file() for c in cells_of(toy_spec))
    ipc2 = [c for c in cells_of(toy_spec) if c.ipc == 2 and c.method.name == "MTT"][0]
    assert len(runner(toy_spec, Recorder()).run(log=lambda *_: None)) == 0

    # an interrupted cell: its eval dies, leaving run/ in the staging folder but no result
    (ipc2.folder(out) / "result.json").unlink()
    dying = Recorder(interrupt_on=lambda argv: argv[0] == "eval")
    with pytest.raises(KeyboardInterrupt):
        runner(toy_spec, dying).run(log=lambda *_: None)
    staging = ipc2.folder(out).with_name("mtt.new")
    assert (staging / "run" / "synthetic.pt").is_file() and not (staging / "result.json").exists()
    assert not ipc2.folder(out).exists()                                # never a half-counted cell
    published = (staging / "run" / "synthetic.pt").read_bytes()

    again = Recorder()
    redone = runner(toy_spec, again).run(log=lambda *_: None)
    assert [(r["ipc"], r["method"]) for r in redone] == [(2, "MTT")]
    assert [c[0] for c in again.calls] == ["buffer", "eval"]   # the published set is kept; the buffer only checked
    assert "--resume" in again.calls[0]
    assert (ipc2.folder(out) / "run" / "synthetic.pt").read_bytes() == published
    assert ipc2.folder(out).is_dir() and not staging.exists()

    # an attempt under settings the spec no longer has starts from scratch
    (ipc2.folder(out) / "result.json").unlink()
    with pytest.raises(KeyboardInterrupt):
        runner(toy_spec, Recorder(interrupt_on=lambda argv: argv[0] == "eval")).run(log=lambda *_: None)
    stale = staging / "stale-marker"
    stale.write_text("left by the interrupted attempt")
    edited = read_spec(_rewrite(toy_spec.path, "lr_img = 10", "lr_img = 20"))
    fresh = Recorder()
    runner(edited, fresh).run(only={"MTT"}, log=lambda *_: None)
    assert [c[0] for c in fresh.calls] == ["buffer", "distill", "eval"] and "--resume" not in fresh.calls[1]
    assert not stale.exists()
    _rewrite(toy_spec.path, "lr_img = 20", "lr_img = 10")

    written = render(toy_spec, out)
    table = written["markdown"].read_text()
    assert "| random |" in table and "| MTT |" in table
    assert table.count("**") == 2 * 2                                   # one bold best per column
    assert "4 of 4 cells finished" in table and "device: cpu" in table
    assert len(written["csv"].read_text().strip().splitlines()) == 1 + 4
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_data_row_and_recovery_ratio(tmp_path, toy_dataset):
    path = tmp_path / "spec.toml"
    path.write_text(TOY_SPEC.format(dataset=toy_dataset).replace("[ipc.2.eval]\neval_runs = 1\n", "")
                    .replace("ipcs = [1, 2]", "ipcs = [1]")
                    + "\n[full]\ntrain_epochs = 1\nruns = 1\n")
    spec = read_spec(path)
    check_spec(spec, build_parser(manager()).commands)
    rec = Recorder()
    runner(spec, rec).run(only={"random"}, log=lambda *_: None)
    (full_argv,) = [a for a in rec.calls if a[0] == "train-full"]
    assert full_argv[full_argv.index("--width") + 1] == "8"             # the buffer's architecture
    assert str(tmp_path) in full_argv[full_argv.index("--full-results") + 1]   # not the user's store
    full = read_json_file(tmp_path / "full" / toy_dataset / "result.json")["result"]
    random = read_json_file(tmp_path / "cells" / toy_dataset / "ipc1" / "random" / "result.json")
    table = render(spec, tmp_path)["markdown"].read_text()
    assert "(1 run)" in [line for line in table.splitlines() if line.startswith("| Full data")][0]
    recovery = [line for line in table.splitlines() if line.startswith("| Recovery ratio")][0]
    assert recovery.split("|")[2].strip() == f"{random['mean'] / full['mean'] * 100:.1f}%"
    assert len(runner(spec, Recorder()).run(log=lambda *_: None)) == 1  # full data is not retrained; MTT runs


def read_json_file(path):
    import json

    return json.loads(Path(path).read_text())


def test_cells_run_under_other_settings_are_noticed(toy_spec):
    rec = Recorder()
    runner(toy_spec, rec).run(only={"random"}, log=lambda *_: None)
    edited = toy_spec.path.read_text().replace("[ipc.2.eval]\neval_runs = 1", "[ipc.2.eval]\neval_runs = 2")
    toy_spec.path.write_text(edited)
    spec = read_spec(toy_spec.path)
    messages = []
    assert runner(spec, Recorder()).run(only={"random"}, log=messages.append) == []   # kept by default
    assert "1 finished cell(s) ran with settings the spec no longer has" in messages[0] and "IPC 2" in messages[0]
    redone = runner(spec, Recorder()).run(only={"random"}, rerun_changed=True, log=lambda *_: None)
    assert [(r["ipc"], len(r["runs"])) for r in redone] == [(2, 2)]
    assert not runner(spec, Recorder()).todo({"random"})[1]


def test_random_cell_uses_the_buffers_architecture(toy_spec):
    rec = Recorder()
    random_cell = [c for c in cells_of(toy_spec) if c.method.random][0]
    runner(toy_spec, rec).run_cell(random_cell)
    (argv,) = rec.calls
    assert argv[:2] == ["eval", "--random-ipc"]
    assert argv[argv.index("--width") + 1] == "8"
    assert argv[argv.index("--eval-runs") + 1] == "2"


def test_per_ipc_overrides_and_method_options_win(toy_spec):
    mtt = Method("MTT", "mtt", ["cpd"], {"iterations": 7})
    assert toy_spec.distill_options(2, mtt)["iterations"] == 7
    assert toy_spec.eval_options(2)["eval_runs"] == 1 and toy_spec.eval_options(1)["eval_runs"] == 2


def _result(mean, std=0.01):
    return {"mean": mean, "std": std, "runs": [mean - std, mean + std]}


def test_table_bolds_the_best_and_computes_the_recovery_ratio(toy_spec):
    d = toy_spec.datasets[0]
    results = {"cells": {(d, 1, "random"): _result(0.5), (d, 1, "MTT"): _result(0.8),
                         (d, 2, "random"): _result(0.6)},
               "full": {d: _result(0.9)}}
    table = markdown_table(toy_spec, results)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "**80.00 ± 1.00**" in rows["MTT"] and "**" not in rows["random"].split("|")[2]
    assert "**60.00 ± 1.00**" in rows["random"]                         # the only finished cell is the best
    assert rows["MTT"].split("|")[3].strip() == "-"                      # unfinished cells show as '-'
    ratio = rows["Recovery ratio (best / full)"].split("|")
    assert ratio[2].strip() == "88.9%" and ratio[3].strip() == "66.7%"   # 0.8 / 0.9 and 0.6 / 0.9
    csv_rows = csv_table(toy_spec, results).strip().splitlines()
    assert csv_rows[1].startswith(f"{d},1,random,0.5000,0.0100,2,0.5556")


@pytest.mark.parametrize("text, message", [
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nmatcher='mtt'\n[distil]\n", "unknown section"),
    ("[bench]\ndatasets=['a']\nipcs=[0]\n[methods.x]\nmatcher='mtt'\n", "ipcs"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n", "no [methods"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nplugins=['cpd']\n", "needs matcher"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nrandom=true\nmatcher='mtt'\n", "random baseline"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nmatcher='mtt'\n[ipc.one.eval]\n", "[ipc.one]"),
    ("[bench\n", "cannot be read"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\nseeds=[0, 0]\n[methods.x]\nmatcher='mtt'\n", "seeds must be a list"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\nseeds=[-1]\n[methods.x]\nmatcher='mtt'\n", "seeds must be a list"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\nseeds=3\n[methods.x]\nmatcher='mtt'\n", "seeds must be a list"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\nseed=[3]\n[methods.x]\nmatcher='mtt'\n", "unknown [bench] key"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nmatcher='mtt'\ndatasets=['b']\n", "datasets ['b'] are not in"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nmatcher='mtt'\ndatasets='a'\n", "non-empty list"),
    ("[bench]\ndatasets=['a']\nipcs=[1]\n[methods.x]\nmatcher='mtt'\ndatasets=[]\n", "non-empty list"),
])
def test_malformed_specs_are_named(tmp_path, text, message):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        read_spec(path)


def test_option_typos_fail_before_anything_runs(toy_spec, tmp_path):
    parsers = build_parser(manager()).commands
    check_spec(toy_spec, parsers)
    bad = toy_spec.path.read_text().replace("syn_steps = 3", "syn_step = 3")
    path = tmp_path / "typo.toml"
    path.write_text(bad)
    with pytest.raises(UsageError, match="syn_step"):
        check_spec(read_spec(path), parsers)
    result = run_cli("bench", str(path))
    assert result.code == 2 and "syn_step" in result.err and not (tmp_path / "cells").exists()


def test_a_method_limited_to_some_datasets_gets_cells_only_there(tmp_path, toy_dataset):
    path = tmp_path / "spec.toml"
    path.write_text(TOY_SPEC.format(dataset=toy_dataset).replace('datasets = ["', 'datasets = ["other", "')
                    + f'\n[methods.only]\nmatcher = "mtt"\ndatasets = ["{toy_dataset}"]\n')
    spec = read_spec(path)
    cells = {(c.dataset, c.method.name) for c in cells_of(spec)}
    assert ("other", "MTT") in cells and (toy_dataset, "only") in cells and ("other", "only") not in cells
    assert len(cells_of(spec)) == 2 * 2 * 3 - 2                     # 2 datasets x 2 IPCs x 3 methods, less 'only' on 'other'
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in markdown_table(spec, {"cells": {}, "full": {}}).splitlines()[2:]}
    assert [c.strip() for c in rows["only"]] == ["n/a", "n/a", "-", "-"]   # not run there vs not finished yet
    assert [c.strip() for c in rows["MTT"]] == ["-"] * 4


def test_dry_run_lists_the_cells_left(toy_spec):
    result = run_cli("bench", str(toy_spec.path), "--dry-run", "--device", "cpu")
    assert result.code == 0
    assert "4 step(s) to run" in result.out and "IPC 2 MTT" in result.out
    result = run_cli("bench", str(toy_spec.path), "--dry-run", "--method", "nope")
    assert result.code == 2 and "nope" in result.err


def test_ipc_option_runs_only_that_ipcs_cells(toy_spec):
    result = run_cli("bench", str(toy_spec.path), "--dry-run", "--device", "cpu", "--ipc", "2")
    assert result.code == 0
    assert "2 step(s) to run" in result.out and "IPC 2 MTT" in result.out and "IPC 1" not in result.out
    result = run_cli("bench", str(toy_spec.path), "--dry-run", "--ipc", "3")
    assert result.code == 2 and "--ipc 3 is not in" in result.err and "1, 2" in result.err


def test_subprocess_executor_logs_the_command_and_names_a_failure(tmp_path):
    from ddtoolbox.bench.runner import run_in_subprocess

    log = tmp_path / "cell" / "log.txt"
    with pytest.raises(UsageError, match="'ddtool eval' failed \\(exit 2\\).*--random-ipc.*log.txt"):
        run_in_subprocess(["eval", "--random-ipc", "1"], log)
    assert log.read_text().startswith("$ ddtool eval --random-ipc 1\n")


def test_rerun_changed_keeps_the_finished_cell_until_its_replacement_succeeds(toy_spec):
    out = toy_spec.path.parent
    runner(toy_spec, Recorder()).run(only={"random"}, log=lambda *_: None)
    cell = [c for c in cells_of(toy_spec) if c.method.random][0]
    before = (cell.folder(out) / "result.json").read_text()
    edited = read_spec(toy_spec.path)
    edited.eval["eval_epochs"] = 2                                      # the spec changed since
    failing = Recorder(interrupt_on=lambda argv: argv[0] == "eval")
    with pytest.raises(KeyboardInterrupt):
        runner(edited, failing).run(only={"random"}, rerun_changed=True, log=lambda *_: None)
    assert (cell.folder(out) / "result.json").read_text() == before      # the old result survived
    runner(edited, Recorder()).run(only={"random"}, rerun_changed=True, log=lambda *_: None)
    assert (cell.folder(out) / "result.json").read_text() != before


def test_the_whole_spec_is_checked_before_any_cell_runs(toy_spec, tmp_path):
    text = toy_spec.path.read_text()
    for bad, message in [('matcher = "mtt"', 'matcher = "mtx"'), ('matcher = "mtt"', 'matcher = "mtt"\nplugins = ["nope"]')]:
        path = tmp_path / f"bad{len(message)}.toml"
        path.write_text(text.replace(bad, message, 1))
        spec = read_spec(path)
        rec = Recorder()
        with pytest.raises(UsageError):
            runner(spec, rec).check(manager())
        assert rec.calls == []
    path = tmp_path / "bad-value.toml"
    path.write_text(text.replace("lr_img = 10", "lr_img = -3", 1))
    with pytest.raises(UsageError, match="--lr-img"):
        runner(read_spec(path), Recorder()).check(manager())
    path = tmp_path / "bad-dataset.toml"
    path.write_text(text.replace(toy_spec.datasets[0], "no-such-data", 1))
    with pytest.raises(UsageError, match="no-such-data"):
        runner(read_spec(path), Recorder()).check(manager())


def test_a_killed_bench_takes_its_running_child_down_cleanly(toy_buffer, tmp_path):
    """kill -9 of the bench process: the operating system sends its ddtool child SIGTERM, which
    finishes its iteration, writes a checkpoint and exits (nothing keeps running in a wiped folder)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ddtoolbox.testing import TOY_DISTILL, TOY_NAME

    (tmp_path / "toyreg.py").write_text("from ddtoolbox import hookimpl\nfrom ddtoolbox.testing import register_toy_dataset\n"
                                        "register_toy_dataset()\n@hookimpl\ndef register_presets(register):\n"
                                        "    pass\n")     # a module with no hook is no plugin
    out, log = tmp_path / "run", tmp_path / "log.txt"
    argv = ["distill", "--plugin", "toyreg", "--dataset", TOY_NAME, "--buffer", toy_buffer, "--out", str(out),
            *TOY_DISTILL, "--iterations", "100000", "--checkpoint-every", "1", "--threads", "1"]
    bench = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                              "from ddtoolbox.bench.runner import run_in_subprocess; "
                              f"run_in_subprocess({argv!r}, Path({str(log)!r}))"],
                             env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (out / "checkpoint.pt").exists(), log.read_text() if log.exists() else "no log"
    bench.send_signal(signal.SIGKILL)
    bench.wait()
    deadline = time.time() + 60
    while "SIGTERM after iteration" not in log.read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert "SIGTERM after iteration" in log.read_text() and "--resume" in log.read_text()


# ---------------------------------------------------------------------------- several seeds per cell


@pytest.fixture
def seeded_spec(tmp_path, toy_dataset):
    path = tmp_path / "spec.toml"
    text = (TOY_SPEC.format(dataset=toy_dataset).replace("[ipc.2.eval]\neval_runs = 1\n", "")
            .replace("ipcs = [1, 2]", "ipcs = [1]\nseeds = [0, 1]"))
    path.write_text(text)
    return read_spec(path)


def test_each_cell_runs_once_per_seed_and_pools_every_network(seeded_spec):
    import statistics

    import torch

    assert seeded_spec.seeds == [0, 1]
    out, rec = seeded_spec.path.parent, Recorder()
    records = runner(seeded_spec, rec).run(log=lambda *_: None)
    assert len(records) == 2
    steps = [(a[0], a[a.index("--seed") + 1] if "--seed" in a else None) for a in rec.calls]
    assert steps == [("eval", "0"), ("eval", "1"), ("buffer", None), ("distill", "0"), ("eval", "0"),
                     ("distill", "1"), ("eval", "1")]
    mtt = [c for c in cells_of(seeded_spec) if c.method.name == "MTT"][0]
    record = read_json_file(mtt.folder(out) / "result.json")
    per_seed = [read_json_file(mtt.folder(out) / f"seed{s}" / "eval.json") for s in (0, 1)]
    assert record["seeds"] == [0, 1] and [p["seed"] for p in record["per_seed"]] == [0, 1]
    assert record["runs"] == per_seed[0]["runs"] + per_seed[1]["runs"] and len(record["runs"]) == 4
    assert record["mean"] == pytest.approx(statistics.fmean(record["runs"]))
    assert record["std"] == pytest.approx(statistics.pstdev(record["runs"]))
    images = [torch.load(mtt.folder(out) / f"seed{s}" / "run" / "synthetic.pt", weights_only=True) for s in (0, 1)]
    assert [i["meta"]["seed"] for i in images] == [0, 1]
    assert not torch.equal(images[0]["images"], images[1]["images"])      # two distillations, not one twice
    table = render(seeded_spec, out)["markdown"].read_text()
    assert "pooled over distillation seeds 0, 1" in table
    assert f"{record['mean'] * 100:.2f} ± {record['std'] * 100:.2f}" in table


def test_a_seeds_commands_name_its_seed_once(seeded_spec):
    """The bench's own ``--seed`` (in every command) gives way to the cell's seed, so a logged command
    does not read ``--seed 7 ... --seed 1``."""
    bench = BenchRunner(seeded_spec, seeded_spec.path.parent, ["--seed", "7", "--device", "cpu", "--quiet"], {},
                        build_parser(manager()).commands, Recorder(), progress=False)
    mtt = [c for c in cells_of(seeded_spec) if c.method.name == "MTT"][0]
    for argv in bench.commands_of(mtt, seeded_spec.path.parent / "x", ["--seed", "1"], device="cuda:1"):
        assert argv.count("--seed") == 1 and argv[argv.index("--seed") + 1] == "1"
        assert argv.count("--device") == 1 and argv[argv.index("--device") + 1] == "cuda:1"
    unseeded = bench.commands_of(mtt, seeded_spec.path.parent / "x")
    assert all(argv[argv.index("--seed") + 1] == "7" for argv in unseeded)


def test_an_interrupted_cell_keeps_its_finished_seeds(seeded_spec):
    out = seeded_spec.path.parent
    mtt = [c for c in cells_of(seeded_spec) if c.method.name == "MTT"][0]
    dying = Recorder(interrupt_on=lambda argv: argv[0] == "eval" and argv[-1] == "1" and "--synthetic" in argv)
    with pytest.raises(KeyboardInterrupt):
        runner(seeded_spec, dying).run(only={"MTT"}, log=lambda *_: None)
    staging = mtt.folder(out).with_name("mtt.new")            # an unfinished cell stays in its staging folder
    assert (staging / "seed0" / "result.json").is_file()
    assert not (staging / "seed1" / "result.json").exists()
    assert not (staging / "result.json").exists() and not mtt.folder(out).exists()
    again = Recorder()
    (record,) = runner(seeded_spec, again).run(only={"MTT"}, log=lambda *_: None)
    # seed 1's distillation was published before its evaluation died: only the evaluation runs again
    assert [(a[0], a[a.index("--seed") + 1]) for a in again.calls if a[0] != "buffer"] == [("eval", "1")]
    assert len(record["runs"]) == 4
    # a changed spec invalidates the kept seeds too
    seeded_spec.path.write_text(seeded_spec.path.read_text().replace("eval_epochs = 3", "eval_epochs = 2"))
    spec = read_spec(seeded_spec.path)
    redo = Recorder()
    runner(spec, redo).run(only={"MTT"}, rerun_changed=True, log=lambda *_: None)
    assert [a[a.index("--seed") + 1] for a in redo.calls if a[0] == "distill"] == ["0", "1"]


def test_a_new_seed_runs_alone_and_the_finished_ones_are_kept(seeded_spec):
    """Adding a seed to a finished grid runs only that seed; dropping one re-pools without compute;
    any other change still counts as changed."""
    import torch

    out = seeded_spec.path.parent
    one = read_spec(_rewrite(seeded_spec.path, "seeds = [0, 1]", "seeds = [0]"))
    runner(one, Recorder()).run(only={"MTT"}, log=lambda *_: None)
    mtt = [c for c in cells_of(one) if c.method.name == "MTT"][0]
    seed0 = torch.load(mtt.folder(out) / "seed0" / "run" / "synthetic.pt", weights_only=True)["images"]

    two = read_spec(_rewrite(seeded_spec.path, "seeds = [0]", "seeds = [0, 1]"))
    assert run_cli("bench", str(two.path), "--dry-run", "--device", "cpu", "--method", "MTT").out.count("(seeds 0 kept)") == 1
    grown = Recorder()
    (record,) = runner(two, grown).run(only={"MTT"}, log=lambda *_: None)
    assert [(a[0], a[a.index("--seed") + 1]) for a in grown.calls if a[0] != "buffer"] == [("distill", "1"), ("eval", "1")]
    assert record["seeds"] == [0, 1] and len(record["runs"]) == 4 and not runner(two, Recorder()).todo({"MTT"})[1]
    first = read_json_file(mtt.folder(out) / "seed0" / "eval.json")["runs"]
    assert record["runs"][:2] == first
    assert torch.equal(torch.load(mtt.folder(out) / "seed0" / "run" / "synthetic.pt", weights_only=True)["images"], seed0)

    fewer = read_spec(_rewrite(seeded_spec.path, "seeds = [0, 1]", "seeds = [1]"))
    shrunk = Recorder()
    (record,) = runner(fewer, shrunk).run(only={"MTT"}, log=lambda *_: None)
    assert [a[0] for a in shrunk.calls] == ["buffer"] and record["seeds"] == [1] and len(record["runs"]) == 2
    assert not (mtt.folder(out) / "seed0").exists()

    changed = read_spec(_rewrite(seeded_spec.path, "eval_epochs = 3", "eval_epochs = 2"))
    todo, changed_cells = runner(changed, Recorder()).todo({"MTT"})
    assert todo == [] and [c.method.name for c in changed_cells] == ["MTT"]


def test_a_cells_time_counts_every_attempt_of_its_distillation(toy_spec):
    """A distillation continued across sessions keeps its own clock (``meta.seconds`` in its metrics);
    the cell's ``seconds`` must count it, not only the wall time of the attempt that finished it."""
    def finished_elsewhere(argv, log):   # a distillation whose earlier attempts took 5000 s
        if argv[0] == "distill":
            run = Path(argv[argv.index("--out") + 1])
            run.mkdir(parents=True, exist_ok=True)
            (run / "metrics.json").write_text(json.dumps({"meta": {"seconds": 5000.0}}))
        elif argv[0] == "eval":
            Path(argv[argv.index("--json") + 1]).write_text(json.dumps({"mean": 0.5, "std": 0.0, "runs": [0.5]}))

    mtt = [c for c in cells_of(toy_spec) if c.method.name == "MTT"][0]
    record = runner(toy_spec, finished_elsewhere).run_cell(mtt)
    assert 5000 <= record["seconds"] < 5060


def _rewrite(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


STOP_ONCE_PLUGIN = """
from ddtoolbox import hookimpl
armed = [True]

@hookimpl
def on_iteration(run, record):
    if armed[0] and run.iteration == 1:   # after iteration 0's checkpoint, before iteration 1's
        armed[0] = False
        raise KeyboardInterrupt
"""


def test_a_distillation_stopped_mid_run_is_resumed_from_its_checkpoint(seeded_spec, tmp_path, monkeypatch):
    """A long cell stopped mid-distillation (a crash, the end of a session) continues from its last
    checkpoint with --resume, and ends exactly where an uninterrupted run ends."""
    import importlib

    import torch

    (tmp_path / "stop_once_plugin.py").write_text(STOP_ONCE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    stopper = importlib.import_module("stop_once_plugin")

    class WithStopper(Recorder):
        def __call__(self, argv, log):
            if argv[0] == "distill":
                argv = [*argv, "--plugin", "stop_once_plugin", "--checkpoint-every", "1"]
            return super().__call__(argv, log)

    text = seeded_spec.path.read_text().replace("iterations = 2", "iterations = 3")
    spec = read_spec(_rewrite(seeded_spec.path, seeded_spec.path.read_text(), text))
    mtt = [c for c in cells_of(spec) if c.method.name == "MTT"][0]
    with pytest.raises(UsageError, match="interrupted"):     # the CLI turns it into exit status 130
        runner(spec, WithStopper()).run(only={"MTT"}, log=lambda *_: None)
    staging = mtt.folder(spec.path.parent).with_name("mtt.new")
    assert (staging / "seed0" / "run" / "checkpoint.pt").is_file()
    dry = run_cli("bench", str(spec.path), "--dry-run", "--device", "cpu", "--method", "MTT")
    assert "IPC 1 MTT x seeds 0, 1 (seed 0 resumes from its checkpoint)" in dry.out, dry.out
    again = WithStopper()
    # continued under another --device: the run resumes where it began (distill refuses a move),
    # the rest runs where it is told
    elsewhere = BenchRunner(spec, spec.path.parent, ["--device", "cpu:0", "--quiet"], {"device": "cpu"},
                            build_parser(manager()).commands, again, progress=False)
    (record,) = elsewhere.run(only={"MTT"}, log=lambda *_: None)
    distills = [a for a in again.calls if a[0] == "distill"]
    assert ["--resume" in a for a in distills] == [True, False] and len(record["runs"]) == 4
    assert [a[a.index("--device") + 1] for a in distills] == ["cpu", "cpu:0"]
    assert any("--resume" in c for c in record["commands"])

    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    (reference_dir / "spec.toml").write_text(text)
    reference = read_spec(reference_dir / "spec.toml")
    stopper.armed[0] = False
    runner(reference, WithStopper()).run(only={"MTT"}, log=lambda *_: None)
    for s in (0, 1):
        resumed, straight = (torch.load(c.folder(d) / f"seed{s}" / "run" / "synthetic.pt", weights_only=True)
                             for c, d in ((mtt, spec.path.parent), (mtt, reference_dir)))
        assert torch.equal(resumed["images"], straight["images"]) and torch.equal(resumed["lr"], straight["lr"])


def test_dry_run_names_the_seeds(seeded_spec):
    result = run_cli("bench", str(seeded_spec.path), "--dry-run", "--device", "cpu")
    assert result.code == 0 and "IPC 1 MTT x seeds 0, 1" in result.out


@pytest.mark.parametrize("spec", sorted((Path(__file__).parents[1] / "benchmarks").glob("**/spec.toml")),
                         ids=lambda p: str(p.parent.relative_to(Path(__file__).parents[1] / "benchmarks")))
def test_shipped_specs_check(spec):
    """Every recorded benchmark's spec names only real options (plugins' included)."""
    pm = manager()
    parsed = read_spec(spec)
    if any(p not in pm.plugin_names() for m in parsed.methods for p in m.plugins):
        pytest.skip("needs plugins that are not installed")
    check_spec(parsed, build_parser(pm).commands)


def test_the_edf_complex_spec_logs_the_area_on_every_row():
    spec = read_spec(Path(__file__).parents[1] / "benchmarks" / "edf-complex" / "spec.toml")
    assert spec.seeds == [0, 1] and spec.ipcs == [10]
    assert spec.datasets == ["cluttered-fashion-mnist", "fashion-mnist"]
    rows = {m.name: m for m in spec.methods}
    assert list(rows) == ["Random real", "DATM", "DATM+CPD", "DATM+DAE", "DATM+CPD+DAE", "DATM+DAE (G: ResNet-18 layer3)"]
    assert rows.pop("Random real").random
    for name, m in rows.items():
        assert m.matcher == "datm" and "dae" in m.plugins and ("cpd" in m.plugins) == ("CPD" in name)
        assert m.options.get("dae_measure_only", False) == ("DAE" not in name)
        assert (m.datasets is None) == ("(G:" not in name)    # the other G runs where boxes chose it
    assert spec.buffer["width"] == 32 and spec.buffer["train_subset"] == 1000 and spec.distill["syn_steps"] == 20


@pytest.mark.parametrize("name, iterations, every", [("long", 400, 80), ("converge", 1200, 120)])
def test_the_edf_complex_longer_specs_are_their_parent_run_longer(name, iterations, every):
    """Their curves continue the parent table's cells: that holds only while nothing but the length
    and the evaluations along the way differ."""
    folder = Path(__file__).parents[1] / "benchmarks" / "edf-complex"
    parent, long = read_spec(folder / "spec.toml"), read_spec(folder / name / "spec.toml")
    assert long.buffer == parent.buffer and long.eval == parent.eval and long.seeds == [0]
    extra = {"iterations": iterations, "eval_every": every, "eval_runs": long.eval["eval_runs"],
             "eval_epochs": long.eval["eval_epochs"]}
    assert long.distill == {**parent.distill, **extra}
    rows = {m.name: m for m in parent.methods}
    for m in long.methods:
        base = rows[m.name.replace("CPD+DAE (G", "DAE (G")]
        cpd = {"cpd_alpha": rows["DATM+CPD"].options["cpd_alpha"]} if "CPD" in m.name else {}
        assert (m.matcher, m.options) == (base.matcher, {**base.options, **cpd})


def test_devices_run_cells_at_once_each_on_its_own_device(toy_spec):
    """bench --devices: the buffer first, then one cell per device at a time, each command on its device."""
    import threading
    import time

    lock, running, seen = threading.Lock(), [0], {"most": 0, "calls": []}

    def fake(argv, log):
        with lock:
            running[0] += 1
            seen["most"] = max(seen["most"], running[0])
            seen["calls"].append(list(argv))
        time.sleep(0.3)
        if argv[0] == "eval":
            out = Path(argv[argv.index("--json") + 1])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"mean": 0.5, "std": 0.0, "runs": [0.5]}))
        with lock:
            running[0] -= 1

    r = BenchRunner(toy_spec, toy_spec.path.parent, ["--device", "cpu", "--quiet"], {"device": "cpu"},
                    build_parser(manager()).commands, fake, progress=False, devices=["cuda:0", "cuda:1"])
    records = r.run(log=lambda *_: None)
    assert [(x["ipc"], x["method"]) for x in records] == [(c.ipc, c.method.name) for c in cells_of(toy_spec)]
    calls = seen["calls"]
    assert calls[0][0] == "buffer" and seen["most"] == 2
    devices = [c[c.index("--device") + 1] for c in calls[1:]]
    assert set(devices) == {"cuda:0", "cuda:1"} and all(c.count("--device") == 1 for c in calls)
    for rec in records:   # a cell's distill and eval ran on the same device
        used = {cmd.split("--device ")[1].split()[0] for cmd in rec["commands"]}
        assert len(used) == 1


def test_the_edf_complex_figures_measure_the_first_rows_images_with_another_rows_g(tmp_path, toy_dataset):
    """A row whose DAE used a saved network as G gets a baseline: the first row's final images under
    that G, computed here again through the DAE plugin's own functions."""
    import runpy
    import statistics

    import torch

    from ddtoolbox.data import load_dataset
    from ddtoolbox.teacher import load_teacher

    M = pytest.importorskip("ddtoolbox_edf.maps")

    g = tmp_path / "g.pt"
    r = run_cli("train-full", "--dataset", toy_dataset, "--model", "ResNet18", "--width", "4", "--epochs", "1",
                "--device", "cpu", "--quiet", "--save-model", str(g), "--full-results", str(tmp_path / "full.json"))
    assert r.code == 0, r.err
    path = tmp_path / "spec.toml"
    path.write_text(TOY_SPEC.format(dataset=toy_dataset).split("[methods.random]")[0]
                    .replace("[ipc.2.eval]\neval_runs = 1\n", "").replace("ipcs = [1, 2]", "ipcs = [1]\nseeds = [0, 1]")
                    + '[methods.plain]\nmatcher = "mtt"\nplugins = ["dae"]\noptions = { dae_measure_only = true }\n'
                    + f'[methods.own]\nmatcher = "mtt"\nplugins = ["dae"]\noptions = {{ dae_model = "{g}", dae_layer = ["layer2"] }}\n')
    spec = read_spec(path)
    runner(spec, Recorder()).run(log=lambda *_: None)
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "edf-complex" / "figures.py"),
                   run_name="figures")["main"](tmp_path, with_drift=True)
    text = (tmp_path / "diagnostics.md").read_text()
    line = [ln for ln in text.splitlines() if ln.startswith(f"- {toy_dataset}, own:")]
    assert len(line) == 1 and "final images of plain" in line[0]
    net, _ = load_teacher(g, load_dataset(toy_dataset, "test").info, "cpu")
    net = M.prepare_model(net)
    _, layers = M.resolve_layers(net, ["layer2"])
    plain = [c for c in cells_of(spec) if c.method.name == "plain"][0].folder(tmp_path)
    areas = []
    for s in (0, 1):
        record = torch.load(plain / f"seed{s}" / "run" / "synthetic.pt", weights_only=True)
        areas.append(M.discriminative_area(M.gradcam_maps(net, record["images"], record["labels"], layers)).mean().item())
    assert f"have a discriminative area of {statistics.fmean(areas):.1%}" in line[0]


def test_the_edf_complex_figures_summarise_every_finished_cell(tmp_path, toy_dataset):
    """benchmarks/edf-complex/figures.py on a finished toy grid: the area curve of every row, the
    overlays, and diagnostics whose numbers are the runs' own."""
    import runpy
    import statistics

    path = tmp_path / "spec.toml"
    path.write_text(TOY_SPEC.format(dataset=toy_dataset).split("[methods.random]")[0]
                    .replace("[ipc.2.eval]\neval_runs = 1\n", "").replace("ipcs = [1, 2]", "ipcs = [1]\nseeds = [0, 1]")
                    .replace("iterations = 2", "iterations = 3\neval_every = 2\neval_runs = 2\neval_epochs = 3")
                    + '[methods.plain]\nmatcher = "mtt"\nplugins = ["dae"]\noptions = { dae_measure_only = true, dae_every = 1 }\n'
                    + '[methods."+CPD"]\nmatcher = "mtt"\nplugins = ["cpd", "dae"]\n'
                      'options = { cpd_alpha = 0.25, dae_measure_only = true, dae_every = 1 }\n')
    spec = read_spec(path)
    runner(spec, Recorder()).run(log=lambda *_: None)
    script = Path(__file__).parents[1] / "benchmarks" / "edf-complex" / "figures.py"
    runpy.run_path(str(script), run_name="figures")["main"](tmp_path, with_drift=True)
    assert all((tmp_path / f).stat().st_size > 0 for f in ("area.png", "overlays.png", "accuracy.png"))
    text, along = (tmp_path / "diagnostics.md").read_text().split("\n## Test accuracy along the distillation")
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in text.splitlines() if line.startswith(f"| {toy_dataset}")}
    assert set(rows) == {"plain", "+CPD"}
    for name, cells in rows.items():
        cell = [c for c in cells_of(spec) if c.method.name == name][0]
        histories = [read_json_file(cell.folder(tmp_path) / f"seed{s}" / "run" / "metrics.json")["history"]
                     for s in (0, 1)]
        start = statistics.fmean(next(h["dae_area"] for h in hist if "dae_area" in h) for hist in histories)
        end = statistics.fmean(hist[-1]["dae_area_final"] for hist in histories)
        assert cells[1] == f"{start:.1%}" and cells[2] == f"{end:.1%}" and cells[3] == "0.0%"
        assert (cells[4] == "-") == (name == "plain")
        if name == "+CPD":                  # CPD keeps the larger per-parameter losses: kept / full > 1
            assert float(cells[4]) > 1
        # drift: both rows moved their images; only the second row has a distance from the first
        assert float(cells[-2]) > 0 and (cells[-1] == "-") == (name == "plain")
    assert float(rows["+CPD"][-1]) > 0
    # accuracy against the first row, network by network (both rows train the same fresh networks)
    first, second = (read_json_file(c.folder(tmp_path) / "result.json")["runs"] for c in cells_of(spec))
    diff = [(a - b) * 100 for a, b in zip(second, first)]
    assert rows["plain"][0] == "-"
    assert rows["+CPD"][0] == f"{statistics.fmean(diff):+.2f} ± {statistics.stdev(diff):.2f} (4)"
    # along the distillation (evaluations at iterations 2 and 3): the last is the table's own
    # evaluation, network for network; the step and the gap are paired over the same networks
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in along.splitlines() if line.startswith("| ")]
    assert table[0][3:] == ["it 2", "it 3"]
    by_row = {}
    for line in table[1:]:
        by_row.setdefault(line[1] or list(by_row)[-1], {})[line[2]] = line[3:]
    assert set(by_row) == {"plain", "+CPD"} and "minus plain, paired" not in by_row["plain"]
    for name, runs in (("plain", first), ("+CPD", second)):
        assert by_row[name]["accuracy (%)"][1] == f"{statistics.fmean(runs) * 100:.2f} ± {statistics.pstdev(runs) * 100:.2f}"
        cell = [c for c in cells_of(spec) if c.method.name == name][0]
        at = {it: [a for s in (0, 1) for h in read_json_file(cell.folder(tmp_path) / f"seed{s}" / "run" / "metrics.json")["history"]
                   if h["iteration"] + 1 == it for a in h["eval_runs"]] for it in (2, 3)}
        step = [(a - b) * 100 for a, b in zip(at[3], at[2])]
        assert by_row[name]["since previous, paired"] == ["-", f"{statistics.fmean(step):+.2f} ± {statistics.stdev(step):.2f}"]
    assert by_row["+CPD"]["minus plain, paired"][1] == f"{statistics.fmean(diff):+.2f} ± {statistics.stdev(diff):.2f}"
    # the initial images were remade once per seed, shared by the rows, and are where the runs began
    init = sorted(p.name for p in (tmp_path / "init" / toy_dataset).iterdir())
    assert init == ["seed0.pt", "seed1.pt"]
    import torch
    plain = [c for c in cells_of(spec) if c.method.name == "plain"][0].folder(tmp_path)
    moved = []
    for s in (0, 1):
        start = torch.load(tmp_path / "init" / toy_dataset / f"seed{s}.pt", weights_only=True)
        final = torch.load(plain / f"seed{s}" / "run" / "synthetic.pt", weights_only=True)["images"]
        moved.append(((final - start).norm() / start.norm()).item())
    assert float(rows["plain"][-2]) == pytest.approx(statistics.fmean(moved), abs=6e-4)


def test_accuracy_along_the_run_is_tabled_and_plotted_from_each_cells_history(tmp_path, toy_dataset):
    from ddtoolbox.bench.report import accuracy_along_runs

    path = tmp_path / "spec.toml"
    path.write_text(TOY_SPEC.format(dataset=toy_dataset).replace("lr_img = 10\n", "lr_img = 10\neval_every = 1\neval_runs = 2\neval_epochs = 2\n")
                    .replace('matcher = "mtt"\n', f'matcher = "mtt"\npaper = {{ {toy_dataset} = {{ 1 = [30.0, 2.0] }} }}\n'))
    spec = read_spec(path)
    run_ipc1 = BenchRunner(spec, tmp_path, ["--device", "cpu", "--quiet"], {"device": "cpu"},
                           build_parser(manager()).commands, Recorder(), progress=False, ipcs=[1])
    assert [(r["ipc"], r["method"]) for r in run_ipc1.run(log=lambda *_: None)] == [(1, "random"), (1, "MTT")]
    mtt = [c for c in cells_of(spec) if c.ipc == 1 and c.method.name == "MTT"][0]
    history = json.loads((mtt.folder(tmp_path) / "run" / "metrics.json").read_text())["history"]
    evaluated = [h for h in history if "eval_runs" in h]
    assert [h["iteration"] for h in evaluated] == [0, 1]

    curves = accuracy_along_runs(spec, tmp_path)
    assert list(curves) == [(toy_dataset, 1, "MTT")]                  # random has no run; IPC 2 did not run
    points = curves[(toy_dataset, 1, "MTT")]
    assert [p[0] for p in points] == [1, 2] and [p[3] for p in points] == [2, 2]
    for (_, mean, std, _), h in zip(points, evaluated):
        assert mean == pytest.approx(sum(h["eval_runs"]) / 2) and std == pytest.approx(abs(h["eval_runs"][0] - h["eval_runs"][1]) / 2)

    written = render(spec, tmp_path)
    table = written["markdown"].read_text()
    assert "## Accuracy along the run" in table and "| it. 1 | it. 2 |" in table
    row = next(line for line in table.splitlines() if line.startswith(f"| {toy_dataset} IPC 1 MTT |"))
    assert f"{points[1][1] * 100:.2f} ± {points[1][2] * 100:.2f}" in row
    assert written["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_curves_without_evaluations_along_the_run(toy_spec):
    runner(toy_spec, Recorder()).run(only={"MTT"}, log=lambda *_: None)
    written = render(toy_spec, toy_spec.path.parent)
    assert "curves" not in written and "Accuracy along the run" not in written["markdown"].read_text()
