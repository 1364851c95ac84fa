"""The student unroll: ``(theta_0, images, targets, lr, schedule) -> theta_N``, differentiably.

The student takes ``syn_steps`` plain SGD steps on the synthetic set, each on the next
``batch_syn`` images of a random permutation, each batch freshly augmented, and keeps the graph
(``create_graph=True``) so the matching loss can be back-propagated into the images, the learned
learning rate and anything else the targets depend on (soft labels).

The batch indices and augmentation parameters of every step are recorded in the returned
:class:`UnrollTrace`. Replaying a trace recomputes the same ``theta_N`` bit for bit, which is what a
memory-saving unroll (recompute one step at a time during the backward pass) needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .models import FlatModel


@dataclass
class UnrollTrace:
    """What an unroll drew at random: per step, the batch indices and augmentation params."""

    indices: list[torch.Tensor] = field(default_factory=list)
    aug_params: list[object] = field(default_factory=list)


def batch_schedule(n: int, batch_syn: int, steps: int, device=None) -> list[torch.Tensor]:
    """Consecutive ``batch_syn`` slices of random permutations of ``range(n)``, reshuffled when used up."""
    out, perm = [], torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if perm.numel() == 0:
            perm = torch.randperm(n)
        out.append(perm[:batch_syn].to(device))
        perm = perm[batch_syn:]
    return out


def unroll(student: FlatModel, theta0: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
           syn_lr: torch.Tensor, steps: int, batch_syn: int, loss_fn: Callable, augment=None,
           trace: UnrollTrace | None = None, split: bool = False) -> tuple[torch.Tensor, UnrollTrace]:
    """Run the student from ``theta0`` and return ``(theta_N, trace)``.

    :param theta0: start parameters (detached; the unroll does not differentiate into the expert).
    :param targets: one entry per image, whatever ``loss_fn(logits, targets[idx])`` expects.
    :param augment: ``augment(x, params=None) -> (x_aug, params)``, or None for no augmentation.
    :param trace: replay these batch indices and augmentation parameters instead of drawing new ones.
    :param split: under torchrun (``distill --parallel batch``): this rank computes only its share of
        each step's batch (:func:`sharded_grad`); every rank must call with the same random state.
    """
    replay = trace is not None
    if not replay:
        trace = UnrollTrace(batch_schedule(images.shape[0], batch_syn, steps, images.device))
    theta = theta0.detach().requires_grad_(True)
    for k in range(steps):
        idx = trace.indices[k]
        x = images[idx]
        if augment is not None:
            x, params = augment(x, params=trace.aug_params[k] if replay else None)
            if not replay:
                trace.aug_params.append(params)
        if split:
            grad = sharded_grad(student, theta, x, targets[idx], loss_fn)
        else:
            loss = loss_fn(student(theta, x), targets[idx])
            grad, = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - syn_lr * grad
    return theta, trace


def sharded_grad(student: FlatModel, theta: torch.Tensor, x: torch.Tensor, targets: torch.Tensor,
                 loss_fn: Callable) -> torch.Tensor:
    """The gradient of the batch-mean inner loss, with this rank computing only its slice of the batch.

    Every rank holds the whole (augmented) batch ``x``; it takes its contiguous slice, weighs the
    slice's mean loss by the slice's share of the batch, and the ranks' gradients are summed with a
    differentiable all-reduce, so every rank gets the whole batch's gradient (with its graph) and the
    same next student parameters. ``loss_fn`` must be a mean over the batch of per-image terms, and
    the network per-image (instance norm, no batch norm), or the split would change the result.
    """
    from .parallel import differentiable_sum, shard

    lo, hi = shard(x.shape[0])
    loss = loss_fn(student(theta, x[lo:hi]), targets[lo:hi]) * ((hi - lo) / x.shape[0])
    grad, = torch.autograd.grad(loss, theta, create_graph=True)
    return differentiable_sum(grad)


class _CheckpointedUnroll(torch.autograd.Function):
    """The same unroll, keeping only each step's parameters; the backward recomputes one step at a time.

    Forward: each step's gradient is taken without a graph, so memory holds the ``steps`` parameter
    vectors (``steps x P`` floats) instead of every step's activations. Backward: for k = N-1 .. 0,
    rebuild step k's graph from the saved ``theta_k`` (same batch, replayed augmentation) and push
    ``dL/dtheta_{k+1}`` through it, which yields ``dL/dtheta_k`` and step k's share of the
    gradients of the images, targets and lr. This is the full unroll's chain rule, term for term
    (no Hessian term is dropped, unlike TESLA's constant-memory approximation).
    """

    @staticmethod
    def forward(ctx, theta0, images, targets, syn_lr, student, loss_fn, augment, trace, split=False):
        from .parallel import sum_

        thetas = [theta0.detach()]
        theta = thetas[0]
        with torch.enable_grad():
            for k in range(len(trace.indices)):
                grad = _step_grad(student, theta.detach().requires_grad_(True), images.detach(),
                                  targets.detach(), loss_fn, augment, trace, k, create_graph=False, split=split)
                if split:
                    grad = sum_(grad)
                theta = theta - syn_lr.detach() * grad
                thetas.append(theta)
        ctx.student, ctx.loss_fn, ctx.augment, ctx.trace, ctx.split = student, loss_fn, augment, trace, split
        ctx.thetas = thetas[:-1]
        ctx.save_for_backward(images, targets, syn_lr)
        return theta.detach()

    @staticmethod
    def backward(ctx, grad_theta_n):
        images, targets, syn_lr = ctx.saved_tensors
        wanted = [t.requires_grad for t in (images, targets, syn_lr)]
        leaves = [t.detach().requires_grad_(w) for t, w in zip((images, targets, syn_lr), wanted)]
        totals = [torch.zeros_like(t) if w else None for t, w in zip(leaves, wanted)]
        v = grad_theta_n
        for k in reversed(range(len(ctx.thetas))):
            with torch.enable_grad():
                theta_k = ctx.thetas[k].requires_grad_(True)
                g = _step_grad(ctx.student, theta_k, leaves[0], leaves[1], ctx.loss_fn, ctx.augment, ctx.trace,
                               k, create_graph=True, split=ctx.split)
                inputs = [theta_k] + [leaf for leaf, w in zip(leaves, wanted) if w]
                if ctx.split:
                    grads = _split_step_vjp(g, leaves[2], v, inputs)
                else:
                    theta_next = theta_k - leaves[2] * g
                    grads = torch.autograd.grad(theta_next, inputs, grad_outputs=v, allow_unused=True)
            v = grads[0]
            rest = iter(grads[1:])
            for i, w in enumerate(wanted):
                if w:
                    part = next(rest)
                    if part is not None:
                        totals[i] += part
            ctx.thetas[k] = None  # free as we go
        return (None, *totals, None, None, None, None, None)


def _split_step_vjp(g_local, lr, v, inputs):
    """One checkpointed step's backward when each rank holds only its slice's gradient ``g_local``.

    The step is ``theta_next = theta_k - lr * sum_ranks(g_local)``. The vector-Jacobian products
    of this rank's term are taken locally; the one for ``theta_k`` is summed over the ranks (so
    every rank carries the same ``dL/dtheta_k``), and those for the images, labels and lr are scaled
    by the world size, the convention of the full split unroll (the loop averages them over the
    ranks, which gives the one-process gradient).
    """
    from .parallel import sum_, world

    grads = torch.autograd.grad(-lr * g_local, inputs, grad_outputs=v, allow_unused=True)
    theta_part = grads[0] if grads[0] is not None else torch.zeros_like(v)
    out = [v + sum_(theta_part.clone())]
    out += [None if part is None else part * world() for part in grads[1:]]
    return out


def _step_grad(student, theta, images, targets, loss_fn, augment, trace, k, create_graph, split=False):
    """Gradient of the inner loss at step ``k`` of ``trace`` (batch and augmentation replayed).

    With ``split`` only this rank's slice of the batch counts (weighted by its share): its part of
    the gradient, to be summed over the ranks.
    """
    idx = trace.indices[k]
    x = images[idx]
    t = targets[idx]
    if augment is not None:
        x, _ = augment(x, params=trace.aug_params[k])
    if split:
        from .parallel import shard

        lo, hi = shard(x.shape[0])
        loss = loss_fn(student(theta, x[lo:hi]), t[lo:hi]) * ((hi - lo) / x.shape[0])
        grad, = torch.autograd.grad(loss, theta, create_graph=create_graph)
        return grad
    loss = loss_fn(student(theta, x), t)
    grad, = torch.autograd.grad(loss, theta, create_graph=create_graph)
    return grad


def draw_trace(n_images: int, batch_syn: int, steps: int, images: torch.Tensor, augment) -> UnrollTrace:
    """Draw every step's batch and augmentation parameters up front, for a replaying unroll."""
    trace = UnrollTrace(batch_schedule(n_images, batch_syn, steps, images.device))
    if augment is not None:
        with torch.no_grad():
            for idx in trace.indices:
                trace.aug_params.append(augment(images[idx].detach())[1])
    return trace


