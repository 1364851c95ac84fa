"""``ddtool report``: run folders -> :func:`ddtoolbox.report.write_report` (an HTML page)."""

from __future__ import annotations

from ... import hookimpl

DESCRIPTION = ("Write one self-contained HTML page per run (RUN_DIR/report.html): settings and provenance, curves "
               "of the matching loss, learned lr, skipped updates, evaluation accuracy and DAE's discriminative "
               "area, the synthetic images at each snapshot and at the end, DAE's maps and the final evaluation. "
               "Several RUN_DIRs give one comparison page (curves overlaid, a table of final numbers), by default "
               "comparison.html in their common folder. The plots need matplotlib (pip install 'ddtoolbox[plots]').")


def setup(p, pm) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folder of 'ddtool distill' (or its metrics.json)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the HTML file to write (default RUN_DIR/report.html; for several runs comparison.html in "
                        "their common folder)")


def run(args, pm) -> None:
    from ...errors import warn
    from ...report import plots, write_report

    path = write_report(args.run_dirs, args.out)
    if not plots.available():
        warn(f"the report has no plots: {plots.MISSING}")
    print(f"report: {path}")


@hookimpl
def register_commands(register):
    register("report", setup=setup, run=run, help="write an HTML report of a run, or compare several runs",
             description=DESCRIPTION)
