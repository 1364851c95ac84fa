"""Run under torchrun by tests/test_parallel.py: the jobs in a JSON file, in one process group.

Each job is ``["cli", [ddtool arguments]]`` (the command line, in-process) or ``["grad", file]``
(the float64 split-unroll gradients of :func:`problem`, written by rank 0). One launch runs them
all, so the test pays torchrun's start-up once.
"""

import json
import os
import sys

import torch
import torch.nn.functional as F  # noqa: F401  (kept for symmetry with the tests)

from ddtoolbox import parallel
from ddtoolbox.augment import DSA
from ddtoolbox.losses import soft_cross_entropy
from ddtoolbox.models import FlatModel, create_model
from ddtoolbox.testing import register_toy_dataset
from ddtoolbox.unroll import unroll, unroll_checkpointed


def problem(dtype=torch.float64, size=8, width=4):
    """A small float64 trajectory-matching problem, the same in every process."""
    torch.manual_seed(0)
    student = FlatModel(create_model("ConvNet", 1, 3, (size, size), width=width, depth=2).to(dtype))
    theta_0 = student.flatten()
    theta_star = theta_0 + 0.1 * torch.randn_like(theta_0)
    images = torch.randn(8, 1, size, size, dtype=dtype, requires_grad=True)
    soft = torch.randn(8, 3, dtype=dtype, requires_grad=True)
    lr = torch.tensor(0.05, dtype=dtype, requires_grad=True)
    return student, theta_0, theta_star, images, soft, lr


def grads(split: bool, steps: int = 5, batch: int = 6, fn=unroll):
    """Outer gradients of (images, soft labels, lr), with DSA, after the ranks' mean (as the loop takes it)."""
    student, theta_0, theta_star, images, soft, lr = problem()
    torch.manual_seed(1)   # every rank draws the same batches and augmentation parameters
    theta_n, _ = fn(student, theta_0, images, soft, lr, steps, batch, soft_cross_entropy, DSA(), split=split)
    loss = ((theta_n - theta_star) ** 2).sum() / ((theta_0 - theta_star) ** 2).sum()
    loss.backward()
    parallel.average_grads([images, soft, lr])
    return {"images": images.grad, "soft": soft.grad, "lr": lr.grad, "theta_n": theta_n.detach()}


def main(path):
    from ddtoolbox.cli import main as ddtool

    register_toy_dataset()
    parallel.setup("cpu", "gloo")
    for kind, arg in json.load(open(path)):
        if kind in ("grad", "grad-checkpointed"):
            result = grads(split=True, fn=unroll if kind == "grad" else unroll_checkpointed)
            if parallel.is_main():
                torch.save(result, arg)
        elif kind == "cli-fails":
            if ddtool(arg) != 2:
                return 1
        else:
            code = ddtool(arg)
            if code:
                return code
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    # This process runs a dozen commands in a row, unlike ddtool's one command per process. After
    # that, torch 2.14's C++ teardown at interpreter exit aborted about one launch in ten here
    # ("terminate called without an active exception"), after the process group had been destroyed;
    # one command per process did not, in 50 launches. So leave as soon as the group is gone.
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
