"""Expert training: networks trained from fresh initialisations, every epoch's parameters kept.

Each expert is written as soon as it is trained and the buffer's metadata is rewritten after it, so
an interrupted ``ddtool buffer`` keeps every finished expert and ``--resume`` continues from there.
How one optimisation step is taken is a *trainer* (the built-in ``sgd``, FTD's ``ftd``), registered
by plugins.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__
from .buffer import FORMAT, FORMAT_VERSION, META, Buffer
from .errors import UsageError
from .io import read_json, save_tensors, write_json
from .losses import accuracy
from .models import create_model, flatten_params



def train_experts(*, out, train_set, test_set, model: str, model_options: dict, num_experts: int,
                  epochs: int, lr: float, batch_size: int, augment, step, trainer: str,
                  seed: int, device: torch.device, resume: bool = False, extra_meta: dict | None = None,
                  progress: bool = True) -> Buffer:
    """Train ``num_experts`` networks from fresh initialisations and save their trajectories."""
    out = Path(out)
    info = train_set.info
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ddtoolbox_version": __version__,
        "dataset": info.name, "model": model, "model_options": dict(model_options),
        "channels": info.channels, "image_size": list(info.image_size), "num_classes": info.num_classes,
        "mean": list(info.mean), "std": list(info.std), "train_images": len(train_set),
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "trainer": trainer, "seed": seed,
        "augmentation": "dsa" if augment is not None else "none", **(extra_meta or {}), "experts": [],
    }
    meta_path = out / META
    if meta_path.exists():
        if not resume:
            raise UsageError(f"{out} already holds a buffer; pass --resume to add experts to it or choose another --out")
        old = read_json(meta_path, "buffer metadata", "delete the folder or choose another --out")
        keys = ("dataset", "model", "model_options", "epochs", "lr", "batch_size", "trainer", "trainer_options", "seed",
                "train_images", "zca", "resize", "dsa_crop_ratio")
        changed = [k for k in keys if old.get(k, meta.get(k)) != meta.get(k)]  # keys an older buffer lacks pass
        if changed:
            raise UsageError(f"--resume with different settings ({', '.join(changed)}) than buffer {out}; use the original settings or another --out")
        meta["experts"] = old["experts"]

    x_test, y_test = test_set.images.to(device), test_set.labels.to(device)
    x_all, y_all = train_set.images, train_set.labels
    done = len(meta["experts"])
    steps_per_epoch = (len(train_set) + batch_size - 1) // batch_size
    bar = tqdm(total=(num_experts - done) * epochs, desc="experts", unit="epoch", disable=not progress)
    for e in range(done, num_experts):
        torch.manual_seed(seed * 1000 + e)  # each expert reproducible on its own, also after --resume
        net = create_model(model, info.channels, info.num_classes, info.image_size, **model_options).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0, weight_decay=0)
        snapshots = [flatten_params(net).cpu()]
        start = time.time()
        for epoch in range(epochs):
            net.train()
            perm = torch.randperm(len(train_set))
            total = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                x, y = x_all[idx].to(device), y_all[idx].to(device)
                if augment is not None:
                    x, _ = augment(x)
                total += float(step(net, opt, x, y, F.cross_entropy))
            snapshots.append(flatten_params(net).cpu())
            bar.update(1)
            bar.set_postfix(expert=e, loss=f"{total / steps_per_epoch:.3f}")
        acc = accuracy(net, x_test, y_test)
        name = f"expert_{e:03d}.pt"
        save_tensors(out / name, {"trajectory": torch.stack(snapshots)})
        meta["num_params"] = int(snapshots[0].numel())
        meta["experts"].append({"file": name, "test_accuracy": acc, "train_seconds": round(time.time() - start, 2)})
        write_json(meta_path, meta)
        if progress:
            bar.write(f"expert {e}: test accuracy {acc * 100:.2f}% ({time.time() - start:.0f} s)")
    bar.close()
    return Buffer.open(out)


def train_buffer(config, options: dict | None = None, *, manager=None, progress: bool | None = None) -> Buffer:
    """``ddtool buffer``: train ``config.num_experts`` experts with ``config.trainer`` into ``config.out``.

    :param config: a :class:`ddtoolbox.BufferConfig`.
    :param options: trainer options by field name (e.g. ``{"rho": 0.01}`` for FTD's trainer).
    """
    from .augment import DSA
    from .data import check_same_images, image_record, load_dataset
    from .models import canonical_model_name, model_options
    from .plugins import PluginManager
    from .runtime import resolve_device, seed_everything

    pm = manager or PluginManager()
    progress = (not config.quiet) if progress is None else progress
    trainer = pm.trainer(config.trainer)
    trainer_options = pm.plugin_options("buffer", dict(options or {}), [trainer.plugin]).get(trainer.plugin)
    model = canonical_model_name(config.model)
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    train_set = load_dataset(config.dataset, "train", config.data_root, zca=config.zca)
    if config.train_subset:
        train_set = train_set.subset(n_per_class=config.train_subset, generator=generator)
    test_set = load_dataset(config.dataset, "test", config.data_root, zca=config.zca)
    check_same_images(test_set.info, image_record(train_set.info), f"the {config.dataset} train split",
                      f"prepare {config.dataset} again ('ddtool data prepare')")
    step = pm.call_user(trainer.plugin, f"trainer {config.trainer}", trainer.obj, trainer_options)
    plain_options = {k: v for k, v in vars(trainer_options).items()} if trainer_options is not None else {}
    return train_experts(
        out=config.out, train_set=train_set, test_set=test_set, model=model,
        model_options=model_options(model, config), num_experts=config.num_experts, epochs=config.train_epochs,
        lr=config.lr, batch_size=config.batch_size,
        augment=None if config.no_dsa else DSA(crop_ratio=config.dsa_crop_ratio),
        step=step, trainer=config.trainer, seed=config.seed, device=device, resume=config.resume,
        progress=progress,
        extra_meta={"train_subset_per_class": config.train_subset, "trainer_options": plain_options,
                    "zca": config.zca, "resize": train_set.info.resize, "dsa_crop_ratio": config.dsa_crop_ratio},
    )
