"""Run reports: one self-contained HTML page per run, or one that compares several runs.

``ddtool report RUN_DIR`` (and ``ddtool distill`` at its end) writes ``RUN_DIR/report.html``: the
settings and provenance, the curves (matching loss, learned lr, skipped updates, evaluation
accuracy, DAE's discriminative area and any other number a plugin logged), the synthetic images
after each snapshot and at the end, DAE's overlays, and the final evaluation. Several run folders
give one comparison page (curves overlaid, a table of final numbers, the settings that differ),
by default ``comparison.html`` in the folder that holds them all.

From Python::

    from ddtoolbox.report import write_report
    write_report(["runs/edf"])                                  # runs/edf/report.html
    write_report(["runs/abl/neither", "runs/abl/both"])         # runs/abl/comparison.html

The plots need matplotlib (``pip install 'ddtoolbox[plots]'``); without it the page says so and
shows everything else. Every picture is embedded, so the file opens anywhere, offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError, debugging, warn
from ..io import atomic_write
from . import plots
from .data import RunData, load_run
from .html import render_comparison, render_run

REPORT_NAME = "report.html"
COMPARISON_NAME = "comparison.html"

__all__ = ["write_report", "report_after_run", "load_run", "RunData", "REPORT_NAME", "COMPARISON_NAME"]


def write_report(run_dirs, out=None) -> Path:
    """Write the report of one run, or the comparison of several, and return its path.

    :param run_dirs: run folders (``ddtool distill --out``); a missing or broken ``metrics.json`` is a
        :class:`~ddtoolbox.UsageError` naming the folder.
    :param out: the HTML file to write (a folder: the default name inside it). Default:
        ``RUN_DIR/report.html`` for one run, ``comparison.html`` in the runs' common folder for several.
    """
    dirs = []
    for d in run_dirs:
        if Path(d).resolve() not in [Path(x).resolve() for x in dirs]:
            dirs.append(d)
    if not dirs:
        raise UsageError("give at least one run folder")
    runs = [load_run(d) for d in dirs]
    plots_ok = plots.available()
    if len(runs) == 1:
        target = _target(out, runs[0].path, REPORT_NAME)
        text = render_run(runs[0], plots_ok)
    else:
        common = Path(os.path.commonpath([r.path.resolve() for r in runs]))
        target = _target(out, common, COMPARISON_NAME)
        labels = _labels(runs, common)
        links = {r.path: os.path.relpath(r.path.resolve() / REPORT_NAME, target.resolve().parent)
                 for r in runs if (r.path / REPORT_NAME).is_file()}
        text = render_comparison(runs, labels, plots_ok, links)
    try:
        return atomic_write(target, lambda fh: fh.write(text.encode()))
    except OSError as exc:
        raise UsageError(f"cannot write the report to {target} ({exc.strerror or exc}); choose another --out") from exc


def report_after_run(run_dir) -> Path | None:
    """The report at the end of ``ddtool distill`` (or an ablation's row): skipped, with one warning,
    when matplotlib is missing, so a finished run never fails for want of its pictures."""
    if not plots.available():
        warn("no report.html written: the run report needs matplotlib (pip install 'ddtoolbox[plots]'); "
             "'ddtool report RUN_DIR' writes one without plots, --no-report stops this warning")
        return None
    try:
        return write_report([run_dir])
    except Exception as exc:   # the run's own outputs are written: a failing report must not fail the run
        if debugging():
            raise
        warn(f"the report of {run_dir} could not be written ({exc!r}); the run's outputs are complete. "
             f"Retry with 'ddtool report {run_dir}' (DDTOOL_DEBUG=1 shows the traceback)")
        return None


def _target(out, folder: Path, name: str) -> Path:
    if out is None:
        return folder / name
    out = Path(out)
    return out / name if out.is_dir() else out


def _labels(runs: list[RunData], common: Path) -> list[str]:
    labels = []
    for r in runs:
        rel = os.path.relpath(r.path.resolve(), common)
        labels.append(r.path.resolve().name if rel == "." else rel)
    if len(set(labels)) < len(labels):
        labels = [str(r.path) for r in runs]
    return labels
