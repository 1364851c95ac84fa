"""``--compile``: the wiring (recorded mode, resume, cache folder, missing compiler) and how close
compiled training stays to eager training.

The fast tests compile with the ``aot_eager`` backend: Dynamo traces the training step and AOTAutograd
splits it into forward and backward graphs exactly as with Inductor, but no C++ is generated, so they
take a second or two. The ``slow`` tests use Inductor itself (10-60 s of compiling on a busy CPU).
"""

import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ddtoolbox import compiled
from ddtoolbox.evaluate import TrainRecipe, train_on_set
from ddtoolbox.models import create_model, flatten_params
from ddtoolbox.testing import TOY_BUFFER, toy_images

# the toy set has 160 training images: batches of 48 leave a partial batch of 16 in every epoch
PARTIAL = ("--batch-size", "48")
TOY_INFO = SimpleNamespace(channels=1, num_classes=4, image_size=(16, 16))   # what train_on_set reads


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    """Compiled code goes to the test's folder, never the user's cache."""
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path / "torch-compile"))


@pytest.fixture
def dynamo():
    """A clean Dynamo state before and after (compiled code is cached per process)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


@pytest.fixture
def traced(monkeypatch, dynamo):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    return dynamo


def _trajectory(folder, e=0):
    return torch.load(f"{folder}/expert_{e:03d}.pt", weights_only=True)["trajectory"]


def test_experts_with_a_partial_batch_match_eager_and_record_the_mode(ddtool, toy_dataset, tmp_path, traced):
    common = ("buffer", "--dataset", toy_dataset, *TOY_BUFFER, *PARTIAL, "--num-experts", "2", "--epochs", "2",
              "--threads", "1")
    assert ddtool(*common, "--out", tmp_path / "eager").code == 0
    r = ddtool(*common, "--out", tmp_path / "compiled", "--compile")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "compiled" / "buffer.json").read_text())["compile"] is True
    assert json.loads((tmp_path / "eager" / "buffer.json").read_text())["compile"] is False
    for e in (0, 1):
        eager, comp = _trajectory(tmp_path / "eager", e), _trajectory(tmp_path / "compiled", e)
        assert torch.equal(eager[0], comp[0])                        # the same initialisation
        assert (comp - eager).abs().max() < 1e-5 * eager.abs().max()  # 2 epochs x 4 steps, one partial each
    # one graph for batches of 48, one with a symbolic batch for the 16 left over; the second expert
    # (a fresh network) reuses both
    assert traced["stats"]["unique_graphs"] == 2


def test_the_ftd_trainer_perturbing_parameters_in_place_matches_eager(ddtool, toy_dataset, tmp_path, traced):
    """GSAM runs the compiled forward twice per step with the parameters moved in place between the
    two: the compiled graph must read the parameters, not keep a copy."""
    pytest.importorskip("ddtoolbox_ftd")
    common = ("buffer", "--dataset", toy_dataset, *TOY_BUFFER, *PARTIAL, "--num-experts", "1", "--epochs", "2",
              "--trainer", "ftd", "--rho", "0.05")
    assert ddtool(*common, "--out", tmp_path / "eager").code == 0
    r = ddtool(*common, "--out", tmp_path / "compiled", "--compile")
    assert r.code == 0, r.err
    eager, comp = _trajectory(tmp_path / "eager"), _trajectory(tmp_path / "compiled")
    assert not torch.equal(eager[0], eager[-1])
    assert (comp - eager).abs().max() < 1e-5 * eager.abs().max()


def test_a_resumed_buffer_keeps_its_mode(ddtool, toy_dataset, tmp_path, traced):
    out = tmp_path / "buf"
    common = ("buffer", "--dataset", toy_dataset, *TOY_BUFFER, "--num-experts", "1", "--out", out)
    assert ddtool(*common, "--compile").code == 0
    r = ddtool(*common[:-4], "--num-experts", "2", "--out", out, "--resume")
    assert r.code == 2 and "compile" in r.err and len(r.err.strip().splitlines()) == 1
    r = ddtool(*common[:-4], "--num-experts", "2", "--out", out, "--resume", "--compile")
    assert r.code == 0, r.err
    assert len(json.loads((out / "buffer.json").read_text())["experts"]) == 2
    # a buffer from before --compile existed was trained eagerly
    meta = json.loads((out / "buffer.json").read_text())
    del meta["compile"]
    (out / "buffer.json").write_text(json.dumps(meta))
    r = ddtool(*common[:-4], "--num-experts", "3", "--out", out, "--resume", "--compile")
    assert r.code == 2 and "compile" in r.err


def test_evaluation_compiles_once_for_every_network_and_records_it(ddtool, toy_dataset, tmp_path, traced):
    common = ("eval", "--random-ipc", "5", "--dataset", toy_dataset, "--runs", "3", "--epochs", "3",
              "--eval-batch", "8", "--width", "8", "--device", "cpu", "--quiet", "--threads", "1")
    assert ddtool(*common, "--json", tmp_path / "eager.json").code == 0
    r = ddtool(*common, "--json", tmp_path / "compiled.json", "--compile")
    assert r.code == 0, r.err
    eager, comp = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("eager", "compiled"))
    assert comp["compile"] is True and eager["compile"] is False
    assert comp["runs"] == eager["runs"]       # 20 images, batches 8 + 8 + 4: the same test accuracies
    assert traced["stats"]["unique_graphs"] == 2


def test_train_full_records_the_mode(ddtool, toy_dataset, tmp_path, traced, monkeypatch):
    monkeypatch.setenv("DDTOOL_HOME", str(tmp_path))
    r = ddtool("train-full", "--dataset", toy_dataset, "--epochs", "1", "--batch-size", "48", "--width", "8",
               "--device", "cpu", "--quiet", "--compile", "--json", tmp_path / "full.json")
    assert r.code == 0, r.err
    store = json.loads((tmp_path / "full-data.json").read_text())
    assert [e["compile"] for e in store["results"].values()] == [True]


def test_the_partial_batch_is_not_padded(traced):
    """Batch norm sees the whole batch, so padding the last batch to full size (with whatever weights)
    would change its statistics and the step. Compiled and eager agree on 10 images in batches of
    4, 4 and 2, and the 2 got a graph of its own (a symbolic batch size), not a padded one."""
    images, labels = toy_images(3, seed=0)
    recipe = TrainRecipe("ConvNet", {"width": 8, "norm": "batchnorm"}, epochs=2, batch_size=4)
    nets = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        recipe.compile = compile_
        nets.append(train_on_set(recipe, images[:10], labels[:10], 0.1, TOY_INFO, torch.device("cpu")))
    eager, comp = (flatten_params(n) for n in nets)
    assert (comp - eager).abs().max() < 1e-5 * eager.abs().max()
    assert traced["stats"]["unique_graphs"] == 2


def test_the_cache_goes_under_the_user_cache_folder_unless_set(tmp_path):
    """In a fresh process, as a command starts. Importing torchvision (as plugins do) makes Inductor
    write its own default (under /tmp) into the variable, and so does the compiler check: neither
    counts as the user's choice."""
    import subprocess
    import sys

    script = ("import os; from ddtoolbox import compiled; compiled.prepare(False); "
              "print(os.environ.get(compiled.CACHE_ENV)); import torchvision, torch._dynamo; "
              "compiled.prepare(True); print(os.environ[compiled.CACHE_ENV])")
    env = {k: v for k, v in os.environ.items() if k != compiled.CACHE_ENV}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True).stdout.split()
    assert out[1] == str(tmp_path / "cache" / "ddtoolbox" / "torch-compile")
    assert out[0] == "None"                                        # nothing set unless asked
    env[compiled.CACHE_ENV] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True).stdout.split()
    assert out == [str(tmp_path / "mine")] * 2


