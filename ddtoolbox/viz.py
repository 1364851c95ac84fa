"""Pictures of synthetic sets: one row per class, so a glance shows what was learned."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from .data import denormalize
from .io import atomic_write

#: folder of a run's image snapshots (``--snapshot-every``), under its output folder
SNAPSHOT_FOLDER = "snapshots"
MIN_TILE = 64     # small images (28 px) are enlarged so a person can see them
LABEL_WIDTH = 90  # left margin for the class names


def grid_image(images, labels, info, max_per_class: int = 10, overlay=None) -> Image.Image:
    """Arrange images as rows by class; ``overlay`` (N, 1, H, W) in [0, 1] is blended in red."""
    pixels = denormalize(images.detach().cpu(), info).clamp(0, 1)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if overlay is not None:
        heat = torch.zeros_like(pixels)
        heat[:, 0:1] = overlay.detach().cpu().to(pixels.dtype)
        pixels = (0.6 * pixels + 0.4 * heat).clamp(0, 1)
    rows, names = [], []
    for c in range(info.num_classes):
        idx = (labels.cpu() == c).nonzero().flatten()[:max_per_class]
        if len(idx):
            rows.append(pixels[idx])
            names.append(info.class_names[c] if c < len(info.class_names) else str(c))
    ncol = max(len(r) for r in rows)
    tiles = torch.cat([torch.cat([r, torch.ones(ncol - len(r), *r.shape[1:])]) for r in rows])
    h = tiles.shape[-2]
    if h < MIN_TILE:
        tiles = F.interpolate(tiles, scale_factor=MIN_TILE // h or 1, mode="nearest")
    grid = make_grid(tiles, nrow=ncol, padding=2, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    body = Image.fromarray(arr)
    canvas = Image.new("RGB", (body.width + LABEL_WIDTH, body.height), "white")
    canvas.paste(body, (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = body.height / len(rows)
    for i, name in enumerate(names):
        draw.text((4, i * row_h + row_h / 2 - 5), name[:14], fill="black")
    return canvas


def save_image_grid(path, images, labels, info, max_per_class: int = 10, overlay=None):
    """Write :func:`grid_image` as a PNG (atomically)."""
    img = grid_image(images, labels, info, max_per_class, overlay)
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def snapshot_path(out_dir, iterations_done: int):
    """Where a run's snapshot after ``iterations_done`` iterations goes (0: the initial images)."""
    from pathlib import Path

    return Path(out_dir) / SNAPSHOT_FOLDER / f"synthetic_it{iterations_done:06d}.png"
