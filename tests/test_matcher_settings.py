"""Matchers' own defaults and unused options; the common flags of plugin commands; small contract points
(--no-report on --resume, toy_config's one thread)."""

import json
import sys

import pytest
import torch

from ddtoolbox import distill
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.config import DistillConfig
from ddtoolbox.errors import PluginError
from ddtoolbox.testing import TOY_DISTILL, toy_config

MEAN_IMAGE = '''
"""A toy matcher with its own defaults and unused options."""
import torch
from ddtoolbox import Matcher, hookimpl


class MeanImage(Matcher):
    name = "mean-image"
    description = "toy: per-class mean images"
    needs_buffer = False
    defaults = {"lr_img": 5.0}
    unused = ("syn_steps", "expert_epochs", "lr_lr")

    def start(self, run):
        ds = self.train_set
        self.means = torch.stack([ds.images[ds.class_indices(c)].mean(0) for c in range(ds.info.num_classes)])

    def loss_terms(self, run):
        syn = torch.stack([run.images[run.labels == c].mean(0) for c in range(len(self.means))])
        num = ((syn - self.means) ** 2).flatten()
        return num, torch.ones_like(num)


@hookimpl
def register_matchers(register):
    register(MeanImage)
'''

COMMAND = '''
import torch
from ddtoolbox import hookimpl
from ddtoolbox.command import add_common_options, common_options


def setup(parser, manager):
    add_common_options(parser)


def run(args, manager):
    with common_options(args) as ctx:
        print(ctx.device, torch.get_num_threads(), ctx.progress, ctx.settings.seed, torch.rand(()).item(),
              torch.rand((), generator=ctx.generator).item())


@hookimpl
def register_commands(register):
    register("seeded", setup=setup, run=run, help="print the common settings")
'''

STOPPER = '''
import os, signal
from ddtoolbox import hookimpl

@hookimpl
def on_iteration(run):
    if os.environ.get("STOP_AT") == str(run.iteration):
        os.kill(os.getpid(), signal.SIGTERM)
'''