def test_without_a_cpp_compiler_compile_is_one_line_and_exit_2(ddtool, toy_dataset, tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.delenv("TORCH_INDUCTOR_INSTALL_GXX", raising=False)
    compiled._check_compilers.cache_clear()
    try:
        with inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",)}):
            r = ddtool("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--runs", "1", "--epochs", "1",
                       "--device", "cpu", "--quiet", "--compile", "--json", tmp_path / "r.json")
    finally:
        compiled._check_compilers.cache_clear()
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1 and "C++ compiler" in r.err and "drop --compile" in r.err
    assert not (tmp_path / "r.json").exists()


def test_distill_compiles_the_eval_every_networks_and_warns_without_them(ddtool, toy_dataset, toy_buffer, tmp_path,
                                                                       traced):
    from ddtoolbox.testing import TOY_DISTILL

    common = ("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--iterations", "1", *TOY_DISTILL,
              "--compile")
    r = ddtool(*common, "--out", tmp_path / "plain")
    assert r.code == 0 and "without --eval-every it does nothing" in r.err
    assert traced["stats"]["unique_graphs"] == 0
    r = ddtool(*common, "--out", tmp_path / "evaluated", "--eval-every", "1", "--eval-runs", "1", "--eval-epochs", "2")
    assert r.code == 0, r.err
    assert "--eval-every" not in r.err and traced["stats"]["unique_graphs"] == 1
    metrics = json.loads((tmp_path / "evaluated" / "metrics.json").read_text())
    assert metrics["config"]["compile"] is True and "eval_mean" in metrics["history"][-1]


def test_a_resumed_distillation_keeps_compile(toy_buffer, tmp_path):
    """A checkpoint saves ``config.as_dict()`` and a resume rebuilds the settings from it: a run
    begun with --compile resumes compiled, and an eager run refuses --compile on resume (its
    evaluations so far were eager)."""
    from ddtoolbox.config import DistillConfig
    from ddtoolbox.distillation import check_same_run
    from ddtoolbox.errors import UsageError
    from ddtoolbox.testing import toy_config

    compiled_run = toy_config(toy_buffer, tmp_path, compile=True, eval_every=5)
    saved = compiled_run.as_dict()
    assert DistillConfig.from_values({**saved, "resume": True}, "checkpoint").compile is True
    check_same_run(compiled_run, [], {}, {"config": saved, "plugins": ["mtt"], "options": {}})
    with pytest.raises(UsageError, match="--compile True contradicts"):
        check_same_run(compiled_run, [], {}, {"config": {**saved, "compile": False}, "plugins": ["mtt"],
                                              "options": {}})


def test_on_a_gpu_compile_needs_triton_and_a_c_compiler(monkeypatch, tmp_path):
    import torch.utils._triton as triton_utils

    from ddtoolbox.errors import UsageError

    compiled._check_compilers.cache_clear()
    monkeypatch.setattr(triton_utils, "has_triton", lambda: False)
    with pytest.raises(UsageError, match="needs Triton"):
        compiled._check_compilers("cuda")
    monkeypatch.setattr(triton_utils, "has_triton", lambda: True)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(UsageError, match="C compiler for Triton"):
        compiled._check_compilers("cuda")
    monkeypatch.setenv("CC", "gcc")
    if compiled.shutil.which("gcc"):
        compiled._check_compilers("cuda")
    compiled._check_compilers.cache_clear()


def test_a_bench_spec_turns_compile_on_per_command(tmp_path, toy_dataset):
    """``compile = true`` in ``[buffer]`` / ``[eval]`` reaches those commands, not the distillation."""
    from ddtoolbox.bench.runner import BenchRunner, cells_of
    from ddtoolbox.bench.spec import check_spec, read_spec
    from ddtoolbox.cli import manager
    from ddtoolbox.cli.parsing import build_parser

    path = tmp_path / "spec.toml"
    path.write_text(f"""[bench]\ntitle = "t"\ndatasets = ["{toy_dataset}"]\nipcs = [1]\n
[buffer]\nnum_experts = 1\ntrain_epochs = 4\ncompile = true\n[distill]\niterations = 1\n
[eval]\neval_runs = 1\ncompile = true\n[methods.MTT]\nmatcher = "mtt"\n""")
    spec = read_spec(path)
    parsers = build_parser(manager()).commands
    check_spec(spec, parsers)
    calls = []
    bench = BenchRunner(spec, tmp_path, ["--device", "cpu"], {}, parsers, lambda argv, log: calls.append(argv),
                        progress=False)
    commands = {argv[0]: argv for argv in bench.commands_of(cells_of(spec)[0], tmp_path / "x")}
    assert "--compile" in commands["eval"] and "--compile" not in commands["distill"]
    bench.ensure_buffer(toy_dataset)
    assert calls[0][0] == "buffer" and "--compile" in calls[0]


# ---------------------------------------------------------------------------- Inductor itself


@pytest.mark.slow
def test_inductor_epoch_and_logits_agree_with_eager(dynamo):
    """One epoch of ConvNet-3 width 16 on 100 images in batches of 32 (the last one partial), DSA off:
    Inductor reorders float32 reductions, so the parameters differ at rounding, amplified a little
    by 4 SGD steps. Stated tolerances: parameters within 1e-5 of their largest magnitude, logits of
    the trained networks within 1e-5 of theirs (measured: 1.2e-7 and 3.8e-7, torch 2.14.1, CPU)."""
    images, labels = toy_images(25, seed=0)
    recipe = TrainRecipe("ConvNet", {"width": 16}, epochs=1, batch_size=32)
    nets = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        recipe.compile = compile_
        nets.append(train_on_set(recipe, images, labels, 0.05, TOY_INFO, torch.device("cpu")))
    eager, comp = (flatten_params(n) for n in nets)
    assert not torch.equal(eager, flatten_params(create_model("ConvNet", 1, 4, (16, 16), width=16)))
    assert (comp - eager).abs().max() < 1e-5 * eager.abs().max()
    with torch.no_grad():
        logits = [n.eval()(images) for n in nets]
    assert (logits[1] - logits[0]).abs().max() < 1e-5 * logits[0].abs().max()
    assert F.cross_entropy(logits[1], labels).item() == pytest.approx(F.cross_entropy(logits[0], labels).item(),
                                                                     rel=1e-5)

