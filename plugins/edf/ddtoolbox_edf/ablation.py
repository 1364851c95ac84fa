"""The module ablation of the EDF paper (Table 4): neither, CPD, DAE, both; same buffer and seed.

Usage::

    python -m ddtoolbox_edf.ablation --buffer DIR --out DIR [--cpd-alpha 0.25] \\
        [--eval-runs 5 --eval-epochs 1000] [--rows neither,cpd,dae,both] [distill options...]

Every option this script does not know is passed to ``ddtool distill`` for every row (``--ipc``,
``--iterations``, ``--dae-beta``, ...); ``--seed``, ``--device`` and ``--data-root`` go to both
``ddtool distill`` and ``ddtool eval``. Each row is distilled into ``OUT/<row>/`` and evaluated
with the standard protocol (``ddtool eval --synthetic ... --json OUT/<row>/eval.json``) with the
same seed, so every row trains the same sequence of fresh networks. A row whose ``eval.json``
already exists is not run again (``--force`` redoes it), so an interrupted ablation resumes.

The optional row ``init`` evaluates the initial synthetic images (``--iterations 0``), the
starting point every other row shares. The table is printed and written to ``OUT/ablation.md``
and ``OUT/ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ddtoolbox.cli import main as ddtool
from ddtoolbox.io import atomic_write, write_json

ROWS = {
    #        (DAE,   CPD,   plugins)
    "init": (None, None, ()),
    "neither": (False, False, ()),
    "cpd": (False, True, ("cpd",)),
    "dae": (True, False, ("dae",)),
    "both": (True, True, ("cpd", "dae")),
}
SHARED = ("--seed", "--device", "--data-root")


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m ddtoolbox_edf.ablation", description=__doc__.split("\n\n")[0],
                                epilog="Other options are passed to 'ddtool distill' for every row.")
    p.add_argument("--buffer", required=True, help="expert buffer shared by all rows")
    p.add_argument("--out", required=True, help="folder for one sub-folder per row and the table")
    p.add_argument("--rows", default="neither,cpd,dae,both",
                   help="comma-separated rows among init, neither, cpd, dae, both (default: the four of Table 4)")
    p.add_argument("--cpd-alpha", type=float, default=0.25,
                   help="CPD dropout ratio for the cpd and both rows (default 0.25, the paper's IPC 10 value)")
    p.add_argument("--eval-runs", type=int, default=5, help="fresh networks per row (default 5)")
    p.add_argument("--eval-epochs", type=int, default=1000, help="training epochs per network (default 1000)")
    p.add_argument("--force", action="store_true", help="re-run rows that already have results")
    p.add_argument("--seed", default="0", help="seed for distillation and evaluation (default 0)")
    p.add_argument("--device", default="auto", help="device for distillation and evaluation (default auto)")
    p.add_argument("--data-root", default=None, help="dataset folder, as for ddtool")
    args, distill_args = p.parse_known_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        p.error(f"unknown row(s) {bad}; choose among {', '.join(ROWS)}")
    for flag in ("--buffer", "--out", "--plugin", "-p", "--cpd-alpha"):
        if flag in distill_args:
            p.error(f"{flag} is set by the ablation itself")
    return args, rows, distill_args


def shared(args) -> list[str]:
    out = ["--seed", str(args.seed), "--device", args.device]
    if args.data_root:
        out += ["--data-root", args.data_root]
    return out


def run_row(name, args, distill_args) -> dict:
    folder = Path(args.out) / name
    result_file = folder / "eval.json"
    if result_file.exists() and (folder / "row.json").exists() and not args.force:
        print(f"[{name}] already done ({result_file}); --force re-runs it", flush=True)
        return summarise(name, folder, json.loads((folder / "row.json").read_text()))
    _, _, plugins = ROWS[name]
    argv = ["distill", "--buffer", args.buffer, "--out", str(folder), "--matcher", "mtt", *shared(args)]
    for plugin in plugins:
        argv += ["--plugin", plugin]
    argv += ["--cpd-alpha", str(args.cpd_alpha)] if "cpd" in plugins else []
    argv += distill_args
    if name == "init":
        argv += ["--iterations", "0"]   # argparse: the last value wins
    print(f"[{name}] ddtool {' '.join(argv)}", flush=True)
    start = time.time()
    if ddtool(argv) != 0:
        raise SystemExit(f"ablation row '{name}': ddtool distill failed (see above)")
    distill_seconds = time.time() - start
    eval_argv = ["eval", "--synthetic", str(folder / "synthetic.pt"), "--runs", str(args.eval_runs),
                 "--epochs", str(args.eval_epochs), "--json", str(result_file), *shared(args)]
    if "--quiet" in distill_args:
        eval_argv.append("--quiet")
    print(f"[{name}] ddtool {' '.join(eval_argv)}", flush=True)
    start = time.time()
    if ddtool(eval_argv) != 0:
        raise SystemExit(f"ablation row '{name}': ddtool eval failed (see above)")
    record = {"distill_argv": argv, "eval_argv": eval_argv, "distill_seconds": round(distill_seconds, 1),
              "eval_seconds": round(time.time() - start, 1),
              "cpd_alpha": args.cpd_alpha if "cpd" in plugins else None}
    write_json(folder / "row.json", record)
    return summarise(name, folder, record)


def summarise(name, folder, record) -> dict:
    """One table row from a row folder's metrics.json and eval.json."""
    metrics = json.loads((folder / "metrics.json").read_text())
    result = json.loads((folder / "eval.json").read_text())
    hist = metrics["history"]
    areas = [h["dae_area"] for h in hist if "dae_area" in h]
    last = hist[-1] if hist else {}
    return {
        "row": name, "dae": ROWS[name][0], "cpd": ROWS[name][1], "plugins": list(ROWS[name][2]), **record,
        "mean": result["mean"], "std": result["std"], "runs": result["runs"],
        "seconds_per_iteration": metrics["seconds_per_iteration"] if hist else None,
        # the loss that was optimised (over CPD's kept terms) and the plain Eq. 1 loss, last iteration
        "final_loss": last.get("loss"),
        "final_plain_loss": last.get("cpd_full_loss", last.get("loss")),
        "dae_area_first": areas[0] if areas else None,
        "dae_area_final": last.get("dae_area_final"),
    }


