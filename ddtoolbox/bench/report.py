"""Turn a benchmark's cell results into the paper's kind of table (Markdown, CSV) and a plot.

The table follows the paper's Table 1: one row per method, one column per dataset and IPC,
``mean ± std`` in percent, the best mean of each column in bold, and a last row with the recovery
ratio (best distilled accuracy / full-data accuracy) when full-data results exist. Missing cells
show as ``-`` so a partly finished benchmark can be looked at while it runs; a method that does not run
on a dataset (its ``datasets`` key) shows ``n/a`` there.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..io import atomic_write
from .runner import cell_result, cells_of, full_result
from .spec import Spec


def collect(spec: Spec, out: Path) -> dict:
    """The finished cells as ``{(dataset, ipc, method): result}``, and the full-data results by dataset
    (``full``: accuracies; ``full_records``: with their commands and timing)."""
    cells = {(c.dataset, c.ipc, c.method.name): r for c in cells_of(spec) if (r := cell_result(out, c)) is not None}
    records = {d: r for d in spec.datasets if (r := full_result(out, d)) is not None}
    return {"cells": cells, "full": {d: r["result"] for d, r in records.items()}, "full_records": records}


def _pct(result) -> str:
    if len(result.get("runs", ())) == 1:  # one network has no spread to show
        return f"{result['mean'] * 100:.2f} (1 run)"
    return f"{result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}"


def markdown_table(spec: Spec, results: dict) -> str:
    cells, full = results["cells"], results["full"]
    columns = [(d, ipc) for d in spec.datasets for ipc in spec.ipcs]
    best = {}
    for col in columns:
        means = [(cells[(*col, m.name)]["mean"], m.name) for m in spec.methods if (*col, m.name) in cells]
        if means:
            best[col] = max(means)[1]
    multi = len(spec.datasets) > 1
    head = ["Method"] + [f"{d} IPC {ipc}" if multi else f"IPC {ipc}" for d, ipc in columns]
    rows = []
    for m in spec.methods:
        row = [m.name]
        for col in columns:
            r = cells.get((*col, m.name))
            text = "n/a" if m.datasets is not None and col[0] not in m.datasets else "-" if r is None else _pct(r)
            row.append(f"**{text}**" if r is not None and best.get(col) == m.name else text)
        rows.append(row)
    if full:
        rows.append(["Full data"] + [_pct(full[d]) if d in full else "-" for d, _ in columns])
        ratio = []
        for col in columns:
            d = col[0]
            if d in full and col in best:
                ratio.append(f"{cells[(*col, best[col])]['mean'] / full[d]['mean'] * 100:.1f}%")
            else:
                ratio.append("-")
        rows.append(["Recovery ratio (best / full)"] + ratio)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def scores_table(spec: Spec, results: dict) -> str:
    """DD-Ranking's scores per method and column, ``LRS / ARS`` (means over rounds, as fractions)."""
    cells = results["cells"]
    columns = [(d, ipc) for d in spec.datasets for ipc in spec.ipcs]
    multi = len(spec.datasets) > 1
    head = ["Method"] + [f"{d} IPC {ipc}" if multi else f"IPC {ipc}" for d, ipc in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in spec.methods:
        if m.random:
            continue
        row = [m.name]
        for col in columns:
            scores = (cells.get((*col, m.name)) or {}).get("scores") or {}
            row.append(" / ".join(f"{scores[k]['mean']:.3f}" if k in scores else "-" for k in ("LRS", "ARS")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def csv_table(spec: Spec, results: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "ipc", "method", "mean", "std", "runs", "recovery", "device", "date", "seconds"]
                    + (["lrs", "ars"] if spec.scores else []))
    for c in cells_of(spec):
        r = results["cells"].get((c.dataset, c.ipc, c.method.name))
        if r is None:
            continue
        full = results["full"].get(c.dataset)
        recovery = f"{r['mean'] / full['mean']:.4f}" if full else ""
        scores = r.get("scores") or {}
        writer.writerow([c.dataset, c.ipc, c.method.name, f"{r['mean']:.4f}", f"{r['std']:.4f}", len(r["runs"]),
                         recovery, r.get("device", ""), r.get("date", ""), r.get("seconds", "")]
                        + ([f"{scores[k]['mean']:.4f}" if k in scores else "" for k in ("LRS", "ARS")]
                           if spec.scores else []))
    return buf.getvalue()


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _write_png(plt, fig, title: str, path: Path) -> Path:
    """Title ``fig``, write it to ``path`` atomically as a PNG and free it. A spec's title is often
    longer than a one-panel figure is wide, so it is wrapped to the figure's width, not cut off."""
    import textwrap

    width_chars = max(30, int(fig.get_figwidth() * 72 / 6.5))     # about 6.5 points per character at size 10
    fig.suptitle("\n".join(textwrap.wrap(title, width_chars)), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def plot(spec: Spec, results: dict, path: Path) -> Path | None:
    """Accuracy against IPC, a line per method and a panel per dataset; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    cells, full = results["cells"], results["full"]
    fig, axes = plt.subplots(1, len(spec.datasets), figsize=(5 * len(spec.datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], spec.datasets):
        for m in spec.methods:
            points = [(ipc, cells[(dataset, ipc, m.name)]) for ipc in spec.ipcs if (dataset, ipc, m.name) in cells]
            if points:
                ax.errorbar([p[0] for p in points], [p[1]["mean"] * 100 for p in points],
                            yerr=[p[1]["std"] * 100 for p in points], marker="o", capsize=3, label=m.name)
        if dataset in full:
            ax.axhline(full[dataset]["mean"] * 100, color="grey", linestyle="--", label="full data")
        ax.set_xscale("log")
        ax.set_xticks(spec.ipcs, [str(i) for i in spec.ipcs])
        ax.set_xlabel("images per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:      # a column with nothing finished yet has no lines
            ax.legend(fontsize=8)
    return _write_png(plt, fig, spec.title, path)


def accuracy_along_runs(spec: Spec, out: Path) -> dict:
    """Each cell's ``--eval-every`` evaluations as ``{(dataset, ipc, method): [(iteration, mean, std, n)]}``.

    Iterations count from 1 (an evaluation after iteration 99 is at 100). With several distillation
    seeds the networks of every seed at the same iteration are pooled, as the table pools them.
    """
    import json
    import statistics

    curves = {}
    for c in cells_of(spec):
        folder = c.folder(out)
        files = [folder / "run" / "metrics.json"] + sorted(folder.glob("seed*/run/metrics.json"))
        pooled: dict[int, list] = {}
        for file in files:
            try:
                history = json.loads(file.read_text()).get("history") or []
            except (OSError, ValueError):
                continue
            for record in history:
                runs = record.get("eval_runs") if isinstance(record, dict) else None
                if isinstance(runs, list) and runs:
                    pooled.setdefault(int(record["iteration"]) + 1, []).extend(float(v) for v in runs)
        if pooled:
            curves[(c.dataset, c.ipc, c.method.name)] = [
                (it, statistics.fmean(v), statistics.pstdev(v) if len(v) > 1 else 0.0, len(v))
                for it, v in sorted(pooled.items())]
    return curves


def plot_curves(spec: Spec, results: dict, curves: dict, path: Path) -> Path | None:
    """Accuracy along the run, a panel per dataset and IPC: each method's ``--eval-every`` points, its
    published mean ± spread as a band, and the random and full-data accuracies as flat lines, so a
    short run shows where it is heading. None without matplotlib or curves."""
    if not curves:
        return None
    plt = _pyplot()
    if plt is None:
        return None
    panels = sorted({(d, ipc) for d, ipc, _ in curves}, key=lambda k: (spec.datasets.index(k[0]), k[1]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (dataset, ipc) in zip(axes[0], panels):
        for i, m in enumerate(spec.methods):
            colour = colours[i % len(colours)]
            points = curves.get((dataset, ipc, m.name))
            if points:
                ax.errorbar([p[0] for p in points], [p[1] * 100 for p in points], yerr=[p[2] * 100 for p in points],
                            marker="o", capsize=3, color=colour, label=f"{m.name} (this run)")
            elif (r := results["cells"].get((dataset, ipc, m.name))) is not None:
                ax.axhline(r["mean"] * 100, color=colour, linestyle=":", label=f"{m.name} {r['mean'] * 100:.1f}")
            published = m.paper.get((dataset, ipc))
            if published is not None and (points or (dataset, ipc, m.name) in results["cells"]):
                spread = published[1] if len(published) > 1 else 0.0
                ax.axhspan(published[0] - spread, published[0] + spread, color=colour, alpha=0.15, lw=0)
                ax.axhline(published[0], color=colour, alpha=0.6, lw=1, label=f"{m.name}, published {published[0]:g}")
        if dataset in results["full"]:
            ax.axhline(results["full"][dataset]["mean"] * 100, color="grey", linestyle="--",
                       label=f"full data {results['full'][dataset]['mean'] * 100:.1f}")
        ax.set_xlabel("distillation iteration")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}, IPC {ipc}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _write_png(plt, fig, spec.title, path)


def curves_table(spec: Spec, curves: dict) -> str:
    """The accuracy along each run as Markdown: one row per cell, one column per evaluated iteration."""
    iterations = sorted({p[0] for points in curves.values() for p in points})
    lines = ["| cell | " + " | ".join(f"it. {i}" for i in iterations) + " |",
             "|---|" + "---|" * len(iterations)]
    for c in cells_of(spec):
        points = {p[0]: p for p in curves.get((c.dataset, c.ipc, c.method.name), ())}
        if points:
            cells = [f"{points[i][1] * 100:.2f} ± {points[i][2] * 100:.2f}" if i in points else "-" for i in iterations]
            lines.append(f"| {c.dataset} IPC {c.ipc} {c.method.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def provenance(spec: Spec, results: dict) -> str:
    """Where, when and with what the numbers were made: every cell's record has it; this sums it up."""
    cells = results["cells"]
    if not cells:
        return ""

    def distinct(key):
        return ", ".join(sorted({str(r.get(key)) for r in cells.values() if r.get(key) is not None})) or "-"

    dates = sorted(r["date"][:10] for r in cells.values() if r.get("date"))
    lines = ["## Provenance", "",
             f"- spec: `{spec.path}`; rerun with `ddtool bench {spec.path}` (finished cells are kept)",
             f"- device: {distinct('device')} (host {distinct('host')})",
             f"- dates: {dates[0]} to {dates[-1]}" if dates else "- dates: -",
             f"- software: Python {distinct('python')}, torch {distinct('torch')}, kornia {distinct('kornia')}, "
             f"ddtoolbox {distinct('ddtoolbox')}",
             f"- time: {sum(r.get('seconds', 0) for r in cells.values()) / 60:.1f} min over {len(cells)} cells",
             *(f"- full data, {d}: `{r['command']}` ({r['seconds'] / 60:.1f} min on {r.get('device', '?')})"
               for d, r in results["full_records"].items()),
             "- every cell's exact commands, per-network accuracies and timing: `cells/<dataset>/ipc<N>/<method>/result.json`"]
    return "\n".join(lines) + "\n"


def comparison(spec: Spec, out: Path) -> str:
    """Every cell that has a published value or a result, ours beside the paper's, with a verdict.

    "Within the published spread" means our mean lies within the paper's own ± of its mean: the
    test a reader applies to a reproduction. Our numbers are final-epoch accuracies over fresh
    networks (the std is theirs); a paper that reported the best epoch is marked so by its spec.
    Cells that evaluated along their runs also show the best of those evaluations, which is how MTT
    and DATM picked the sets they reported (their best iteration, chosen on the test set), so the
    reader sees both the honest number and the one the paper's protocol would have printed.
    """
    results = collect(spec, out)["cells"]
    curves = accuracy_along_runs(spec, out)
    rows = [["cell", "ours (%)", "paper (%)", "difference", "verdict", "GPU h (est.)"]]
    if curves:
        rows[0].insert(2, "best along the run (%)")
    for c in cells_of(spec):
        key = (c.dataset, c.ipc)
        published, r = c.method.paper.get(key), results.get((c.dataset, c.ipc, c.method.name))
        if published is None and r is None:
            continue
        ours = "not run yet" if r is None else f"{_pct(r)} ({len(r.get('runs', ()))} networks)"
        spread = published[1] if published is not None and len(published) > 1 else None
        paper = "-" if published is None else f"{published[0]:.1f}" + (f" ± {spread:.1f}" if spread is not None else "")
        diff = verdict = "-"
        if r is not None and published is not None:
            gap = r["mean"] * 100 - published[0]
            diff = f"{gap:+.2f}"
            if spread is None:
                verdict = "the paper gives no spread"
            else:
                verdict = ("within the published spread" if abs(gap) <= spread
                           else f"{'below' if gap < 0 else 'above'} it by {abs(gap) - spread:.2f} points")
        hours = c.method.gpu_hours.get(key)
        rows.append([f"{c.dataset} IPC {c.ipc} {c.method.name}", ours, paper, diff, verdict,
                     "-" if hours is None else f"{hours:g}"])
        if curves:
            points = curves.get((c.dataset, c.ipc, c.method.name))
            best = max(points, key=lambda p: p[1]) if points else None
            rows[-1].insert(2, "-" if best is None else f"{best[1] * 100:.2f} ± {best[2] * 100:.2f} (it. {best[0]})")
    if len(rows) == 1:
        return f"{spec.path} has no published values and no finished cells to compare\n"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    source = f"published values: {spec.source}" if spec.source else "published values: see the spec"
    if curves:
        source += ("\nbest along the run: the highest of the run's --eval-every evaluations, chosen on the test set "
                   "as MTT and DATM chose the sets they reported (optimistic; the verdict uses ours, the final set)")
    return "\n".join([lines[0], *lines[1:], source]) + "\n"


def render(spec: Spec, out: Path) -> dict:
    """Write table.md, table.csv, plot.png and (when cells evaluated along their runs) curves.png under
    ``out``; return what was written."""
    results = collect(spec, out)
    done, total = len(results["cells"]), len(cells_of(spec))
    text = f"# {spec.title}\n\n{markdown_table(spec, results)}\n"
    pooled = (f", pooled over distillation seeds {', '.join(map(str, spec.seeds))} (each seed distilled and "
              f"evaluated separately; std over every seed x network)") if spec.seeds else ""
    text += f"Mean ± std of test accuracy (%) over fresh networks{pooled}; {done} of {total} cells finished.\n\n"
    if spec.scores:
        text += ("## DD-Ranking scores\n\n" + scores_table(spec, results) + "\nLabel-Robust / Augmentation-Robust "
                 "Score (DD-Ranking's formulas on accuracies as fractions, mean over rounds; 'ddtool eval --scores'). "
                 "Random real images are the scores' reference, so they have no row.\n\n")
    curves = accuracy_along_runs(spec, out)
    if curves:
        text += ("## Accuracy along the run\n\n" + curves_table(spec, curves) + "\nMean ± std (%) of the "
                 "'--eval-every' evaluations (fresh networks, the run's protocol) after each listed iteration; "
                 "curves.png plots them beside the published values.\n\n")
    text += provenance(spec, results)
    written = {"markdown": atomic_write(out / "table.md", lambda fh: fh.write(text.encode())),
               "csv": atomic_write(out / "table.csv", lambda fh: fh.write(csv_table(spec, results).encode()))}
    png = plot(spec, results, out / "plot.png")
    if png is not None:
        written["plot"] = png
    png = plot_curves(spec, results, curves, out / "curves.png")
    if png is not None:
        written["curves"] = png
    return written
