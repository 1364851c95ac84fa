"""Flat expert trajectories: one GSAM step around the experts' plain SGD (as DATM and EDF train their experts).

Per batch, on the same augmented batch:

1. ``g0`` = gradient of the loss at the weights ``w``;
2. perturb ``w`` by ``e = rho * g0 * w**2 / (norm(|w| * g0) + 1e-12)`` (the adaptive variant; the
   norm is taken over all parameters together);
3. ``g1`` = gradient at ``w + e``; restore ``w`` exactly;
4. step the wrapped optimiser with ``g = g1 - alpha * (g0 - cos(g0, g1) * norm(g0) * g1 / norm(g1))``,
   i.e. ``g1`` minus ``alpha`` times the part of ``g0`` orthogonal to ``g1``.

``rho = 0`` gives ``g = g0`` up to rounding: plain SGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddtoolbox.options import Settings, non_negative_float, option

from ddtoolbox.errors import UsageError

EPS = 1e-12


def _norm(tensors) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def adaptive_perturbation(params, grads, rho: float) -> list[torch.Tensor]:
    """``e = rho * g * w**2 / (norm(|w| * g) + eps)`` for each parameter tensor."""
    scale = rho / (_norm([p.abs() * g for p, g in zip(params, grads)]) + EPS)
    return [g * p.pow(2) * scale for p, g in zip(params, grads)]


def gsam_direction(g0, g1, alpha: float) -> list[torch.Tensor]:
    """``g1 - alpha * (g0 - cos(g0, g1) * norm(g0) * g1 / norm(g1))`` over all tensors together."""
    inner = sum((a * b).sum() for a, b in zip(g0, g1))
    n0, n1 = _norm(g0), _norm(g1)
    cosine = inner / (n0 * n1 + EPS)
    return [b - alpha * (a - cosine * n0 * b / (n1 + EPS)) for a, b in zip(g0, g1)]


def _grads(params) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


@dataclass(kw_only=True)
class GSAMOptions(Settings):
    """The ``ftd`` trainer's ``buffer`` options."""

    rho: float = option(0.01, "ftd trainer: GSAM perturbation radius (default 0.01, every published run)",
                        type=non_negative_float)
    gsam_alpha: float = option(0.3, "ftd trainer: weight of the removed orthogonal gradient part (default 0.3, "
                                    "DATM/EDF)", type=non_negative_float)


def gsam_step_factory(options: GSAMOptions | None):
    """Flat experts (FTD): the SGD step wrapped in GSAM, --rho and --gsam-alpha."""
    options = options or GSAMOptions()
    rho, alpha = options.rho, options.gsam_alpha
    if not rho >= 0:
        raise UsageError(f"--rho must not be negative (got {rho}); FTD, DATM and EDF use 0.01")
    if not alpha >= 0:
        raise UsageError(f"--gsam-alpha must not be negative (got {alpha}); DATM and EDF use 0.3")

    def step(model, optimizer, images, labels, loss_fn):
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        g0 = _grads(params)
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, adaptive_perturbation(saved, g0, rho)):
                p.add_(e)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        g1 = _grads(params)
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)
        for p, g in zip(params, gsam_direction(g0, g1, alpha)):
            p.grad = g
        optimizer.step()
        return loss.detach()

    step.meta = {"rho": rho, "gsam_alpha": alpha}
    return step
