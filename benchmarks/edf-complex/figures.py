"""The pictures and diagnostics of the edf-complex benchmark, from the runs its cells kept.

    python benchmarks/edf-complex/figures.py [BENCH_FOLDER] [--drift]

Writes, beside the spec:

* ``area.png``: the discriminative area (``dae_area``: the share of each synthetic image's pixels at
  or above its Grad-CAM map's mean) over the distillation, one line per row, mean over seeds (the
  paper's Figure 5b, for every row: the rows without DAE measure it without using it);
* ``overlays.png``: the final synthetic images of seed 0 of every row with G's maps in red (each
  run's ``dae/maps_final.png``), one block per dataset;
* ``accuracy.png``, when the runs evaluated along the way (``eval_every`` in ``[distill]``): the test
  accuracy over the iterations, one line per row, and in ``diagnostics.md`` the same numbers with what
  each row gained since its previous evaluation, network by network;
* ``diagnostics.md``: each row's accuracy against the first row's on the same seeds and evaluation
  networks (paired, so the spread between networks cancels), and what each row did besides its
  accuracy: the area at the start and end, the share of skipped updates, how much CPD raised the
  loss it kept over the full loss, the learned step size, seconds per iteration.

``--drift`` adds how far each row moved its images: the relative L2 distance of the final images
from the initial ones, and from the first row's final images of the same seed (so "DATM+DAE 0.20"
means DAE put the images 20% of their norm away from where DATM alone took them). The initial images
are remade once per dataset and seed by a 1-iteration run with ``lr_img = 0`` (the rows share them:
the plugins draw nothing at initialisation) and kept under ``init/``. It needs each run's
``synthetic.pt``, which the repository does not keep.

Only finished cells are used, so it can be run while the grid is still going.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ddtoolbox.bench.runner import cell_result, cells_of  # noqa: E402
from ddtoolbox.bench.spec import read_spec  # noqa: E402
from ddtoolbox.io import atomic_write  # noqa: E402


def seed_runs(folder: Path, cell) -> list[tuple[int, Path]]:
    """``(seed, run folder)`` of every seed of a finished cell."""
    record = cell_result(folder, cell)
    if record is None:
        return []
    base = cell.folder(folder)
    return [(s, base / f"seed{s}" / "run") for s in record.get("seeds", [])
            if (base / f"seed{s}" / "run" / "metrics.json").is_file()]


@functools.cache
def metrics_of(run: Path) -> dict:
    """A run's ``metrics.json``, read once however many tables and plots use it."""
    return json.loads((run / "metrics.json").read_text())


def area_curve(metrics: dict) -> list[tuple[int, float]]:
    history = metrics["history"]
    points = [(h["iteration"], h["dae_area"]) for h in history if "dae_area" in h]
    final = [h["dae_area_final"] for h in history if "dae_area_final" in h]
    if final:
        points.append((history[-1]["iteration"] + 1, final[-1]))
    return points


DEFAULT_G = ("expert", 0, ())


def activation_model(metrics: dict) -> tuple:
    """Which G (and layers) a run's DAE maps came from: its area is only comparable with the same G."""
    dae = metrics.get("options", {}).get("dae", {})
    return dae.get("dae_model", "expert"), dae.get("dae_expert", 0), tuple(dae.get("dae_layer") or ())


def diagnostics(metrics: dict) -> dict:
    history = [h for h in metrics["history"] if h.get("iteration", -1) >= 0 and "loss" in h]
    curve = area_curve(metrics)
    kept = [h["loss"] / h["cpd_full_loss"] for h in history if h.get("cpd_full_loss")]
    return {"area_start": curve[0][1] if curve else None, "area_end": curve[-1][1] if curve else None,
            "skipped": sum(bool(h.get("skipped")) for h in history) / max(len(history), 1),
            "cpd_loss_ratio": statistics.fmean(kept) if kept else None,
            "final_loss": statistics.fmean(h["loss"] for h in history[-10:]) if history else None,
            "final_lr": metrics.get("final_lr"), "seconds_per_iteration": metrics.get("seconds_per_iteration")}


