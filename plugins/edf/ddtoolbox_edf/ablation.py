"""The module ablation of the EDF paper (Table 4): neither, CPD, DAE, both; same buffer and seed.

Usage (``ddtool edf-ablation`` and ``python -m ddtoolbox_edf.ablation`` are the same command)::

    ddtool edf-ablation --buffer DIR --out DIR [--matcher datm] [--cpd-alpha 0.25] \\
        [--eval-runs 5 --eval-epochs 1000] [--rows neither,cpd,dae,both] [distill options...]

Every ``ddtool distill`` option is accepted and applies to every row (``--ipc``, ``--iterations``,
``--dae-beta``, ...); the matcher defaults to ``datm``, on which the paper's Table 4 ablates.
Each row is distilled into ``OUT/<row>/`` (with ``--plugin cpd`` and/or ``--plugin dae`` as the
row says) and evaluated on fresh networks with the same seed (the evaluation's default protocol:
soft labels for DATM's learned ones), so every
row trains the same sequence of fresh networks; its result is ``OUT/<row>/eval.json``. A row whose
results exist is not run again (``--force`` redoes it), so an interrupted ablation resumes.

The optional row ``init`` evaluates the initial synthetic images (0 iterations), the starting
point every other row shares. The table is printed and written to ``OUT/ablation.md`` and
``OUT/ablation.json``; unless ``--no-report``, every row gets its run report (``OUT/<row>/report.html``,
with its evaluation) and the rows a comparison page, ``OUT/comparison.html`` (see ``ddtool report``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ddtoolbox import hookimpl
from ddtoolbox.config import DistillConfig, EvalSettings
from ddtoolbox.errors import UsageError
from ddtoolbox.io import atomic_write, read_json, write_json
from ddtoolbox.options import add_arguments

ROWS = {
    #        (DAE,   CPD,   plugins)
    "init": (None, None, ()),
    "neither": (False, False, ()),
    "cpd": (False, True, ("cpd",)),
    "dae": (True, False, ("dae",)),
    "both": (True, True, ("cpd", "dae")),
}
#: the paper's IPC 10 dropout ratio, the ablation's default for its cpd rows
ABLATION_ALPHA = 0.25


def setup(p, pm) -> None:
    p.add_argument("--rows", default="neither,cpd,dae,both",
                   help="comma-separated rows among init, neither, cpd, dae, both (default: the four of Table 4)")
    p.add_argument("--force", action="store_true", help="re-run rows that already have results")
    add_arguments(p, DistillConfig)     # with --no-report: no OUT/<row>/report.html nor OUT/comparison.html
    for plugin, cls in pm.option_classes("distill").items():
        add_arguments(p, cls, title=f"plugin {plugin}", require=False)
    p.set_defaults(matcher="datm", eval_runs=5, cpd_alpha=ABLATION_ALPHA)


def rows_of(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise UsageError(f"--rows: unknown row(s) {bad}; choose among {', '.join(ROWS)}")
    return rows


def run_row(name, config: DistillConfig, options: dict, force: bool, pm) -> dict:
    from ddtoolbox.distillation import distill
    from ddtoolbox.evaluate import evaluate_synthetic

    folder = Path(config.out) / name
    result_file = folder / "eval.json"
    if result_file.exists() and (folder / "row.json").exists() and not force:
        print(f"[{name}] already done ({result_file}); --force re-runs it", flush=True)
        return summarise(name, folder, read_json(folder / "row.json", "ablation row", f"delete {folder} to redo it"))
    plugins = list(ROWS[name][2])
    # the row folder is the ablation's own: an unfinished or --force'd row is distilled afresh
    row_config = config.replace(out=str(folder), overwrite=True, **({"iterations": 0} if name == "init" else {}))
    print(f"[{name}] distill --matcher {row_config.matcher}" + "".join(f" --plugin {p}" for p in plugins), flush=True)
    start = time.time()
    # each row gets the options of its own plugins and its matcher's (an inactive plugin's option is an error)
    owners = {f.name: plugin for plugin, cls in pm.option_classes("distill").items()
              for f in dataclasses.fields(cls)}
    mine = {*plugins, pm.matcher(row_config.matcher).plugin}
    row_options = {k: v for k, v in options.items() if owners.get(k, next(iter(mine))) in mine}
    distill(row_config, plugins=plugins, options=row_options, manager=pm)
    (folder / "report.html").unlink(missing_ok=True)   # an older row's report; the new one follows its eval
    distill_seconds = time.time() - start
    settings = EvalSettings(synthetic=str(folder / "synthetic.pt"), eval_runs=config.eval_runs,
                            eval_epochs=config.eval_epochs, seed=config.seed, device=config.device,
                            data_root=config.data_root, quiet=config.quiet)
    start = time.time()
    result = evaluate_synthetic(settings, report=lambda line: print(f"[{name}] {line}", flush=True))
    write_json(result_file, result)
    record = {"config": row_config.as_dict(), "plugins": plugins,
              "options": {k: v for k, v in options.items() if any(k.startswith(p + "_") for p in plugins)},
              "distill_seconds": round(distill_seconds, 1), "eval_seconds": round(time.time() - start, 1),
              "cpd_alpha": options.get("cpd_alpha") if "cpd" in plugins else None}
    write_json(folder / "row.json", record)
    return summarise(name, folder, record)


def summarise(name, folder, record) -> dict:
    """One table row from a row folder's metrics.json and eval.json."""
    fix = f"delete {folder} to redo the row"
    metrics = read_json(folder / "metrics.json", "row metrics", fix)
    result = read_json(folder / "eval.json", "row evaluation", fix)
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


