"""``ddtool select``: a coreset of real images, written as a set ``eval``, ``report`` and ``bench`` take.

A coreset is IPC real training images per class chosen by a rule (:mod:`ddtoolbox.coreset`). It
is written exactly like a distilled set, ``synthetic.pt`` + ``synthetic.png`` + ``metrics.json``
published under a manifest, with ``matcher`` ``coreset-METHOD`` and the learning rate of the
random-real baseline (0.01), so every tool that reads a distilled set reads a coreset, and a
comparison between them differs only in the images.

Features for herding and k-center are the inputs of the network's final linear layer (its
penultimate features) on the un-augmented training images, from a trained network: an expert's
final snapshot in a buffer (``--buffer DIR --expert K``) or a network from ``ddtool train-full
--save-model`` (``--network FILE``). Forgetting trains its own network and watches it learn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from .config import ImageSettings, NetworkSettings, CommonSettings
from .coreset import forgetting_counts, herding, kcenter_greedy, most_forgotten
from .errors import UsageError
from .options import non_negative_int, option, positive_int, positive_learning_rate
from .runtime import honours_threads

METHODS = ("random", "herding", "kcenter", "forgetting")
#: the methods that rank images by a trained network's features
FEATURE_METHODS = ("herding", "kcenter")
#: the training lr recorded in the set: the random-real baseline's default in 'ddtool eval'
REAL_IMAGES_LR = 0.01


@dataclass(kw_only=True)
class SelectSettings(ImageSettings, NetworkSettings, CommonSettings):
    """``ddtool select``: IPC real images per class, chosen by a coreset rule."""

    method: str = option(help="random, herding (Welling 2009), kcenter (k-center greedy, Sener & Savarese 2018) "
                              "or forgetting (Toneva et al. 2019)", choices=METHODS)
    out: str = option(help="output folder for synthetic.pt, synthetic.png, metrics.json")
    dataset: str = option("fashion-mnist", "dataset name (default fashion-mnist)")
    ipc: int = option(1, "images per class (default 1)", type=positive_int)
    buffer: str | None = option(None, "buffer folder: features from an expert's final snapshot (herding, kcenter), "
                                      "and the architecture eval trains by default")
    expert: int = option(0, "which expert of --buffer (default 0)", type=non_negative_int)
    network: str | None = option(None, "network file from 'ddtool train-full --save-model': features from it "
                                       "instead of a buffer expert", metavar="FILE")
    model: str = option("ConvNet", "architecture without --buffer/--network: the one forgetting trains and eval "
                                   "uses by default (default ConvNet)", metavar="NAME")
    kcenter_start: str = option("mean", "kcenter's first image: mean (default: the image closest to the class mean) "
                                        "or random (drawn with --seed)", choices=("mean", "random"))
    epochs: int = option(10, "forgetting: epochs of the training run it watches (default 10)", type=positive_int)
    lr: float = option(0.01, "forgetting: SGD learning rate (default 0.01)", type=positive_learning_rate)
    batch_size: int = option(256, "forgetting: batch size (default 256)", type=positive_int)
    overwrite: bool = option(False, "replace a set already in --out (default: refuse)")

    def check(self) -> None:
        if self.buffer and self.network:
            raise UsageError("give one of --buffer DIR or --network FILE, not both")
        if self.method in FEATURE_METHODS and not (self.buffer or self.network):
            raise UsageError(f"--method {self.method} ranks images by a trained network's features; give --buffer "
                             f"DIR (an expert's final snapshot) or --network FILE (from 'ddtool train-full "
                             f"--save-model')")
        if self.method == "forgetting" and self.network:
            raise UsageError("--method forgetting trains its own network; drop --network (--buffer only picks the "
                             "architecture)")


@torch.no_grad()
def penultimate_features(net: torch.nn.Module, images: torch.Tensor, device, batch_size: int = 500) -> torch.Tensor:
    """The input of ``net.classifier`` (every ddtoolbox model's final linear layer) for each image."""
    head = getattr(net, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise UsageError(f"{type(net).__name__} has no final linear layer 'classifier' to take features before; "
                         f"use a ddtoolbox model")
    seen = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].flatten(1).cpu()))
    try:
        net.eval()
        for i in range(0, len(images), batch_size):
            net(images[i:i + batch_size].to(device))
    finally:
        hook.remove()
    return torch.cat(seen)


