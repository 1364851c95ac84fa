"""Expert training and the on-disk trajectory ("buffer") format.

A buffer is a folder: ``buffer.json`` (the metadata every consumer checks before trusting the
numbers) and one ``expert_NNN.pt`` per expert holding a ``(epochs + 1, P)`` tensor of flat
parameter snapshots, index 0 being the initialisation. Tensors only, so loading never unpickles
code. Each expert is written as soon as it is trained and the metadata is rewritten after it, so an
interrupted ``ddtool buffer`` keeps every finished expert and ``--resume`` continues from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__, hookimpl
from .errors import UsageError
from .io import load_tensors, read_json, save_tensors, write_json
from .models import create_model, flatten_params

FORMAT = "ddtoolbox-buffer"
FORMAT_VERSION = 1
META = "buffer.json"


# ---------------------------------------------------------------------------- trainers


def sgd_step_factory(args):
    """Plain SGD on each augmented batch (the MTT/DATM expert)."""

    def step(model, optimizer, images, labels, loss_fn):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@hookimpl
def register_trainers(register):
    register("sgd", sgd_step_factory, "plain SGD, as MTT and DATM train their experts")


# ---------------------------------------------------------------------------- the format


@dataclass
class Buffer:
    """A folder of expert trajectories and the metadata that says what they were trained on."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path) -> "Buffer":
        path = Path(path)
        fix = "point --buffer at a folder made by 'ddtool buffer'"
        if not path.is_dir():
            raise UsageError(f"buffer folder {path} does not exist; {fix}")
        meta = read_json(path / META, "buffer metadata", fix)
        if meta.get("format") != FORMAT:
            raise UsageError(f"{path / META} is not a ddtoolbox buffer; {fix}")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise UsageError(f"buffer {path} was written by a newer ddtoolbox; upgrade ddtoolbox")
        if not meta.get("experts"):
            raise UsageError(f"buffer {path} holds no finished expert; run 'ddtool buffer --resume' on it")
        buf = cls(path, meta)
        buf._load = lru_cache(maxsize=8)(buf._load_uncached)
        return buf

    @property
    def num_experts(self) -> int:
        return len(self.meta["experts"])

    @property
    def epochs(self) -> int:
        return int(self.meta["epochs"])

    def trajectory(self, i: int) -> torch.Tensor:
        """Snapshots of expert ``i``, shape ``(epochs + 1, P)``, on the CPU."""
        return self._load(i)

    def _load_uncached(self, i: int) -> torch.Tensor:
        entry = self.meta["experts"][i]
        fix = f"delete it and re-create the buffer with 'ddtool buffer --resume --out {self.path}'"
        data = load_tensors(self.path / entry["file"], "expert trajectory", fix)
        traj = data.get("trajectory")
        expected = (self.epochs + 1, int(self.meta["num_params"]))
        if not isinstance(traj, torch.Tensor) or tuple(traj.shape) != expected:
            got = tuple(traj.shape) if isinstance(traj, torch.Tensor) else type(traj).__name__
            raise UsageError(f"expert trajectory {self.path / entry['file']} has shape {got}, expected {expected}; {fix}")
        return traj

    def make_model(self) -> torch.nn.Module:
        m = self.meta
        return create_model(m["model"], m["channels"], m["num_classes"], tuple(m["image_size"]), **m["model_options"])

    def check_compatible(self, dataset: str, model: str | None = None, model_options: dict | None = None,
                         needed_epochs: int | None = None) -> None:
        """Refuse a buffer made for another dataset, model or shorter training."""
        m = self.meta
        if m["dataset"] != dataset:
            raise UsageError(
                f"buffer {self.path} was trained on '{m['dataset']}', not '{dataset}'; "
                f"use --dataset {m['dataset']} or make a buffer for {dataset} with 'ddtool buffer'"
            )
        if model is not None and model != m["model"]:
            raise UsageError(
                f"buffer {self.path} holds {m['model']} experts, not {model}; use --model {m['model']} "
                f"or make a buffer for {model}"
            )
        if model_options:
            diff = {k: v for k, v in model_options.items() if m["model_options"].get(k) != v}
            if diff:
                raise UsageError(f"buffer {self.path} experts were built with {m['model_options']}, not {diff}; drop those options or make a matching buffer")
        if needed_epochs is not None and needed_epochs > self.epochs:
            raise UsageError(
                f"buffer {self.path} has {self.epochs}-epoch trajectories but the run needs "
                f"{needed_epochs} (max start epoch + expert epochs); lower --max-start-epoch or "
                f"--expert-epochs, or train longer experts"
            )


# ---------------------------------------------------------------------------- training


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
                "train_images")
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


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    net.train()
    return correct / max(len(x), 1)
