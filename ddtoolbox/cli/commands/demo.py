"""``ddtool demo``: buffer, distil and evaluate Fashion-MNIST, and show the result beside its baseline.

The default is sized for a 2-core CPU with no GPU (about ten minutes): a narrow ConvNet, a
stratified training subset, short expert trajectories, IPC 1 and a few hundred iterations. ``--full``
switches to the published settings. The demo is made of ordinary ``ddtool`` commands, which it
prints, so a user can rerun or change any step.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from ... import hookimpl
from ...config import CommonSettings
from ...errors import UsageError
from ...options import add_arguments
from ..parsing import build_parser

SMALL = {
    "label": "CPU-sized: ConvNet-3 width 32, 1000 training images per class, 4 experts x 8 epochs, "
             "IPC 1, 200 iterations, evaluation 3 networks x 300 epochs",
    "buffer": ["--width", "32", "--train-subset", "1000", "--num-experts", "4", "--epochs", "8"],
    "distill": ["--ipc", "1", "--iterations", "200", "--syn-steps", "20", "--expert-epochs", "2",
                "--max-start-epoch", "6", "--lr-img", "1000", "--lr-lr", "1e-6"],
    "eval": ["--runs", "3", "--epochs", "300"],
    "ipc": 1,
    "width": 32,
}
FULL = {
    "label": "full size: ConvNet-3 width 128, all 60000 training images, 10 experts x 50 epochs, IPC 10, "
             "5000 iterations, evaluation 5 networks x 1000 epochs (hours on a CPU; minutes on a GPU)",
    "buffer": ["--width", "128", "--num-experts", "10", "--epochs", "50"],
    "distill": ["--ipc", "10", "--iterations", "5000", "--syn-steps", "20", "--expert-epochs", "2",
                "--max-start-epoch", "20", "--lr-img", "1000", "--lr-lr", "1e-5"],
    "eval": ["--runs", "5", "--epochs", "1000"],
    "ipc": 10,
    "width": 128,
}


def setup(p, pm) -> None:
    p.add_argument("--full", action="store_true",
                   help="full-size settings (width 128, all 60k images, paper-like; hours on a CPU)")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's files (default runs/demo)")
    add_arguments(p, CommonSettings)


@hookimpl
def register_commands(register):
    register("demo", setup=setup, run=run_demo,
             help="buffer, distil and evaluate on Fashion-MNIST in minutes on a CPU")


def run_demo(args, pm) -> dict:
    from ...io import read_json, write_json

    from ...outputs import check_writable

    cfg = FULL if args.full else SMALL
    out = check_writable(Path(args.out), what="demo folder")     # before the first line is printed
    common = ["--seed", str(args.seed), "--device", args.device] + (["--quiet"] if args.quiet else [])
    if args.data_root:
        common += ["--data-root", args.data_root]
    buffer_dir, distill_dir = out / "buffer", out / "distill"
    commands = {
        "buffer": ["buffer", "--dataset", "fashion-mnist", "--out", str(buffer_dir), "--resume", *cfg["buffer"], *common],
        "distill": ["distill", "--dataset", "fashion-mnist", "--buffer", str(buffer_dir), "--out", str(distill_dir),
                    "--matcher", "mtt", "--overwrite", *cfg["distill"], *common],
        "eval_distilled": ["eval", "--synthetic", str(distill_dir / "synthetic.pt"), *cfg["eval"],
                           "--json", str(out / "eval_distilled.json"), *common],
        "eval_random": ["eval", "--random-ipc", str(cfg["ipc"]), "--dataset", "fashion-mnist", "--width",
                        str(cfg["width"]), "--lr", "0.01", *cfg["eval"], "--json", str(out / "eval_random.json"), *common],
    }
    print(f"ddtool demo on Fashion-MNIST, {cfg['label']}.")
    if not args.full:
        print("The published settings are one flag away: ddtool demo --full")
    parser = build_parser(pm)
    start = time.time()
    timings = {}
    for step, argv in commands.items():
        print(f"\n$ ddtool {shlex.join(argv)}", flush=True)
        t = time.time()
        step_args = parser.parse_args(argv)
        step_args.plugins = []
        step_args.func(step_args, pm)
        timings[step] = round(time.time() - t, 1)
    distilled = read_json(out / "eval_distilled.json", "demo result", "rerun the demo")
    random = read_json(out / "eval_random.json", "demo result", "rerun the demo")
    total = time.time() - start
    margin = distilled["mean"] - random["mean"]
    spread = max(distilled["std"], random["std"])
    n = len(distilled["runs"])
    print(f"\nResult (Fashion-MNIST test set, IPC {cfg['ipc']}, mean ± std over {n} fresh networks):")
    print(f"  random real images  {random['mean'] * 100:6.2f} ± {random['std'] * 100:.2f}%")
    print(f"  distilled (MTT)     {distilled['mean'] * 100:6.2f} ± {distilled['std'] * 100:.2f}%   "
          f"({margin * 100:+.2f} points, {margin / spread if spread else float('inf'):.1f}x the larger spread)")
    print(f"Time: {total / 60:.1f} min in all ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).")
    print(f"Files: {out}/ (buffer/, distill/synthetic.pt, distill/synthetic.png, distill/metrics.json, eval_*.json)")
    summary = {"settings": cfg["label"], "commands": {k: "ddtool " + shlex.join(v) for k, v in commands.items()},
               "random": random, "distilled": distilled, "seconds": round(total, 1), "step_seconds": timings}
    write_json(out / "demo.json", summary)
    if margin <= 0:
        raise UsageError("the distilled set did not beat random real images; see the metrics under " + str(out))
    return summary