def unroll_checkpointed(student: FlatModel, theta0: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                        syn_lr: torch.Tensor, steps: int, batch_syn: int, loss_fn: Callable, augment=None,
                        trace: UnrollTrace | None = None, split: bool = False) -> tuple[torch.Tensor, UnrollTrace]:
    """:func:`unroll` with memory that does not grow with ``steps`` (beyond ``steps x P`` floats);
    ``split`` as for :func:`unroll` (every rank draws the same trace)."""
    if trace is None:
        trace = draw_trace(images.shape[0], batch_syn, steps, images, augment)
    theta_n = _CheckpointedUnroll.apply(theta0, images, targets, syn_lr, student, loss_fn, augment, trace, split)
    return theta_n, trace


def graph_bytes_per_step(student: FlatModel, theta0, images, targets, syn_lr, batch_syn, loss_fn, augment) -> int:
    """Bytes the full unroll keeps alive for one step: what its autograd graph saves.

    Counted with saved-tensor hooks, so it works on any device without allocator statistics; the
    full unroll's memory is about ``steps`` times this. The random generators are left as they were,
    so measuring (``--unroll auto``) does not change what the run draws afterwards.
    """
    total = 0
    seen = set()

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype, t.shape)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unroll(student, theta0, images, targets, syn_lr, 1, batch_syn, loss_fn, augment)
    return total


#: the exact unroll modes, and ``auto``, which picks one of them by the memory it needs
EXACT_MODES = ("full", "checkpointed")
UNROLL_MODES = (*EXACT_MODES, "auto")


def free_memory_bytes(device: torch.device) -> int:
    """Memory the unroll may still use: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: assume it fits


def choose_unroll(mode: str, steps: int, bytes_per_step: Callable[[], int], device: torch.device,
                  headroom: float = 0.8) -> tuple[Callable, str]:
    """The unroll function for ``mode``; ``auto`` keeps the faster full unroll where it fits."""
    if mode == "full":
        return unroll, "full"
    if mode == "checkpointed":
        return unroll_checkpointed, "checkpointed"
    need = steps * bytes_per_step()
    if need > headroom * free_memory_bytes(device):
        return unroll_checkpointed, f"checkpointed (auto: full unroll needs ~{need / 2**30:.1f} GiB)"
    return unroll, f"full (auto: ~{need / 2**30:.2f} GiB fits)"
