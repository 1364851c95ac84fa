"""Activation statistics of a dataset under a model: EDF's Figure 1b, for any dataset.

EDF motivates emphasising discriminative areas by comparing CIFAR-10 with IN1K-CIFAR-10: the
Grad-CAM maps of the complex images have a lower mean activation and a smaller share of pixels
above 0.5. This module computes exactly those two numbers (per image, then mean and spread over the
images) plus the distributions behind them, so two datasets can be put side by side:

* ``mean_activation``: the mean of each image's map, averaged over images;
* ``high_activation_fraction``: the share of each image's pixels with activation >= 0.5 (Comp-DD's
  per-image metric, :mod:`ddtoolbox.compdd.complexity`), averaged over images;
* ``pixel_histogram``: how all map values fall into ``bins`` equal bins of [0, 1] (Figure 13b);
* ``fraction_histogram``: how the per-image fractions fall into the same bins.

Maps are for each image's true class, so the numbers describe the object a label names, not
whatever the model happens to predict.

For a dataset that knows where its object is (``TensorDataset.boxes``, e.g. cluttered
Fashion-MNIST), a localisation score says how much of the map falls on the object:

* ``cam_mass_in_box``: the share of each map's total activation that lies inside the object box;
* ``above_mean_in_box``: the share of each map's pixels at or above that map's mean (DAE's
  "discriminative" pixels, Eq. 4) that lie inside the box;
* ``box_area``: the box's share of the image, i.e. what both scores would be for a map that
  ignores the object (uniform mass, or above-mean pixels scattered evenly).

Constant maps (no positive evidence anywhere) say nothing about where the object is; they are left
out of the localisation means and counted (``constant_maps``).
"""

from __future__ import annotations

import torch

from ddtoolbox.errors import UsageError
from ddtoolbox.io import atomic_write

from .complexity import THRESHOLD, check_threshold, high_activation_fraction, iterate_maps, mean_activation
from .models import CamModel

