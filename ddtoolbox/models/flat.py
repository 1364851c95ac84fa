"""Networks as functions of one flat parameter vector.

Trajectory matching compares whole parameter vectors and differentiates through an unrolled
student, so the student's weights live in one 1-D tensor and the module only supplies the
architecture (``torch.func.functional_call``). Expert snapshots are stored in the same layout.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from ..errors import UsageError


class FlatModel:
    """Wraps a module so that ``flat_model(theta, x)`` runs it with parameters ``theta``."""

    def __init__(self, module: torch.nn.Module):
        if any(b is not None and b.numel() for _, b in module.named_buffers()):
            raise UsageError(
                "the student network has running statistics (e.g. batchnorm), which a functional "
                "unroll cannot carry; use norm=instancenorm, layernorm or none"
            )
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.numels = [p.numel() for _, p in module.named_parameters()]
        self.num_params = sum(self.numels)

    def flatten(self) -> torch.Tensor:
        """The module's current parameters as one detached 1-D tensor."""
        return flatten_params(self.module)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        if theta.dim() != 1 or theta.numel() != self.num_params:
            raise UsageError(
                f"parameter vector has {theta.numel()} entries but the network has "
                f"{self.num_params}; the buffer was made for another model or dataset"
            )
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.numels), self.shapes)}

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(theta), (x,))


def flatten_params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def load_flat(module: torch.nn.Module, theta: torch.Tensor) -> torch.nn.Module:
    """Copy a flat parameter vector into ``module`` in place and return it.

    A copy, never a view: ``vector_to_parameters`` makes each parameter a view of the vector it is
    given, so training the module would otherwise write into ``theta`` (a cached expert snapshot).
    """
    torch.nn.utils.vector_to_parameters(theta.detach().to(next(module.parameters())).clone(), module.parameters())
    return module
