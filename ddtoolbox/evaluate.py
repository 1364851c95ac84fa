"""Evaluation protocols: how good is a synthetic set at training a fresh network?

The standard protocol (MTT/DATM/EDF): a freshly initialised network, SGD with momentum 0.9 and
weight decay 5e-4 at the learned learning rate, one x0.1 decay at the midpoint, DSA on every
training batch, test once at the end; mean and standard deviation over several networks. Each
network draws its own initialisation (and, for the random baseline, its own random real images),
so the spread measures what a user would see from one run to the next.

Protocols (``ddtool eval --protocol``; everything but the loss is the standard protocol above, so
results differ only in what the student is trained to match):

* ``standard``: cross-entropy on the hard class labels (MTT, FTD, random real images).
* ``soft``: soft cross-entropy on the synthetic set's *learned* soft labels (DATM, EDF); tested with
  hard labels like every protocol.
* ``kd``: knowledge distillation as SRe2L/RDED evaluate: a frozen teacher trained on the real data
  (``ddtool train-full --save-model``) sees the *same augmented batch* as the student, and the
  student minimises ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` (batch mean).
* ``soft-no-teacher``: EDF's Table 10: soft labels kept, teacher dropped from the training loop. The
  soft labels are the teacher's outputs on the un-augmented images, computed once before training
  (the "relabel" step of SRe2L/RDED), or the set's learned labels when no teacher is given; the
  loss is the soft cross-entropy of ``soft``.
* ``auto`` (default): ``soft`` when the set has learned labels, else ``standard``.
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


PROTOCOLS = {
    "auto": "soft when the synthetic set has learned labels, else standard",
    "standard": "cross-entropy on the hard labels (MTT, FTD, random real images)",
    "soft": "soft cross-entropy on the set's learned soft labels (DATM, EDF)",
    "kd": "KL to a frozen teacher's outputs on the same augmented batch (SRe2L/RDED; needs --teacher)",
    "soft-no-teacher": "soft labels without the teacher in the loop (EDF Table 10): the teacher's outputs on "
                       "the un-augmented images computed once (--teacher), or the learned labels",
}
#: KD temperature. SRe2L's train_KD defaults to 3, RDED uses 4 with mixup and 20 with cutmix; 4 is
#: RDED's setting for the milder augmentation, the closest to DSA.
DEFAULT_TEMPERATURE = 4.0


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum(-log_softmax(logits) * softmax(targets)) (DATM's inner loss)."""
    return -(F.log_softmax(logits, 1) * F.softmax(soft_targets, 1)).sum(1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    SRe2L and RDED use ``KLDivLoss(reduction="batchmean")`` at temperature T with AdamW, which does
    not care about the loss scale; the evaluation protocol here uses SGD, so the loss is multiplied
    by ``T^2`` (Hinton et al.) to keep its gradient on the scale of a cross-entropy's.
    """
    t = float(temperature)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, 1)
    log_p_student = F.log_softmax(student_logits / t, 1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1).mean() * (t * t)


@dataclass
class Protocol:
    """What the student minimises; see the module docstring.

    :param name: ``standard``, ``soft``, ``kd`` or ``soft-no-teacher`` (resolved, never ``auto``).
    :param teacher: the frozen teacher (``kd``; ``soft-no-teacher`` when relabelling).
    :param temperature: the KD temperature.
    """

    name: str = "standard"
    teacher: torch.nn.Module | None = None
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self):
        if self.name not in PROTOCOLS or self.name == "auto":
            raise UsageError(f"unknown protocol '{self.name}'; choose one of {', '.join(PROTOCOLS)}")
        if self.name == "kd" and self.teacher is None:
            raise UsageError("--protocol kd needs --teacher FILE (a network from 'ddtool train-full --save-model')")
        if not self.temperature > 0:
            raise UsageError(f"--temperature must be positive (got {self.temperature})")

    @property
    def soft_targets(self) -> bool:
        return self.name in ("soft", "soft-no-teacher")

    @torch.no_grad()
    def prepare_targets(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """The training targets: for ``soft-no-teacher`` with a teacher, its logits on ``images``."""
        if self.name != "soft-no-teacher" or self.teacher is None:
            return targets
        return torch.cat([self.teacher(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])

    def loss(self, net: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of ``net`` on one (augmented) batch ``x``."""
        logits = net(x)
        if self.name == "kd":
            with torch.no_grad():
                teacher_logits = self.teacher(x)   # the same augmented batch as the student's
            return kd_loss(logits, teacher_logits, self.temperature)
        if self.soft_targets:
            return soft_cross_entropy(logits, targets)
        return F.cross_entropy(logits, targets)


def resolve_protocol(name: str, has_learned_labels: bool, teacher=None,
                     temperature: float = DEFAULT_TEMPERATURE) -> Protocol:
    """Turn ``--protocol`` (and ``--teacher``) into a :class:`Protocol`, or say what is missing."""
    if name not in PROTOCOLS:
        raise UsageError(f"unknown protocol '{name}'; choose one of {', '.join(PROTOCOLS)}")
    if name == "auto":
        if teacher is not None:
            raise UsageError("--teacher is used by --protocol kd or soft-no-teacher; add one of them")
        name = "soft" if has_learned_labels else "standard"
    if name in ("standard", "soft") and teacher is not None:
        raise UsageError(f"--protocol {name} does not use a teacher; drop --teacher or use --protocol kd")
    if name == "soft" and not has_learned_labels:
        raise UsageError("--protocol soft needs a synthetic set with learned soft labels (e.g. from --matcher datm); "
                         "use --protocol standard, or kd / soft-no-teacher with --teacher")
    if name == "soft-no-teacher" and teacher is None and not has_learned_labels:
        raise UsageError("--protocol soft-no-teacher needs soft labels: give --teacher FILE to compute them, "
                         "or a synthetic set with learned labels")
    return Protocol(name, teacher, temperature)


@dataclass
class EvalConfig:
    model: str
    model_options: dict
    epochs: int = 1000
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: object = None         #: DSA or None


def train_on_set(cfg: EvalConfig, images, targets, lr: float, info, device, soft: bool = False,
                 protocol: Protocol | None = None, progress: bool = False, desc: str = "train") -> torch.nn.Module:
    """Train one fresh network on ``(images, targets)`` with the standard protocol.

    ``protocol`` picks the loss (default: ``soft`` if ``soft`` else ``standard``); ``targets`` are
    class indices for ``standard``/``kd`` and label logits for the soft protocols.
    """
    protocol = protocol or Protocol("soft" if soft else "standard")
    net = create_model(cfg.model, info.channels, info.num_classes, info.image_size, **cfg.model_options).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, cfg.epochs // 2)], gamma=0.1)  # 1 epoch: no decay
    images = images.to(device)
    targets = protocol.prepare_targets(images, targets.to(device))
    n = len(images)
    net.train()
    for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        perm = torch.randperm(n, device=device)
        for b in range(0, n, cfg.batch_size):
            idx = perm[b:b + cfg.batch_size]
            x = images[idx]
            if cfg.augment is not None:
                x, _ = cfg.augment(x)
            loss = protocol.loss(net, x, targets[idx])
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
                 soft: bool = False, progress: bool = True, desc: str = "eval", sampler=None,
                 protocol: Protocol | None = None) -> dict:
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
        net = train_on_set(cfg, images, targets, lr, test_set.info, device, soft, protocol=protocol)
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


def recovery_ratio(distilled_mean: float, full_mean: float | None) -> float | None:
    """Distilled accuracy over full-data accuracy (None when there is no full-data accuracy)."""
    if full_mean is None:
        return None
    if not full_mean > 0:
        raise UsageError(f"the stored full-data accuracy is {full_mean}; re-run 'ddtool train-full'")
    return distilled_mean / full_mean


def format_recovery(ratio: float | None) -> str:
    return "" if ratio is None else f"recovery {ratio * 100:.1f}%"
