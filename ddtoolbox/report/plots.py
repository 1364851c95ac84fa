"""The report's plots: PNG bytes from matplotlib (the optional ``plots`` extra).

Each function takes one or several :class:`~ddtoolbox.report.data.RunData` and draws one panel;
with several runs every run is one line in its own colour, so an ablation's rows overlay. The x
axis counts iterations done (the record of iteration ``i``, 0-based, is drawn at ``i + 1``), as the
progress lines and ``--eval-every`` count them; DAE's maps of iteration ``i`` are computed before
its update, on the images after ``i`` iterations, so they are drawn at ``i``.
"""

from __future__ import annotations

import io

from .data import RunData

#: the line to put in the page when matplotlib is missing
MISSING = "the plots need matplotlib, which is not installed: pip install 'ddtoolbox[plots]' and run ddtool report again"


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(title: str, ylabel: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.0, 2.7), dpi=100)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _png(fig, ax, legend: bool) -> bytes:
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _smooth(ys: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y
        if i >= window:
            total -= ys[i - window]
        out.append(total / min(i + 1, window))
    return out


def _style_key(ax, **style) -> None:
    """A grey legend entry that explains a line or marker style shared by every run's colour."""
    ax.plot([], [], color="grey", **style)


def loss(runs: list[RunData]) -> bytes | None:
    """The matching loss (raw and a running mean); CPD's plain Eq. 1 loss dashed where logged."""
    if not any(r.series("loss")[0] for r in runs):
        return None
    fig, ax = _figure("matching loss", "loss")
    several = len(runs) > 1
    smoothed = plain = False
    for i, run in enumerate(runs):
        xs, ys = run.series("loss")
        if not xs:
            continue
        window = max(1, len(ys) // 25)
        label = run.name if several else ("loss" if window == 1 else f"running mean of {window}")
        if window > 1:
            smoothed = True
            ax.plot(xs, ys, color=_colour(i), alpha=0.25, linewidth=0.8)
            ax.plot(xs, _smooth(ys, window), color=_colour(i), linewidth=1.6, label=label)
        else:
            ax.plot(xs, ys, color=_colour(i), linewidth=1.4, marker="." if len(xs) < 30 else None, label=label)
        px, py = run.series("cpd_full_loss")
        if px:
            plain = True
            ax.plot(px, _smooth(py, window), color=_colour(i), linestyle="--", linewidth=1.0,
                    label=None if several else "plain Eq. 1 loss (CPD)")
    if several and plain:
        _style_key(ax, linestyle="--", linewidth=1.0, label="plain Eq. 1 loss (CPD)")
    if several and smoothed:
        ax.set_title("matching loss (faint: raw; solid: running mean)", fontsize=10)
    return _png(fig, ax, legend=True)


def learned_lr(runs: list[RunData]) -> bytes | None:
    if not any(r.series("syn_lr")[0] for r in runs):
        return None
    fig, ax = _figure("learned student learning rate", "lr")
    for i, run in enumerate(runs):
        xs, ys = run.series("syn_lr")
        ax.plot(xs, ys, color=_colour(i), linewidth=1.4, label=run.name if len(runs) > 1 else None)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _png(fig, ax, legend=len(runs) > 1)


def skipped(runs: list[RunData]) -> bytes | None:
    """Skipped updates, counted up over the run (a flat line at 0: the matcher skipped none)."""
    if not any(r.series("skipped")[0] for r in runs):
        return None
    fig, ax = _figure("skipped updates (cumulative)", "updates skipped so far")
    for i, run in enumerate(runs):
        xs, ys = run.series("skipped")
        total, counts = 0, []
        for y in ys:
            total += int(y)
            counts.append(total)
        ax.step(xs, counts, where="post", color=_colour(i), linewidth=1.4,
                label=f"{run.name}: {total} of {len(xs)}" if len(runs) > 1 else f"{total} of {len(xs)} skipped")
    from matplotlib.ticker import MaxNLocator

    most = max((sum(int(y) for y in r.series("skipped")[1]) for r in runs), default=0)
    ax.set_ylim(0, max(1, most) * 1.1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig, ax, legend=True)


def accuracy(runs: list[RunData]) -> bytes | None:
    """In-run evaluations (mean ± std) and, as a diamond at the last iteration, eval.json's result."""
    has_any = any(r.in_run_evals or (r.eval_file is not None and r.evaluation) for r in runs)
    if not has_any:
        return None
    fig, ax = _figure("evaluation accuracy", "test accuracy (%)")
    several, files = len(runs) > 1, False
    for i, run in enumerate(runs):
        xs, means = run.series("eval_mean")
        _, stds = run.series("eval_std")
        if xs:
            ax.errorbar(xs, [m * 100 for m in means], yerr=[s * 100 for s in stds] if len(stds) == len(xs) else None,
                        color=_colour(i), marker="o", markersize=4, capsize=3, linewidth=1.4,
                        label=run.name if several else "in-run (--eval-every)")
        if run.eval_file is not None and run.evaluation is not None:
            files = True
            e = run.evaluation
            ax.errorbar([len(run.history)], [e.mean * 100], yerr=[e.std * 100], color=_colour(i), marker="D",
                        markersize=6, capsize=3, linestyle="none",
                        label=(run.name if not xs else None) if several else run.eval_file.name)
    if several and files:
        _style_key(ax, marker="D", markersize=6, linestyle="none", label="eval.json")
    return _png(fig, ax, legend=True)


def dae_area(runs: list[RunData]) -> bytes | None:
    """DAE's discriminative area at each map refresh, and of the final images."""
    if not any(r.series("dae_area")[0] for r in runs):
        return None
    fig, ax = _figure("discriminative area (DAE)", "share of pixels >= map mean")
    several = len(runs) > 1
    for i, run in enumerate(runs):
        xs, ys = run.series("dae_area", x_offset=0)
        if xs:
            ax.plot(xs, ys, color=_colour(i), marker="o", markersize=3, linewidth=1.4,
                    label=run.name if several else "at refreshes")
        fx, fy = run.series("dae_area_final")
        if fx:
            ax.plot(fx, fy, color=_colour(i), marker="D", markersize=6, linestyle="none",
                    label=None if several else "final images")
    if several:
        _style_key(ax, marker="D", markersize=6, linestyle="none", label="final images")
    return _png(fig, ax, legend=True)


def other(runs: list[RunData], key: str) -> bytes | None:
    """Any other number a plugin logged, one panel per key."""
    if not any(r.series(key)[0] for r in runs):
        return None
    fig, ax = _figure(key, key)
    for i, run in enumerate(runs):
        xs, ys = run.series(key)
        ax.plot(xs, ys, color=_colour(i), linewidth=1.2, marker="." if len(xs) < 30 else None,
                label=run.name if len(runs) > 1 else None)
    return _png(fig, ax, legend=len(runs) > 1)


#: the standard panels, in the order the page shows them: (title, function)
PANELS = (("matching loss", loss), ("learned lr", learned_lr), ("skipped updates", skipped),
          ("evaluation accuracy", accuracy), ("discriminative area", dae_area))
