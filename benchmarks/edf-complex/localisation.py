"""Where do the candidate activation models G look? Grad-CAM localisation on cluttered Fashion-MNIST.

    python benchmarks/edf-complex/localisation.py [--device cpu] [--threads N]

DAE enhances the pixels where G's Grad-CAM map is at or above its mean, so G is only useful if
those pixels are on the object. Cluttered Fashion-MNIST knows each garment's box, and ``ddtool
compdd stats`` scores a G by the share of its map's mass, and of its above-mean pixels, inside the
box (a map that ignores the object scores the box's share of the image, about 20%).

The candidates, each at every block (the default layer is the last one):

* ``expert-w32``: expert 0 of this benchmark's buffer (ConvNet-3 width 32, 8 epochs on 1,000 images
  per class), DAE's default G for the grid;
* ``expert-w128``: one expert of the same recipe at width 128, in ``g/w128``;
* ``resnet18-w16``: a ResNet-18 of base width 16 trained on all 60,000 training images
  (``train-full --save-model``), in ``g/resnet18w16.pt``.

The missing G are trained first (commands below; about 12 and 25 minutes on a 2-core CPU). Each
score is kept in ``localisation/<G>-<layer>.json`` (rerunning skips those present) and the table
goes to ``localisation.md`` with the machine it ran on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASET = "cluttered-fashion-mnist"
CONVNET_LAYERS = [("features.2", "block 1 (40 x 40)"), ("features.6", "block 2 (20 x 20)"),
                  ("features.8", "block 3 conv (10 x 10)"), ("features.10", "block 3, default (10 x 10)")]
RESNET_LAYERS = [("layer1", "layer1 (40 x 40)"), ("layer2", "layer2 (20 x 20)"), ("layer3", "layer3 (10 x 10)"),
                 ("layer4", "layer4, default (5 x 5)")]


def candidates() -> list[dict]:
    g = HERE / "g"
    return [
        {"name": "expert-w32", "what": "ConvNet-3 w32, buffer expert 0", "layers": CONVNET_LAYERS,
         "model": ["--buffer", str(HERE / "buffers" / DATASET), "--expert", "0"],
         "accuracy": lambda: _expert_accuracy(HERE / "buffers" / DATASET),
         "make": None},
        {"name": "expert-w128", "what": "ConvNet-3 w128, same recipe", "layers": CONVNET_LAYERS,
         "model": ["--buffer", str(g / "w128"), "--expert", "0"],
         "accuracy": lambda: _expert_accuracy(g / "w128"),
         "make": ["buffer", "--dataset", DATASET, "--width", "128", "--num-experts", "1", "--train-epochs", "8",
                  "--train-subset", "1000", "--dsa-crop-ratio", "0.125", "--out", str(g / "w128")],
         "made": g / "w128" / "buffer.json"},
        {"name": "resnet18-w16", "what": "ResNet-18 w16, all training images, 3 epochs", "layers": RESNET_LAYERS,
         "model": ["--model", "ResNet18", "--width", "16", "--weights", str(g / "resnet18w16.pt")],
         "accuracy": lambda: json.loads((g / "resnet18w16.json").read_text())["mean"],
         "make": ["train-full", "--dataset", DATASET, "--model", "ResNet18", "--width", "16", "--epochs", "3",
                  "--save-model", str(g / "resnet18w16.pt"), "--json", str(g / "resnet18w16.json"),
                  "--full-results", str(g / "full-data.json")],
         "made": g / "resnet18w16.pt"},
    ]


def _expert_accuracy(buffer: Path) -> float:
    return json.loads((buffer / "buffer.json").read_text())["experts"][0]["test_accuracy"]


def ddtool(*argv) -> None:
    subprocess.run([sys.executable, "-m", "ddtoolbox.cli", *argv], check=True)


def main(common: list[str]) -> None:
    if not (HERE / "buffers" / DATASET / "buffer.json").is_file():
        sys.exit(f"no buffer in {HERE / 'buffers' / DATASET}; run 'ddtool bench {HERE / 'spec.toml'}' first")
    out = HERE / "localisation"
    out.mkdir(exist_ok=True)
    rows = []
    for c in candidates():
        if c["make"] and not c["made"].exists():
            ddtool(*c["make"], "--quiet", *common)
        for layer, where in c["layers"]:
            result = out / f"{c['name']}-{layer}.json"
            if not result.is_file():
                examples = ["--examples", "2"] if layer in ("features.6", "features.10", "layer3", "layer4") else \
                    ["--examples", "0"]
                ddtool("compdd", "stats", "--dataset", DATASET, *c["model"], "--layer", layer, "--out", str(result),
                       "--label", f"{c['name']} {layer}", "--quiet", *examples, *common)
            r = json.loads(result.read_text())
            loc = r["localisation"]
            rows.append((c["what"], c["accuracy"](), where, loc, r))
    import torch

    from ddtoolbox.io import atomic_write
    from ddtoolbox.runtime import environment

    if "--threads" in common:                      # what the scoring commands ran with, for the record
        torch.set_num_threads(int(common[common.index("--threads") + 1]))
    env = environment(torch.device("cuda" if "cuda" in " ".join(common) else "cpu"))
    lines = ["# Where the candidate activation models look (cluttered Fashion-MNIST, test split)", "",
             "| G | its test accuracy | Grad-CAM layer | map mass in the box | above-mean pixels in the box | "
             "box share of the image | constant maps |", "|---|---|---|---|---|---|---|"]
    for what, acc, where, loc, r in rows:
        lines.append(f"| {what} | {acc:.1%} | {where} | {loc['cam_mass_in_box']:.1%} | "
                     f"{loc['above_mean_in_box']:.1%} | {loc['box_area']:.1%} | {loc.get('constant_maps', 0)} |")
    lines += ["", f"{rows[0][4]['images']} test images (the same number per class), each map for the image's true "
              f"class. Written by `localisation.py` on {env['date'][:10]}, {env['device']} (host {env['host']}), "
              f"torch {env['torch']}.", ""]
    text = "\n".join(lines)
    atomic_write(HERE / "localisation.md", lambda fh: fh.write(text.encode()))
    print(text)
    side_by_side(out, HERE / "localisation.png")


SHOWN = [("expert-w32-features.10", "buffer expert w32, default layer"), ("expert-w32-features.6", "buffer expert w32, block 2"),
         ("resnet18-w16-layer4", "ResNet-18 w16, layer4 (default)"), ("resnet18-w16-layer3", "ResNet-18 w16, layer3")]


def side_by_side(folder: Path, path: Path) -> None:
    """The same test images under four of the G (two per class, maps in red), for the eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ddtoolbox.io import atomic_write

    fig, axes = plt.subplots(1, len(SHOWN), figsize=(2.6 * len(SHOWN), 7))
    for ax, (name, title) in zip(axes, SHOWN):
        ax.imshow(plt.imread(folder / f"{name}-maps.png"))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
