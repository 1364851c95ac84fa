"""Test accuracy of every saved epoch of a buffer's experts: the curve that says whether they converged.

A buffer keeps each expert's parameters after every epoch (its trajectory), so the curve costs one
pass over the test split per snapshot and no retraining.

    python benchmarks/edf-real/expert_curve.py BUFFER --dataset NAME [--data-root DIR] [--zca] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ddtoolbox.buffer import Buffer
from ddtoolbox.data import load_dataset
from ddtoolbox.losses import accuracy


def curve(buffer_dir, dataset: str, data_root=None, zca: bool = False) -> list[list[float]]:
    buf = Buffer.open(buffer_dir)
    test = load_dataset(dataset, "test", data_root, zca=zca)
    out = []
    with torch.no_grad():
        for e in range(buf.num_experts):
            out.append([accuracy(buf.expert_model(e, k).eval(), test.images, test.labels)
                        for k in range(buf.epochs + 1)])
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("buffer")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--zca", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = curve(a.buffer, a.dataset, a.data_root, a.zca)
    for e, row in enumerate(rows):
        print(f"expert {e}: " + " ".join(f"{100 * v:.1f}" for v in row), file=sys.stdout)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"buffer": a.buffer, "dataset": a.dataset, "test_accuracy_by_epoch": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