def forgetting_history(net: torch.nn.Module, images, labels, *, epochs: int, lr: float, batch_size: int,
                       device, generator: torch.Generator) -> torch.Tensor:
    """Train ``net`` on ``(images, labels)`` and record, per epoch, whether each example's prediction
    in its training mini-batch was right (Toneva et al.: accuracy at each presentation), as a
    (epochs, n) bool tensor. No augmentation: an example is judged on itself."""
    n = len(images)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    correct = torch.zeros(epochs, n, dtype=torch.bool)
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for b in range(0, n, batch_size):
            idx = perm[b:b + batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            logits = net(x)
            correct[epoch, idx] = (logits.argmax(1) == y).cpu()
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return correct


def choose(method: str, ipc: int, labels: torch.Tensor, num_classes: int, *, features=None, counts=None,
           generator: torch.Generator | None = None, kcenter_start: str = "mean") -> torch.Tensor:
    """Dataset indices of ``ipc`` images per class, grouped by class in class order."""
    picked = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < ipc:
            raise UsageError(f"class {c} has {len(idx)} training images, fewer than --ipc {ipc}; lower --ipc")
        if method == "random":
            local = torch.randperm(len(idx), generator=generator)[:ipc].tolist()
        elif method == "herding":
            local = herding(features[idx], ipc)
        elif method == "kcenter":
            first = int(torch.randint(len(idx), (1,), generator=generator)) if kcenter_start == "random" else None
            local = kcenter_greedy(features[idx], ipc, first=first)
        elif method == "forgetting":
            local = most_forgotten(counts[idx], ipc)
        else:
            raise UsageError(f"unknown --method {method}; choose one of {', '.join(METHODS)}")
        picked.append(idx[torch.tensor(local, dtype=torch.long)])
    return torch.cat(picked)


@honours_threads
def select_coreset(settings: SelectSettings, report=None) -> dict:
    """``ddtool select``: choose, then publish the set in ``settings.out``; returns its metadata."""
    from .buffer import Buffer
    from .data import image_record, load_dataset
    from .io import save_tensors, write_json
    from .models import canonical_model_name, create_model, model_options
    from .outputs import OutputLock, check_writable, publish
    from .runtime import environment, resolve_device, seed_everything
    from .teacher import load_teacher
    from .viz import save_image_grid

    started = time.time()
    device = resolve_device(settings.device)
    out = check_writable(settings.out)
    if (out / "synthetic.pt").exists() and not settings.overwrite:
        raise UsageError(f"{out} already holds a set (synthetic.pt); pass --overwrite to replace it, or choose "
                         f"another --out")
    train_set = load_dataset(settings.dataset, "train", settings.data_root, zca=settings.zca)
    info = train_set.info
    generator = seed_everything(settings.seed)
    net, source = None, None
    if settings.buffer:
        buf = Buffer.open(settings.buffer)
        buf.check_compatible(info.name, info=info)
        if settings.expert >= buf.num_experts:
            raise UsageError(f"buffer {buf.path} has {buf.num_experts} experts (0..{buf.num_experts - 1}); "
                             f"choose --expert below {buf.num_experts}")
        model, options = buf.meta["model"], dict(buf.meta["model_options"])
        if settings.method in FEATURE_METHODS:
            net = buf.expert_model(settings.expert, -1, device)
        source = {"buffer": str(buf.path), "expert": settings.expert, "epoch": buf.epochs}
    elif settings.network:
        net, record = load_teacher(settings.network, info, device, role="feature network", option="--network")
        model, options = record["model"], dict(record["model_options"])
        source = {"network": str(settings.network)}
    else:
        model = canonical_model_name(settings.model)
        options = model_options(model, settings)
    features = counts = None
    if settings.method in FEATURE_METHODS:
        features = penultimate_features(net, train_set.images, device)
    elif settings.method == "forgetting":
        fresh = create_model(model, info.channels, info.num_classes, info.image_size, **options).to(device)
        history = forgetting_history(fresh, train_set.images, train_set.labels, epochs=settings.epochs,
                                     lr=settings.lr, batch_size=settings.batch_size, device=device,
                                     generator=generator)
        counts = forgetting_counts(history)
        source = {**(source or {}), "trained": {"model": model, "epochs": settings.epochs, "lr": settings.lr,
                                                "batch_size": settings.batch_size}}
    labels_all = train_set.labels.cpu()
    chosen = choose(settings.method, settings.ipc, labels_all, info.num_classes, features=features, counts=counts,
                    generator=generator, kcenter_start=settings.kcenter_start)
    images = train_set.images[chosen.to(train_set.images.device)].detach().cpu().clone().float()
    labels = labels_all[chosen].clone()
    seconds = time.time() - started
    coreset = {"method": settings.method, "indices": chosen.tolist(), "features": source,
               "kcenter_start": settings.kcenter_start if settings.method == "kcenter" else None}
    if counts is not None:
        coreset["forgetting_events"] = [None if c == float("inf") else int(c) for c in counts[chosen].tolist()]
    meta = {
        "format": "ddtoolbox-synthetic", "ddtoolbox_version": __version__,
        "dataset": info.name, "channels": info.channels, "image_size": list(info.image_size),
        "num_classes": info.num_classes, "class_names": list(info.class_names),
        "mean": list(info.mean), "std": list(info.std), "ipc": settings.ipc,
        "model": canonical_model_name(model), "model_options": options,
        "matcher": f"coreset-{settings.method}", "plugins": [], "iterations": 0, "seed": settings.seed,
        "buffer": settings.buffer, "seconds": round(seconds, 2), "soft_labels": False,
        **image_record(info), "dsa_crop_ratio": settings.dsa_crop_ratio, "coreset": coreset,
        "published": True,
    }
    record = {"images": images, "labels": labels, "lr": torch.tensor(REAL_IMAGES_LR), "meta": meta}
    metrics = {"meta": meta, "environment": environment(device), "config": settings.as_dict(), "options": {},
               "final_lr": REAL_IMAGES_LR, "seconds_per_iteration": 0.0, "history": []}
    with OutputLock(out):
        publish(out, {
            "synthetic.pt": lambda path: save_tensors(path, record),
            "synthetic.png": lambda path: save_image_grid(path, train_set.unwhiten(images), labels, info),
            "metrics.json": lambda path: write_json(path, metrics),
        }, what=f"select {settings.method}")
    if report is not None:
        report(f"{settings.method}: {len(labels)} real images ({settings.ipc} per class of {info.name}) in "
               f"{Path(out) / 'synthetic.pt'}")
    return meta
