"""How far two ranks drift from one process as a distillation goes on (docs/scaling.md).

    python benchmarks/scaling/rounding.py WORK_DIR [ITERATIONS ...]     (default 10 30 60 120)

``--parallel batch`` computes what one process computes, but sums its float32 numbers in another
order; ``--lr-img`` multiplies every difference in the image gradient into the images, and the next
iteration starts from slightly different images, so the difference grows with the run's length.
This distils a tiny Fashion-MNIST set (ConvNet width 8, IPC 2, 5 student steps, the default
``--lr-img``) for each length three ways: one process with one thread (the reference), two ranks
under ``torchrun --nproc-per-node 2`` (one thread each), and, as a control, one process with two
threads, which also sums in another order. It prints, and writes to ``rounding.json`` here, the
largest pixel difference and the relative norm difference of each variant's final images from the
reference's, with the reference's pixel range. Every run starts in a session of its own
(``setsid``; see "Timing on a shared CPU" in docs/benchmarks.md), in an order that alternates.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DDTOOL = str(Path(sys.executable).parent / "ddtool")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python"]
SETTINGS = ["--dataset", "fashion-mnist", "--ipc", "2", "--syn-steps", "5", "--expert-epochs", "1",
            "--max-start-epoch", "2", "--width", "8", "--eval-every", "0", "--checkpoint-every", "0",
            "--device", "cpu", "--quiet", "--overwrite", "--no-report"]
#: variant name -> (launcher prefix, extra flags)
VARIANTS = {"one": ([], ["--threads", "1"]), "two-ranks": (TORCHRUN, ["--threads", "1"]),
            "one-2-threads": ([], ["--threads", "2"])}


def launch(argv: list[str], prefix: list[str] = ()) -> None:
    proc = subprocess.run([*prefix, DDTOOL, *argv], capture_output=True, text=True, start_new_session=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.exit(f"{' '.join([*prefix, 'ddtool', *argv])} failed:\n{proc.stderr[-2000:]}")


def compare(images: torch.Tensor, reference: torch.Tensor) -> dict:
    diff = images - reference
    return {"max_pixel_difference": diff.abs().max().item(), "relative_norm_difference": (diff.norm() /
                                                                                          reference.norm()).item()}


def main(work: Path, lengths: list[int]) -> list[dict]:
    buffer = work / "buffer"
    if not (buffer / "buffer.json").exists():
        launch(["buffer", "--dataset", "fashion-mnist", "--out", str(buffer), "--num-experts", "2", "--epochs", "3",
                "--width", "8", "--train-subset", "200", "--device", "cpu", "--threads", "1", "--quiet"])
    rows = []
    for i, n in enumerate(lengths):
        images = {}
        for name in (list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]):
            prefix, extra = VARIANTS[name]
            out = work / f"it{n}-{name}"
            launch(["distill", "--buffer", str(buffer), "--out", str(out), "--iterations", str(n), *SETTINGS, *extra],
                   prefix)
            images[name] = torch.load(out / "synthetic.pt", weights_only=True)["images"].double()
        ref = images["one"]
        row = {"iterations": n, "pixel_min": ref.min().item(), "pixel_max": ref.max().item(),
               "two_ranks": compare(images["two-ranks"], ref),
               "one_process_2_threads": compare(images["one-2-threads"], ref),
               "load_average": float(open("/proc/loadavg").read().split()[0])}
        rows.append(row)
        print(f"{n:4d} iterations, pixels in [{row['pixel_min']:.2f}, {row['pixel_max']:.2f}]: two ranks "
              f"{row['two_ranks']['max_pixel_difference']:.3g} largest, "
              f"{row['two_ranks']['relative_norm_difference']:.3g} relative norm; one process, 2 threads "
              f"{row['one_process_2_threads']['max_pixel_difference']:.3g}, "
              f"{row['one_process_2_threads']['relative_norm_difference']:.3g} (load {row['load_average']:.2f})",
              flush=True)
    return rows


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    rows = main(work, [int(n) for n in sys.argv[2:]] or [10, 30, 60, 120])
    lr = json.loads((work / f"it{rows[0]['iterations']}-one" / "metrics.json").read_text())["config"]["lr_img"]
    record = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()}, {os.cpu_count()} cores",
              "python": platform.python_version(), "torch": torch.__version__, "lr_img": lr, "settings": SETTINGS,
              "rows": rows}
    (HERE / "rounding.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {HERE / 'rounding.json'}")