BINS = 20


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 1, H, W)`` bool masks of ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` (end exclusive)."""
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)).unsqueeze(1)


def localisation(maps: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: ``cam_mass_in_box``, ``above_mean_in_box``, ``box_area`` (float64, ``(N,)``) and
    ``constant`` (bool, ``(N,)``: maps whose scores are undefined and set to NaN)."""
    if maps.dim() != 4 or maps.shape[1] != 1 or boxes.shape != (maps.shape[0], 4):
        raise ValueError(f"need maps (N, 1, H, W) and boxes (N, 4); got {tuple(maps.shape)} and {tuple(boxes.shape)}")
    m = maps.double()
    inside = box_masks(boxes.cpu().long(), m.shape[-2], m.shape[-1]).to(m.device)
    flat, box = m.flatten(1), inside.flatten(1)
    total = flat.sum(1)
    constant = flat.amax(1) == flat.amin(1)
    nan = torch.full_like(total, float("nan"))
    mass = torch.where(constant, nan, (flat * box).sum(1) / torch.where(constant, torch.ones_like(total), total))
    above = flat >= flat.mean(1, keepdim=True)
    share = (above & box).sum(1).double() / above.sum(1).clamp(min=1).double()
    return {"cam_mass_in_box": mass, "above_mean_in_box": torch.where(constant, nan, share),
            "box_area": box.double().mean(1), "constant": constant}


def _localisation_summary(parts: list[dict]) -> dict:
    joined = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    keep = ~joined["constant"]
    out = {"images": int(keep.sum()), "constant_maps": int(joined["constant"].sum())}
    for key in ("cam_mass_in_box", "above_mean_in_box", "box_area"):
        values = joined[key][keep]
        out[key] = float(values.mean()) if len(values) else float("nan")
        out[f"{key}_std"] = float(values.std(unbiased=False)) if len(values) else float("nan")
    return out


def activation_stats(cam: CamModel, batches, targets: torch.Tensor, total: int, device, *,
                     threshold: float = THRESHOLD, bins: int = BINS, progress: bool = True) -> dict:
    """The statistics above, as plain numbers (JSON-ready); with batches of ``(images, labels,
    boxes)``, also ``localisation``."""
    check_threshold(threshold)
    pix = torch.zeros(bins, dtype=torch.float64)
    frac_hist = torch.zeros(bins, dtype=torch.float64)
    means, fracs, located = [], [], []
    for maps, _, *boxes in iterate_maps(cam, batches, targets, total, device, progress, desc="activation stats"):
        if boxes:
            located.append(localisation(maps, boxes[0]))
        pix += torch.histc(maps.double(), bins=bins, min=0.0, max=1.0)
        f = high_activation_fraction(maps, threshold).double()
        frac_hist += torch.histc(f, bins=bins, min=0.0, max=1.0)
        fracs.append(f)
        means.append(mean_activation(maps).double())
    if not fracs:
        raise UsageError("no images to measure; check --split and --max-images")
    m, f = torch.cat(means), torch.cat(fracs)
    edges = [round(i / bins, 6) for i in range(bins + 1)]
    extra = {"localisation": _localisation_summary(located)} if located else {}
    return {
        "images": len(f), "threshold": threshold,
        "mean_activation": float(m.mean()), "mean_activation_std": float(m.std(unbiased=False)),
        "high_activation_fraction": float(f.mean()), "high_activation_fraction_std": float(f.std(unbiased=False)),
        "high_activation_fraction_median": float(f.median()),
        "bin_edges": edges,
        "pixel_histogram": (pix / pix.sum()).tolist(),
        "fraction_histogram": (frac_hist / frac_hist.sum()).tolist(),
        **extra,
    }


def plot_stats(results: list[dict], path) -> None:
    """Side-by-side histograms of several :func:`activation_stats` results (``label`` key each).

    Left: the distribution of activation values over all pixels; right: the distribution of the
    per-image high-activation fraction. The legend carries the two summary numbers.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("the histogram PNG needs matplotlib: pip install 'ddtoolbox[plots]' (the JSON numbers "
                         "were written)") from None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    n = len(results)
    for k, r in enumerate(results):
        edges = r["bin_edges"]
        width = (edges[1] - edges[0]) / (n + 0.5)
        left = [e + k * width for e in edges[:-1]]
        label = (f"{r['label']}: mean {r['mean_activation']:.3f}, "
                 f">= {r['threshold']:g}: {100 * r['high_activation_fraction']:.1f}%")
        axes[0].bar(left, r["pixel_histogram"], width=width, align="edge", label=label, alpha=0.85)
        axes[1].bar(left, r["fraction_histogram"], width=width, align="edge", label=label, alpha=0.85)
    thr = results[0]["threshold"] if results else THRESHOLD
    axes[0].axvline(thr, color="k", lw=0.8, ls="--")
    axes[0].set(xlabel="Grad-CAM activation", ylabel="share of pixels", title="activation values (all pixels)")
    axes[1].set(xlabel=f"share of an image's pixels >= {thr:g}", ylabel="share of images",
                title="high-activation area per image")
    for ax in axes:
        ax.set_xlim(0, 1)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()

    def write(fh):
        fig.savefig(fh, format="png", dpi=120)

    try:
        atomic_write(path, write)
    finally:
        plt.close(fig)


def summary_line(r: dict) -> str:
    sd = r["high_activation_fraction_std"]
    line = (f"{r['label']}: {r['images']} images, mean activation {r['mean_activation']:.4f} "
            f"(sd {r['mean_activation_std']:.4f}), pixels >= {r['threshold']:g}: "
            f"{100 * r['high_activation_fraction']:.2f}% (sd {100 * sd:.2f}%)")
    loc = r.get("localisation")
    if loc:
        line += (f"; in the object box: {100 * loc['cam_mass_in_box']:.1f}% of the map's mass, "
                 f"{100 * loc['above_mean_in_box']:.1f}% of its above-mean pixels (the box covers "
                 f"{100 * loc['box_area']:.1f}% of the image)")
    return line