def table(rows, config: DistillConfig, options: dict) -> str:
    defaults = DistillConfig(out="-").as_dict()
    changed = {k: v for k, v in config.as_dict().items() if v != defaults[k] and k != "out"}
    described = " ".join(f"{k}={v}" for k, v in changed.items()) or "(defaults)"
    lines = [
        f"EDF module ablation (paper Table 4) on {config.matcher}, buffer {config.buffer}, seed {config.seed}, "
        f"distill settings: {described}; CPD alpha {options.get('cpd_alpha')}; "
        f"evaluation: {config.eval_runs} fresh networks x {config.eval_epochs} epochs",
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


def run(args, pm) -> None:
    rows = rows_of(args.rows)
    config = DistillConfig.from_namespace(args)
    options = {f.name: getattr(args, f.name) for cls in pm.option_classes("distill").values()
               for f in dataclasses.fields(cls) if hasattr(args, f.name)}    # every row's, filtered in run_row
    Path(config.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = [run_row(name, config, options, args.force, pm) for name in rows]
    if not args.no_report:
        write_reports(Path(config.out), rows)
    text = table(results, config, options)
    wall = time.time() - start
    print()
    print(text)
    rows_seconds = sum(r.get("distill_seconds", 0) + r.get("eval_seconds", 0) for r in results)
    print(f"\ndistill + eval time of the rows: {rows_seconds:.0f} s; wall time of this invocation: {wall:.0f} s")
    atomic_write(Path(config.out) / "ablation.md", lambda fh: fh.write((text + "\n").encode()))
    write_json(Path(config.out) / "ablation.json", {"config": config.as_dict(), "options": options,
                                                    "rows": results, "wall_seconds": round(wall, 1)})


def write_reports(out: Path, rows: list[str]) -> None:
    """Each row's run report (where it has none yet) and, for several rows, their comparison."""
    from ddtoolbox.report import COMPARISON_NAME, REPORT_NAME, report_after_run, write_report

    for name in rows:
        if not (out / name / REPORT_NAME).exists() and report_after_run(out / name) is None:
            return   # no matplotlib: report_after_run said so once
    if len(rows) == 1:
        print(f"report: {out / rows[0] / REPORT_NAME}", flush=True)
        return
    path = write_report([out / name for name in rows], out / COMPARISON_NAME)
    print(f"reports: {out}/<row>/{REPORT_NAME}; the rows compared: {path}", flush=True)


@hookimpl
def register_commands(register):
    register("edf-ablation", setup=setup, run=run,
             help="EDF's module ablation (paper Table 4): neither, CPD, DAE, both; same buffer and seed",
             description=__doc__.split("\n\n")[0])


def main(argv=None) -> int:
    """``python -m ddtoolbox_edf.ablation``: the same command without going through ``ddtool``."""
    from ddtoolbox.plugins import PluginManager

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        pm = PluginManager()
        parser = argparse.ArgumentParser(prog="python -m ddtoolbox_edf.ablation", description=__doc__.split("\n\n")[0])
        setup(parser, pm)
        run(parser.parse_args(argv), pm)
    except UsageError as exc:
        print(f"ddtool edf-ablation: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
