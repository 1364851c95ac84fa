"""Test helpers for plugin authors (and for ddtoolbox's own tests), loaded as a pytest plugin.

Installing ddtoolbox makes these fixtures available in any pytest run:

* ``toy_dataset``: the name of a registered, in-memory dataset of tiny images (4 classes, 1 x 16 x
  16) whose class evidence is a bright square in one quadrant per class. Nothing is read from disk.
* ``toy_buffer``: a folder of expert trajectories (2 experts x 4 epochs, ConvNet width 8) trained
  on ``toy_dataset``; built once per test session.
* ``ddtool`` (from :mod:`ddtoolbox.cli.testing`): runs the command line in-process,
  ``ddtool("distill", "--buffer", ...)``, and returns a ``CliResult`` with ``code``, ``out`` and
  ``err``.
* :func:`toy_config`: a :class:`ddtoolbox.DistillConfig` sized for the toy buffer, for tests that
  call :func:`ddtoolbox.distill` directly.

A plugin's test can therefore run a real distillation in a second or two, from the command line
or from Python::

    def test_my_plugin_runs(ddtool, toy_dataset, toy_buffer, tmp_path):
        r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer,
                   "--out", tmp_path, "--iterations", "2", *TOY_DISTILL, "--plugin", "my_plugin")
        assert r.code == 0, r.err

    def test_my_plugin_state(toy_buffer, tmp_path):
        run = distill(toy_config(toy_buffer, tmp_path, iterations=2), plugins=["my_plugin"])
        assert run.state["my_plugin"]["count"] == 2
"""

from __future__ import annotations

import pytest
import torch

TOY_NAME = "toy-quadrants"
TOY_CLASSES = 4
TOY_SIZE = 16
#: distill options sized for the toy buffer (its trajectories have 4 epochs)
TOY_DISTILL = ("--ipc", "2", "--syn-steps", "3", "--expert-epochs", "1", "--max-start-epoch", "3",
               "--lr-img", "10", "--device", "cpu", "--quiet", "--threads", "1")
#: the settings of the toy buffer, and the same as ``ddtool buffer`` options
TOY_BUFFER_SETTINGS = dict(num_experts=2, train_epochs=4, width=8, batch_size=32, lr=0.05, device="cpu", quiet=True)
TOY_BUFFER = ("--num-experts", "2", "--epochs", "4", "--width", "8", "--batch-size", "32", "--lr", "0.05",
              "--device", "cpu", "--quiet")


def toy_images(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with a bright 6 x 6 square in quadrant ``label`` (jittered by one pixel)."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * TOY_CLASSES
    labels = torch.arange(TOY_CLASSES).repeat_interleave(n_per_class)
    images = torch.rand(n, 1, TOY_SIZE, TOY_SIZE, generator=g) * 0.3
    half = TOY_SIZE // 2
    for i, c in enumerate(labels.tolist()):
        top, left = (c // 2) * half + 1, (c % 2) * half + 1
        dy, dx = torch.randint(0, 2, (2,), generator=g).tolist()
        images[i, :, top + dy:top + dy + 6, left + dx:left + dx + 6] = 0.9
    return images, labels


def register_toy_dataset() -> str:
    """Register :data:`TOY_NAME` (idempotent) and return its name."""
    from .data import DatasetInfo, register_dataset

    info = DatasetInfo(TOY_NAME, 1, (TOY_SIZE, TOY_SIZE), TOY_CLASSES, (0.3,), (0.3,),
                       tuple(f"quadrant-{i}" for i in range(TOY_CLASSES)))

    def load(folder, split):
        return toy_images(40 if split == "train" else 20, seed=0 if split == "train" else 1)

    register_dataset(TOY_NAME, info, load, replace=True)
    return TOY_NAME


def toy_config(buffer, out, **changes):
    """A :class:`ddtoolbox.DistillConfig` for the toy buffer (:data:`TOY_DISTILL`'s settings).

    One CPU thread (``threads=1``): toy networks gain nothing from more, and on a busy machine extra
    threads spin and make a one-second test take half a minute. Pass ``threads=None`` for torch's default.

    ``buffer=None`` is for matchers that read no expert trajectories (DC, DM): the trajectory
    settings are then left at their defaults, so such a matcher warns about none of them, and the
    image lr is the matcher's own default unless ``lr_img`` is passed.
    """
    from .config import DistillConfig

    values = dict(dataset=TOY_NAME, out=str(out), ipc=2, device="cpu", quiet=True, iterations=2, threads=1)
    if buffer is not None:
        values.update(buffer=str(buffer), syn_steps=3, expert_epochs=1, max_start_epoch=3, lr_img=10.0)
    values.update(changes)
    return DistillConfig(**values)


@pytest.fixture(scope="session")
def toy_dataset() -> str:
    return register_toy_dataset()


@pytest.fixture(scope="session")
def toy_buffer(toy_dataset, tmp_path_factory) -> str:
    from .config import BufferConfig
    from .experts import train_buffer

    out = tmp_path_factory.mktemp("toy-buffer")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: extra threads only add overhead (and spin on busy CPUs)
    try:
        train_buffer(BufferConfig(dataset=toy_dataset, out=str(out), **TOY_BUFFER_SETTINGS))
    finally:
        torch.set_num_threads(before)
    return str(out)
