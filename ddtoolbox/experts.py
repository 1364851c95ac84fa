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
from .checkpoint import rng_state, set_rng_state
from .errors import UsageError, warn
from .finite import require_finite_accuracy, require_finite_network
from .io import load_tensors, read_json, save_tensors, sha256, write_json
from .losses import accuracy
from .models import create_model, flatten_params, load_flat
from . import compiled, parallel
from .outputs import OutputLock, check_writable
from .runtime import honours_threads



def partial_name(e: int) -> str:
    return f"expert_{e:03d}.partial.pt"


def train_experts(*, out, train_set, test_set, model: str, model_options: dict, num_experts: int,
                  epochs: int, lr: float, batch_size: int, augment, step, trainer: str,
                  seed: int, device: torch.device, resume: bool = False, extra_meta: dict | None = None,
                  progress: bool = True) -> Buffer:
    """Train ``num_experts`` networks from fresh initialisations and save their trajectories.

    Expert ``e`` draws from a generator seeded with ``(seed, e)`` alone, so it is the same network
    whichever experts exist already. After every epoch its progress is saved
    (``expert_NNN.partial.pt``, with the random generators' state), so ``--resume`` loses at most
    one epoch, and it keeps every existing expert whose file checks out and retrains the others.
    """
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
    num_params = sum(p.numel() for p in create_model(model, info.channels, info.num_classes, info.image_size,
                                                     **model_options).parameters())
    meta["num_params"] = int(num_params)
    main, world = parallel.is_main(), parallel.world()
    parallel.agree(lambda: check_writable(out, need_bytes=num_experts * (epochs + 1) * num_params * 4 * 2,
                                          what="buffer folder"), "buffer folder")
    lock = OutputLock(out)
    parallel.agree(lock.__enter__, "output lock")    # under torchrun only rank 0 holds the lock
    try:
        if world > 1:
            parallel.check_folder_visible(out, "--out")
        kept = parallel.agree(lambda: _existing_experts(out, meta, resume), "existing experts")
        kept = parallel.broadcast_object(kept)
        x_test, y_test = test_set.images.to(device), test_set.labels.to(device)
        mine = [e for e in range(num_experts) if e not in kept and e % world == parallel.rank()]
        bar = tqdm(total=len(mine) * epochs, desc="experts", unit="epoch", disable=not (progress and main))
        # Rounds of `world` experts: expert e trains on rank e % world; after each round rank 0 records
        # the finished ones in buffer.json, so an interrupted run keeps them whatever the world size.
        for first in range(0, num_experts, world):
            e = first + parallel.rank()
            entry = None
            if e < num_experts and e not in kept:
                start = time.time()
                net, trajectory = _train_one(e, out, meta, train_set, augment, step, device, bar, resume)
                acc = accuracy(net, x_test, y_test)
                require_finite_accuracy(acc, f"expert {e}",
                                        f"lower --lr (now {lr:g}); experts finished before it are kept in {out}")
                name = f"expert_{e:03d}.pt"
                save_tensors(out / name, {"trajectory": trajectory})
                (out / partial_name(e)).unlink(missing_ok=True)
                entry = (e, {"file": name, "test_accuracy": acc, "train_seconds": round(time.time() - start, 2),
                             "sha256": sha256(out / name)})     # a damaged file is found as damaged, not as NaN
                if acc <= 1.5 / info.num_classes:
                    warn(f"expert {e} ended at chance accuracy ({acc * 100:.1f}% on {info.num_classes} classes): "
                         f"its trajectory teaches nothing; lower --lr (now {lr:g}) or check the data")
            done = [d for d in parallel.gather_objects(entry) if d is not None]
            for number, record in done:
                if progress and main:
                    bar.write(f"expert {number}: test accuracy {record['test_accuracy'] * 100:.2f}% "
                              f"({record['train_seconds']:.0f} s{f', rank {number % world}' if world > 1 else ''})")
            if done:
                kept.update(dict(done))
                meta["experts"] = [kept[i] for i in sorted(kept)]
                if main:
                    write_json(meta_path, meta)
        bar.close()
        parallel.barrier()    # buffer.json is complete before any rank opens it
    finally:
        if main:
            lock.__exit__(None, None, None)
    return Buffer.open(out)