@pytest.fixture
def modules(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, source in (("mean_image", MEAN_IMAGE), ("seeded_cmd", COMMAND), ("stop_at", STOPPER)):
        (tmp_path / f"{name}.py").write_text(source)
    yield
    for name in ("mean_image", "seeded_cmd", "stop_at"):
        sys.modules.pop(name, None)


def mean_config(toy_dataset, out, **changes):
    return DistillConfig(**{**dict(dataset=toy_dataset, out=str(out), matcher="mean-image", ipc=1, iterations=2,
                                   device="cpu", quiet=True, threads=1), **changes})


def test_a_matcher_default_fills_a_setting_left_at_the_cores(modules, toy_dataset, tmp_path):
    run = distill(mean_config(toy_dataset, tmp_path / "a"), plugins=["mean_image"])
    assert run.config.lr_img == 5.0 and run.optimisers["images"].param_groups[0]["lr"] == 5.0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["config"]["lr_img"] == 5.0                            # what the run used is recorded
    given = distill(mean_config(toy_dataset, tmp_path / "b", lr_img=7.0), plugins=["mean_image"])
    assert given.config.lr_img == 7.0                                    # a value given wins


def test_a_flag_given_on_the_command_line_wins_even_at_the_cores_default(modules, toy_dataset, tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("STOP_AT", "0")
    r = run_cli("distill", "--dataset", toy_dataset, "--matcher", "mean-image", "--plugin", "mean_image",
                "--plugin", "stop_at", "--out", out, "--ipc", "1", "--iterations", "2", "--device", "cpu",
                "--threads", "1", "--quiet", "--lr-img", "1000")
    assert r.code == 143, r.err
    monkeypatch.delenv("STOP_AT")
    r = run_cli("distill", "--resume", "--out", out)           # the checkpoint's 1000 is not re-resolved
    assert r.code == 0, r.err
    assert json.loads((out / "metrics.json").read_text())["config"]["lr_img"] == 1000.0
    run = distill(mean_config(toy_dataset, tmp_path / "py"), plugins=["mean_image"], explicit={"lr_img"})
    assert run.config.lr_img == 1000.0


def test_unused_options_are_not_recorded_and_warned_about_when_given(modules, toy_dataset, tmp_path):
    r = run_cli("distill", "--dataset", toy_dataset, "--matcher", "mean-image", "--plugin", "mean_image",
                "--out", tmp_path / "a", "--ipc", "1", "--iterations", "2", "--device", "cpu", "--threads", "1",
                "--syn-steps", "7")
    assert r.code == 0, r.err
    assert "--matcher mean-image does not use --syn-steps; ignoring it" in r.err
    assert "learned lr" not in r.out and "lr=" not in r.err                # neither the summary nor the bar
    assert "loss=" in r.err                                              # the bar was there
    meta = torch.load(tmp_path / "a" / "synthetic.pt", weights_only=True)["meta"]
    assert meta["syn_steps"] is None and meta["expert_epochs"] is None
    assert meta["unused"] == ["expert_epochs", "lr_lr", "syn_steps"]
    assert meta["ipc"] == 1


def test_help_lists_the_matchers_own_settings(modules):
    out = run_cli("distill", "--help", "--plugin", "mean_image").out
    assert "--matcher mean-image: defaults --lr-img 5; does not use --syn-steps --expert-epochs --lr-lr" in out
    assert "--matcher dm: does not use --syn-steps" in out                 # the installed example


def test_a_matcher_cannot_default_a_runtime_setting(modules, toy_dataset, tmp_path, monkeypatch):
    cls = __import__("mean_image").MeanImage
    monkeypatch.setattr(cls, "defaults", {"threads": 4})
    with pytest.raises(PluginError, match="declares defaults or unused options for threads"):
        distill(mean_config(toy_dataset, tmp_path), plugins=["mean_image"])


def test_plugin_commands_get_the_common_flags(modules):
    r = run_cli("seeded", "--plugin", "seeded_cmd", "--seed", "3", "--threads", "1", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    device, threads, progress, seed, global_draw, own_draw = r.out.split()
    assert (device, threads, progress, seed) == ("cpu", "1", "False", "3")
    torch.manual_seed(3)
    assert float(global_draw) == pytest.approx(torch.rand(()).item())      # seeded as every ddtool command is
    assert float(own_draw) == pytest.approx(torch.rand((), generator=torch.Generator().manual_seed(3)).item())
    assert "--threads" in run_cli("seeded", "--help", "--plugin", "seeded_cmd").out
    bad = run_cli("seeded", "--plugin", "seeded_cmd", "--device", "tpu")
    assert bad.code == 2 and bad.err.count("\n") == 1


def test_no_report_is_kept_on_resume(modules, toy_dataset, toy_buffer, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("STOP_AT", "0")
    r = run_cli("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out, *TOY_DISTILL,
                "--iterations", "3", "--threads", "1", "--plugin", "stop_at", "--no-report")
    assert r.code == 143, r.err
    assert "SIGTERM after iteration 0 (1 of 3 done" in r.err
    monkeypatch.delenv("STOP_AT")
    r = run_cli("distill", "--resume", "--out", out)
    assert r.code == 0, r.err
    assert (out / "synthetic.pt").exists() and not (out / "report.html").exists()


def test_toy_config_pins_one_thread(toy_buffer, tmp_path):
    assert toy_config(toy_buffer, tmp_path).threads == 1
    assert toy_config(toy_buffer, tmp_path, threads=None).threads is None


def test_toy_config_without_a_buffer_suits_a_bufferless_matcher(modules, toy_dataset, toy_buffer, tmp_path, capsys):
    config = toy_config(None, tmp_path / "a", dataset=toy_dataset, matcher="mean-image")
    assert config.buffer is None and config.syn_steps == DistillConfig.syn_steps
    run = distill(config, plugins=["mean_image"])
    assert run.config.lr_img == 5.0                                      # the matcher's default, not the toy 10
    assert "does not use" not in capsys.readouterr().err
    distill(toy_config(toy_buffer, tmp_path / "b", matcher="mean-image"), plugins=["mean_image"])
    assert "does not use --syn-steps" in capsys.readouterr().err         # what the buffer's settings would give


def test_an_unknown_matcher_says_how_a_module_that_is_not_installed_is_loaded(toy_dataset, tmp_path):
    r = run_cli("distill", "--dataset", toy_dataset, "--matcher", "mean-image", "--out", tmp_path, "--device", "cpu")
    assert r.code == 2 and "unknown matcher 'mean-image'; available: " in r.err
    assert "--plugin MODULE" in r.err and r.err.count("\n") == 1
