"""The losses every method shares, and the accuracy they are judged by.

* :func:`matching_loss`: the trajectory-matching reduction of Eq. 1, ``sum(w * num) / sum(w * den)``
  over per-element terms, with ``w`` the product of the plugins' weights (CPD's keep-mask is one).
* :func:`soft_cross_entropy`: DATM's inner loss and the ``soft`` evaluation protocol.
* :func:`kd_loss`: the ``kd`` evaluation protocol (SRe2L/RDED).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PluginError

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


def combine_weights(results, like: torch.Tensor):
    """Multiply the weights that ``on_loss_vector`` implementations returned; check each one.

    :param results: ``(plugin, weights or None)`` pairs.
    :return: the product (dtype and device of ``like``), or ``None`` when no plugin returned weights.
    """
    weights = None
    for name, w in results:
        if w is None:
            continue
        w = torch.as_tensor(w, device=like.device).detach()
        if w.shape != like.shape:
            raise PluginError(f"plugin '{name}' returned weights of shape {tuple(w.shape)} from on_loss_vector, "
                              f"expected {tuple(like.shape)}", name, "on_loss_vector")
        if (w < 0).any() or not torch.isfinite(w).all():
            raise PluginError(f"plugin '{name}' returned negative or non-finite weights from on_loss_vector",
                              name, "on_loss_vector")
        weights = w.to(like.dtype) if weights is None else weights * w
    return weights


def matching_loss(num: torch.Tensor, den: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Eq. 1: ``sum(w * num) / sum(w * den)``; with no weights exactly MTT's ``sum(num) / sum(den)``."""
    if weights is None:
        return num.sum() / den.sum()
    return (weights * num).sum() / (weights * den).sum()


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """The share of ``x`` that ``net`` classifies as ``y``; NaN when any output is NaN or infinite.

    A diverged network still has an argmax (chance, usually), which would read as an accuracy; NaN
    makes it fail the checks of :mod:`ddtoolbox.finite` instead.
    """
    net.eval()
    correct, finite = 0, True
    for i in range(0, len(x), batch_size):
        logits = net(x[i:i + batch_size])
        finite = finite and bool(torch.isfinite(logits).all())
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    net.train()
    return correct / max(len(x), 1) if finite else float("nan")