def _existing_experts(out: Path, meta: dict, resume: bool) -> dict[int, dict]:
    """The experts a resumed buffer keeps: listed in buffer.json, present, and of the right shape."""
    meta_path = out / META
    if not meta_path.exists():
        return {}
    if not resume:
        raise UsageError(f"{out} already holds a buffer; pass --resume to add experts to it or choose another --out")
    old = read_json(meta_path, "buffer metadata", "delete the folder or choose another --out")
    keys = ("dataset", "model", "model_options", "epochs", "lr", "batch_size", "trainer", "trainer_options", "seed",
            "train_images", "zca", "resize", "source", "dsa_crop_ratio", "compile")
    old = {"compile": False, **old}   # buffers from before --compile were trained eagerly
    changed = [k for k in keys if old.get(k, meta.get(k)) != meta.get(k)]  # keys an older buffer lacks pass
    if changed:
        raise UsageError(f"--resume with different settings ({', '.join(changed)}) than buffer {out}; use the "
                         f"original settings or another --out")
    kept = {}
    expected = (meta["epochs"] + 1, meta["num_params"])
    for entry in old.get("experts") or []:
        name = entry.get("file") if isinstance(entry, dict) else None
        number = _expert_number(name)
        if number is None:
            continue
        try:
            traj = load_tensors(out / name, "expert trajectory", "").get("trajectory")
        except UsageError:
            traj = None
        intact = not isinstance(entry.get("sha256"), str) or ((out / name).is_file()
                                                             and sha256(out / name) == entry["sha256"])
        if intact and isinstance(traj, torch.Tensor) and tuple(traj.shape) == expected and torch.isfinite(traj).all():
            kept[number] = entry
        else:
            warn(f"expert file {out / name} is missing or damaged; training expert {number} again")
    return kept


def _expert_number(name) -> int | None:
    if not isinstance(name, str) or not (name.startswith("expert_") and name.endswith(".pt")) or "/" in name:
        return None
    digits = name[len("expert_"):-len(".pt")]
    return int(digits) if digits.isdigit() else None


def _train_one(e: int, out: Path, meta: dict, train_set, augment, step, device, bar, resume: bool):
    """Train expert ``e`` (continuing its partial file when resuming); return the net and its trajectory."""
    info = train_set.info
    torch.manual_seed(meta["seed"] * 1000 + e)  # each expert reproducible on its own, also after --resume
    net = create_model(meta["model"], info.channels, info.num_classes, info.image_size,
                       **meta["model_options"]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=meta["lr"], momentum=0, weight_decay=0)
    snapshots = [flatten_params(net).cpu()]
    partial = out / partial_name(e)
    if resume and partial.exists():
        done = _load_partial(partial, meta)
        if done is not None:
            snapshots = list(done["snapshots"])
            load_flat(net, snapshots[-1].to(device))
            set_rng_state(done["rng"])
            bar.update(len(snapshots) - 1)
    batch_size, epochs = meta["batch_size"], meta["epochs"]
    x_all, y_all = train_set.images, train_set.labels
    steps_per_epoch = (len(train_set) + batch_size - 1) // batch_size
    forward = compiled.training_module(net, bool(meta.get("compile")))
    for epoch in range(len(snapshots) - 1, epochs):
        net.train()
        perm = torch.randperm(len(train_set))
        total = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            if augment is not None:
                x, _ = augment(x)
            total += float(step(forward, opt, x, y, F.cross_entropy))
        require_finite_network(net, f"expert {e} in epoch {epoch + 1}",
                               f"lower --lr (now {meta['lr']:g}); experts finished before it are kept in {out}")
        snapshots.append(flatten_params(net).cpu())
        if epoch < epochs - 1:
            save_tensors(partial, {"snapshots": torch.stack(snapshots), "rng": rng_state()})
        bar.update(1)
        bar.set_postfix(expert=e, loss=f"{total / steps_per_epoch:.3f}")
    return net, torch.stack(snapshots)


def _load_partial(path: Path, meta: dict) -> dict | None:
    try:
        done = load_tensors(path, "partial expert", "")
    except UsageError:
        return None
    snaps = done.get("snapshots")
    if not (isinstance(snaps, torch.Tensor) and snaps.dim() == 2 and snaps.shape[1] == meta["num_params"]
            and 1 <= len(snaps) <= meta["epochs"] and isinstance(done.get("rng"), dict)):
        return None
    return {"snapshots": snaps.unbind(0), "rng": done["rng"]}


@honours_threads
def train_buffer(config, options: dict | None = None, *, manager=None, progress: bool | None = None) -> Buffer:
    """``ddtool buffer``: train ``config.num_experts`` experts with ``config.trainer`` into ``config.out``.

    :param config: a :class:`ddtoolbox.BufferConfig`.
    :param options: trainer options by field name (e.g. ``{"rho": 0.01}`` for FTD's trainer).
    """
    from .augment import DSA
    from .data import check_same_images, image_record, load_dataset
    from .models import canonical_model_name, model_options
    from .plugins import PluginManager
    from .runtime import configure_backends, seed_everything

    pm = manager or PluginManager()
    progress = (not config.quiet) if progress is None else progress
    trainer = pm.trainer(config.trainer)
    trainer_options = pm.plugin_options("buffer", dict(options or {}), [trainer.plugin]).get(trainer.plugin)
    model = canonical_model_name(config.model)
    device = parallel.setup(config.device, config.dist_backend, config.dist_timeout)
    configure_backends(device)
    compiled.prepare(config.compile, device)
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
                    **image_record(train_set.info), "dsa_crop_ratio": config.dsa_crop_ratio,
                    "compile": config.compile},
    )