def initial_images(folder: Path, dataset: str, seed: int, run: Path):
    """The images a run of ``dataset`` / ``seed`` started from: a 1-iteration copy of ``run`` whose
    image step is 0 (cached in ``folder/init``)."""
    import tempfile
    from dataclasses import fields

    import torch

    from ddtoolbox.config import DistillConfig
    from ddtoolbox.distillation import distill

    cached = folder / "init" / dataset / f"seed{seed}.pt"
    if not cached.is_file():
        metrics = metrics_of(run)
        names = {f.name for f in fields(DistillConfig)}
        config = {k: v for k, v in metrics["config"].items() if k in names}
        matcher_options = {k: v for plugin, opts in metrics["options"].items() if plugin == config["matcher"]
                           for k, v in opts.items()}
        with tempfile.TemporaryDirectory() as out:
            config.update(out=out, iterations=1, lr_img=0.0, quiet=True, resume=False, overwrite=True, eval_every=0)
            distill(DistillConfig(**config), options=matcher_options, progress=False)
            images = torch.load(Path(out) / "synthetic.pt", weights_only=True)["images"]
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda fh: torch.save(images, fh))
    return torch.load(cached, weights_only=True)


def drift(folder: Path, cells) -> dict:
    """``{(dataset, method): (distance from the initial images, distance from the first row's)}``,
    relative L2, mean over seeds."""
    import torch

    finals, first = {}, {}
    for cell, runs in cells:
        for seed, run in runs:
            if (run / "synthetic.pt").is_file():
                finals[(cell.dataset, cell.method.name, seed)] = (
                    torch.load(run / "synthetic.pt", weights_only=True)["images"], run)
                first.setdefault(cell.dataset, cell.method.name)
    out = {}
    for cell, runs in cells:
        own, off = [], []
        for seed, _ in runs:
            if (cell.dataset, cell.method.name, seed) not in finals:
                continue
            images, run = finals[(cell.dataset, cell.method.name, seed)]
            start = initial_images(folder, cell.dataset, seed, run)
            own.append(((images - start).norm() / start.norm()).item())
            base = finals.get((cell.dataset, first[cell.dataset], seed))
            if base is not None and first[cell.dataset] != cell.method.name:
                off.append(((images - base[0]).norm() / base[0].norm()).item())
        out[(cell.dataset, cell.method.name)] = (_mean(own), _mean(off))
    return out


def paired_accuracy(folder: Path, cells) -> dict:
    """Each row's accuracy minus the first row's on the same seed and evaluation network, in points,
    as ``"mean ± sd (n)"``. Every row trains the same fresh networks (seeded by seed and network), so
    these differences are free of the spread between networks and seeds that the table's std carries."""
    results = {(c.dataset, c.method.name): cell_result(folder, c) for c, _ in cells}
    first, out = {}, {}
    for cell, _ in cells:
        first.setdefault(cell.dataset, cell.method.name)
        if first[cell.dataset] == cell.method.name:
            continue
        mine, ref = results[(cell.dataset, cell.method.name)], results[(cell.dataset, first[cell.dataset])]
        if mine.get("seeds") != ref.get("seeds") or len(mine["runs"]) != len(ref["runs"]):
            continue
        out[(cell.dataset, cell.method.name)] = f"{_paired(mine['runs'], ref['runs'])} ({len(mine['runs'])})"
    return out


def area_under_own_g(folder: Path, cells) -> list[str]:
    """For each row whose DAE used a saved network as G: the first row's final images measured with
    that G, so its area curve has a baseline (the first row logged its area with the default G).
    The maps and the area come from the DAE plugin's own functions, as in the run."""
    from types import SimpleNamespace

    import torch
    from ddtoolbox_edf import maps as M

    from ddtoolbox.teacher import load_teacher

    first, lines = {}, []
    for cell, runs in cells:
        first.setdefault(cell.dataset, (cell, runs))
        dae = metrics_of(runs[0][1]).get("options", {}).get("dae", {})
        model = dae.get("dae_model", "expert")
        if model == "expert" or first[cell.dataset][0] is cell:
            continue
        records = [torch.load(run / "synthetic.pt", weights_only=True)
                   for _, run in first[cell.dataset][1] if (run / "synthetic.pt").is_file()]
        if not records:
            continue
        meta = records[0]["meta"]
        info = SimpleNamespace(name=meta["dataset"], channels=meta["channels"], image_size=meta["image_size"],
                               num_classes=meta["num_classes"], mean=meta["mean"], std=meta["std"],
                               resize=meta.get("resize"), zca=meta.get("zca", False))
        net, _ = load_teacher(model, info, "cpu", role="DAE activation model", option="dae_model")
        net = M.prepare_model(net)
        _, layers = M.resolve_layers(net, dae.get("dae_layer") or None)
        areas = [M.discriminative_area(M.gradcam_maps(net, r["images"], r["labels"], layers)).mean().item()
                 for r in records]
        own = _mean(area_curve(metrics_of(run))[-1][1] for _, run in runs)
        lines.append(f"- {cell.dataset}, {cell.method.name}: with this row's G ({model}, "
                     f"{'+'.join(dae.get('dae_layer') or ['default layer'])}), the final images of "
                     f"{first[cell.dataset][0].method.name} have a discriminative area of {statistics.fmean(areas):.1%} "
                     f"against this row's {own:.1%}.")
    return lines