def mark(flag) -> str:
    return "—" if flag is None else ("✓" if flag else " ")


def table(rows, args, distill_args) -> str:
    lines = [
        f"EDF module ablation (paper Table 4) — buffer {args.buffer}, seed {args.seed}, "
        f"distill options: {' '.join(distill_args) or '(defaults)'}; CPD alpha {args.cpd_alpha}; "
        f"evaluation: {args.eval_runs} fresh networks x {args.eval_epochs} epochs",
        "",
        "| DAE | CPD | accuracy (%) | final loss (plain Eq. 1) | DAE area (first -> final) | s / iteration |",
        "|:---:|:---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = f"{r['mean'] * 100:.2f} ± {r['std'] * 100:.2f}" + (" (initial images)" if r["row"] == "init" else "")
        loss = "" if r["final_loss"] is None else f"{r['final_loss']:.4f}"
        if r["final_loss"] is not None and r["final_plain_loss"] != r["final_loss"]:
            loss += f" ({r['final_plain_loss']:.4f})"
        elif r["final_loss"] is not None:
            loss += f" ({r['final_loss']:.4f})"
        area = (f"{r['dae_area_first']:.3f} -> {r['dae_area_final']:.3f}"
                if r["dae_area_first"] is not None and r["dae_area_final"] is not None else "")
        spi = "" if r["seconds_per_iteration"] is None else f"{r['seconds_per_iteration']:.3f}"
        lines.append(f"| {mark(r['dae'])} | {mark(r['cpd'])} | {acc} | {loss} | {area} | {spi} |")
    lines.append("")
    lines.append("final loss: the optimised loss of the last iteration (over CPD's kept terms where CPD is on), "
                 "in brackets the plain Eq. 1 loss; s / iteration depends on the machine's load.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rows, distill_args = parse(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = [run_row(name, args, distill_args) for name in rows]
    text = table(results, args, distill_args)
    wall = time.time() - start
    print()
    print(text)
    rows_seconds = sum(r.get("distill_seconds", 0) + r.get("eval_seconds", 0) for r in results)
    print(f"\ndistill + eval time of the rows: {rows_seconds:.0f} s; wall time of this invocation: {wall:.0f} s")
    atomic_write(Path(args.out) / "ablation.md", lambda fh: fh.write((text + "\n").encode()))
    write_json(Path(args.out) / "ablation.json", {"argv": argv, "rows": results, "wall_seconds": round(wall, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
