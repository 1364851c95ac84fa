"""Evaluation protocols: how good is a synthetic set at training a fresh network?

The standard protocol (MTT/DATM/EDF): a freshly initialised network, SGD with momentum 0.9 and
weight decay 5e-4 at the learned learning rate, one x0.1 decay at the midpoint, DSA on every
training batch, test once at the end; mean and standard deviation over several networks. Each
network draws its own initialisation (and, for the random baseline, its own random real images),
so the spread measures what a user would see from one run to the next.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import UsageError
from .models import create_model
from .trajectories import accuracy


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum(-log_softmax(logits) * softmax(targets)) (DATM's inner loss)."""
    return -(F.log_softmax(logits, 1) * F.softmax(soft_targets, 1)).sum(1).mean()


@dataclass
class EvalConfig:
    model: str
    model_options: dict
    epochs: int = 1000
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: object = None         #: DSA or None


def train_on_set(cfg: EvalConfig, images, targets, lr: float, info, device, soft: bool = False) -> torch.nn.Module:
    """Train one fresh network on ``(images, targets)`` with the standard protocol."""
    net = create_model(cfg.model, info.channels, info.num_classes, info.image_size, **cfg.model_options).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[cfg.epochs // 2], gamma=0.1)
    loss_fn = soft_cross_entropy if soft else F.cross_entropy
    images, targets = images.to(device), targets.to(device)
    n = len(images)
    net.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, device=device)
        for b in range(0, n, cfg.batch_size):
            idx = perm[b:b + cfg.batch_size]
            x = images[idx]
            if cfg.augment is not None:
                x, _ = cfg.augment(x)
            loss = loss_fn(net(x), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return net


def summarise(accs: list[float]) -> dict:
    return {
        "mean": statistics.fmean(accs),
        "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "runs": accs,
    }


def evaluate_set(cfg: EvalConfig, images, targets, lr: float, test_set, runs: int, device,
                 soft: bool = False, progress: bool = True, desc: str = "eval", sampler=None) -> dict:
    """Train ``runs`` fresh networks and test each; ``sampler(run)`` may supply a new set per run."""
    if runs < 1:
        raise UsageError(f"--runs must be at least 1 (got {runs})")
    if not lr > 0:
        raise UsageError(f"the evaluation learning rate must be positive (got {lr}); pass --lr")
    x_test, y_test = test_set.images.to(device), test_set.labels.to(device)
    accs = []
    for r in tqdm(range(runs), desc=desc, unit="net", disable=not progress, leave=False):
        if sampler is not None:
            images, targets = sampler(r)
        net = train_on_set(cfg, images, targets, lr, test_set.info, device, soft)
        accs.append(accuracy(net, x_test, y_test))
    return summarise(accs)


def load_synthetic(path) -> dict:
    """Load and check a ``synthetic.pt`` written by ``ddtool distill``."""
    from .io import load_tensors

    fix = "point --synthetic at a synthetic.pt written by 'ddtool distill'"
    record = load_tensors(path, "synthetic set", fix)
    missing = [k for k in ("images", "labels", "lr", "meta") if k not in record]
    if missing:
        raise UsageError(f"synthetic set {path} lacks {', '.join(missing)}; {fix}")
    images, labels = record["images"], record["labels"]
    if not (isinstance(images, torch.Tensor) and images.dim() == 4 and isinstance(labels, torch.Tensor)
            and labels.shape == images.shape[:1]):
        raise UsageError(f"synthetic set {path} has malformed images or labels; {fix}")
    if not torch.isfinite(images).all():
        raise UsageError(f"synthetic set {path} contains NaN or infinite pixels; re-run the distillation with a lower --lr-img")
    return record


def format_result(result: dict) -> str:
    return f"{result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}%"