def accuracy_during(runs) -> dict:
    """``{iteration: [accuracy of network r of seed s, ...]}`` from the ``--eval-every`` evaluations of
    a cell's runs, in (seed, network) order, at the iterations every seed evaluated. The evaluation
    networks are seeded by (seed, network) alone, so the lists of two rows, or of two iterations of
    one row, pair up network by network."""
    per_seed = []
    for _, run in runs:
        per_seed.append({h["iteration"] + 1: h["eval_runs"] for h in metrics_of(run)["history"] if "eval_runs" in h})
    common = set.intersection(*(set(d) for d in per_seed)) if per_seed else set()
    return {it: [a for d in per_seed for a in d[it]] for it in sorted(common)}


def _paired(mine: list[float], ref: list[float]) -> str:
    diff = [(a - b) * 100 for a, b in zip(mine, ref)]
    sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
    return f"{statistics.fmean(diff):+.2f} ± {sd:.2f}"


def accuracy_section(folder: Path, cells, datasets) -> str:
    """``accuracy.png`` and the Markdown tables of the test accuracy along the distillation, for runs
    made with ``eval_every``: each row's accuracy, what it gained since its previous evaluation (the
    same networks: has it stopped moving?), and its difference from the first row at that iteration."""
    curves = {(c.dataset, c.method.name): accuracy_during(runs) for c, runs in cells}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return ""
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for (d, name), points in curves.items():
            if d != dataset:
                continue
            its = list(points)
            means = [statistics.fmean(points[i]) * 100 for i in its]
            sds = [statistics.pstdev(points[i]) * 100 for i in its]     # as the bench table's
            ax.errorbar(its, means, yerr=sds, marker="o", capsize=3, label=name)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("test accuracy (%), mean ± sd over networks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Test accuracy along the distillation\n(the same fresh networks at every point)", fontsize=9)
    fig.tight_layout()
    _save(fig, folder / "accuracy.png")

    its = sorted({i for points in curves.values() for i in points})
    head = ["dataset", "row", "what", *(f"it {i}" for i in its)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = {}
    for (dataset, name), points in curves.items():
        ref = curves[(dataset, first.setdefault(dataset, name))]
        acc, step, gap = [], [], []
        previous = None
        for i in its:
            if i not in points:
                for column in (acc, step, gap):
                    column.append("-")
                continue
            a = points[i]
            acc.append(f"{statistics.fmean(a) * 100:.2f} ± {statistics.pstdev(a) * 100:.2f}")
            step.append("-" if previous is None else _paired(a, previous))
            gap.append(_paired(a, ref[i]) if first[dataset] != name and i in ref and len(ref[i]) == len(a) else "-")
            previous = a
        lines.append("| " + " | ".join([dataset, name, "accuracy (%)", *acc]) + " |")
        lines.append("| " + " | ".join(["", "", "since previous, paired", *step]) + " |")
        if first[dataset] != name:
            lines.append("| " + " | ".join(["", "", f"minus {first[dataset]}, paired", *gap]) + " |")
    n = len(next(iter(curves.values()))[its[0]]) if its else 0
    return ("\n## Test accuracy along the distillation ([accuracy.png](accuracy.png))\n\n"
            f"From the runs' `--eval-every` evaluations: accuracy mean ± std over the {n} (seed, network) "
            "pairs as in the bench table; differences are paired, mean ± sd, in points.\n\n" + "\n".join(lines) + "\n")


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _fmt(v, pattern):
    return "-" if v is None else pattern.format(v)


def main(folder: Path, with_drift: bool = False) -> None:
    spec = read_spec(folder / "spec.toml")
    cells = [(c, runs) for c in cells_of(spec) if (runs := seed_runs(folder, c))]
    if not cells:
        sys.exit(f"no finished cells under {folder}; run 'ddtool bench {folder / 'spec.toml'}' first")
    datasets = [d for d in spec.datasets if any(c.dataset == d for c, _ in cells)]

    # a row whose maps come from another G is on another scale: it gets a panel of its own
    curves = {}
    for cell, runs in cells:
        metrics = [metrics_of(run) for _, run in runs]
        g = activation_model(metrics[0])
        panel = cell.dataset if g == DEFAULT_G else f"{cell.dataset}\nG: {Path(str(g[0])).stem} {'+'.join(g[2])}"
        points = [area_curve(m) for m in metrics]
        its = [i for i, _ in points[0]]
        means = [statistics.fmean(c[k][1] for c in points) * 100 for k in range(len(its))]
        curves.setdefault(panel, []).append((f"{cell.method.name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})",
                                             its, means))
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (panel, lines_) in zip(axes[0], curves.items()):
        for label, its, means in lines_:
            ax.plot(its, means, marker="o", label=label)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("iteration (last point: the final images)")
        ax.set_ylabel("discriminative area (% of pixels)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Share of pixels at or above their Grad-CAM map's mean (G: buffer expert 0, default layer, "
                 "unless the panel names another)", fontsize=9)
    fig.tight_layout()
    _save(fig, folder / "area.png")

    found = {(c.dataset, c.method.name): runs[0] for c, runs in cells
             if (runs[0][1] / "dae" / "maps_final.png").is_file()}
    methods = [m.name for m in spec.methods if any((d, m.name) in found for d in datasets)]
    fig, axes = plt.subplots(len(methods), len(datasets), figsize=(5.2 * len(datasets), 4.6 * len(methods)),
                             squeeze=False)
    for r, method in enumerate(methods):
        for c, dataset in enumerate(datasets):
            ax = axes[r, c]
            ax.axis("off")
            if (dataset, method) in found:
                seed, run = found[(dataset, method)]
                ax.imshow(plt.imread(run / "dae" / "maps_final.png"))
                ax.set_title(f"{dataset}\n{method} (seed {seed})", fontsize=9)
    fig.suptitle("Final synthetic images with G's Grad-CAM maps in red", fontsize=10)
    fig.tight_layout()
    _save(fig, folder / "overlays.png", dpi=80)

    moved = drift(folder, cells) if with_drift else {}
    paired = paired_accuracy(folder, cells)
    head = ["dataset", "row", "accuracy - first row's, paired", "area start", "area end", "skipped updates",
            "CPD kept / full loss", "loss (last 10)", "final step size", "s / iteration"]
    if moved:
        head += ["image drift from start", "distance from first row"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell, runs in cells:
        d = [diagnostics(metrics_of(run)) for _, run in runs]
        pick = {k: _mean(x[k] for x in d) for k in d[0]}
        row = [cell.dataset, cell.method.name, paired.get((cell.dataset, cell.method.name), "-"),
               _fmt(pick["area_start"], "{:.1%}"), _fmt(pick["area_end"], "{:.1%}"),
               _fmt(pick["skipped"], "{:.1%}"), _fmt(pick["cpd_loss_ratio"], "{:.3f}"),
               _fmt(pick["final_loss"], "{:.3f}"), _fmt(pick["final_lr"], "{:.4f}"),
               _fmt(pick["seconds_per_iteration"], "{:.1f}")]
        if moved:
            own, off = moved.get((cell.dataset, cell.method.name), (None, None))
            row += [_fmt(own, "{:.3f}"), _fmt(off, "{:.3f}")]
        lines.append("| " + " | ".join(row) + " |")
    text = ("# edf-complex: what each row did besides its accuracy\n\n"
            "Means over the seeds of each finished cell, from every run's `metrics.json` "
            "(written by `figures.py`).\n\n" + "\n".join(lines) + "\n")
    text += accuracy_section(folder, cells, datasets)
    if with_drift:
        baseline = area_under_own_g(folder, cells)
        if baseline:
            text += "\nRows with their own G, against the first row's images under that G:\n\n" + "\n".join(baseline) + "\n"
    atomic_write(folder / "diagnostics.md", lambda fh: fh.write(text.encode()))
    print(text)
    written = ["area.png", "overlays.png", *(["accuracy.png"] if "## Test accuracy" in text else []), "diagnostics.md"]
    print(f"wrote {', '.join(written)} in {folder}")


def _save(fig, path: Path, dpi: int = 110) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    plt.close(fig)


if __name__ == "__main__":
    from ddtoolbox.errors import UsageError

    args = [a for a in sys.argv[1:] if a != "--drift"]
    try:
        main(Path(args[0]) if args else Path(__file__).parent, with_drift="--drift" in sys.argv[1:])
    except UsageError as exc:
        sys.exit(f"figures.py: {exc}")
