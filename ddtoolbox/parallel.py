"""Several processes under torchrun: the process group, each rank's device, and the few collectives used.

``torchrun`` starts one process per rank and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` joins
that group (gloo for CPU tensors, NCCL for CUDA ones) with a timeout on every collective, so a rank
that dies or hangs makes the others stop with a message instead of waiting for ever; each rank
computes on ``cuda:LOCAL_RANK`` (or the CPU). Outside torchrun every helper here answers as a
single process would: rank 0 of a world of 1, and the collectives return their input.

Only rank 0 writes files, takes output locks, logs and shows progress bars (:func:`is_main`).
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch

from .errors import Stopped, UsageError, one_line

#: seconds a collective may wait for the other ranks before this rank gives up (``--dist-timeout``)
DEFAULT_TIMEOUT = 600.0
#: ``--dist-backend`` choices: auto picks NCCL for CUDA devices and gloo for the CPU
BACKENDS = ("auto", "gloo", "nccl")
#: ``distill --parallel`` choices
MODES = ("auto", "none", "batch", "segments")


class RankLost(Stopped):
    """A collective failed or timed out: another rank died, hung, or cannot be reached (exit 4)."""

    exit_code = 4


#: what torch's distributed errors say when a peer is gone (a gloo socket, NCCL, the c10d store)
LOST_PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo", "NCCL", "c10d",
                   "ProcessGroup", "timed out", "Timed out")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc``, raised in a process of a torchrun launch, says another rank is gone; such an
    error can surface outside :func:`_collective` too (in the backward pass of an all-reduce)."""
    if not launched():
        return False
    dist_error = getattr(torch.distributed, "DistError", ())
    while exc is not None:
        if isinstance(exc, RankLost) or (dist_error and isinstance(exc, dist_error)):
            return True
        if isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in LOST_PEER_SIGNS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class EveryRank(UsageError):
    """A problem that every rank finds alike: rank 0's check shared with the others, or the same
    settings checked on each. Rank 0 alone reports it, so a launch of N processes prints it once
    rather than N times; the other ranks exit with the same status, quietly."""


def launched() -> bool:
    """Whether this process was started by torchrun (or anything else that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a process group of more than one process is joined."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world() > 1


def rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def world() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes, logs and shows progress."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(name: str) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when ``name`` is auto (with CUDA) or names CUDA, else the CPU."""
    from .runtime import resolve_device

    device = resolve_device(name)
    if device.type != "cuda":
        return device
    local = local_rank()
    if local >= torch.cuda.device_count():
        raise UsageError(f"local rank {local} has no GPU of its own (this node has {torch.cuda.device_count()}); "
                         f"start at most {torch.cuda.device_count()} processes per node (--nproc-per-node)")
    return torch.device("cuda", local)


def setup(device_name: str = "auto", backend: str = "auto", timeout: float = DEFAULT_TIMEOUT) -> torch.device:
    """Join torchrun's process group when launched by it; return this process's device.

    Without torchrun this is :func:`ddtoolbox.runtime.resolve_device`. Calling it again in a process
    that already joined a group (a second command in one Python session, the tests) reuses the group.
    """
    from .runtime import resolve_device

    if backend not in BACKENDS:
        raise UsageError(f"--dist-backend {backend}: choose one of {', '.join(BACKENDS)}")
    if not launched():
        return resolve_device(device_name)
    device = rank_device(device_name)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UsageError("--dist-backend nccl needs CUDA devices, but this run computes on the CPU; use "
                         "--dist-backend gloo (or auto), or --device cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        try:
            torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout))
        except Exception as exc:  # a wrong MASTER_ADDR, a port in use, a peer that never came
            raise UsageError(f"cannot join the torchrun process group ({one_line(exc)[:200]}); check "
                             f"--rdzv-endpoint / --master-addr and that every node runs the same command") from exc
        atexit.register(_leave)
    return device


def _leave() -> None:
    if torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception:
            pass


def _collective(what: str, fn, *args):
    try:
        return fn(*args)
    except RuntimeError as exc:
        raise RankLost(f"rank {rank()} of {world()}: {what} failed ({one_line(exc)[:160]}); another rank has "
                       f"probably died or hung (see its message)") from exc


def barrier() -> None:
    if active():
        _collective("waiting for the other ranks", torch.distributed.barrier)


def gather_objects(value) -> list:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not active():
        return [value]
    out = [None] * world()
    _collective("gathering results", torch.distributed.all_gather_object, out, value)
    return out


def broadcast_object(value, src: int = 0):
    """Rank ``src``'s ``value`` on every rank."""
    if not active():
        return value
    box = [value]
    _collective("receiving rank 0's value", torch.distributed.broadcast_object_list, box, src)
    return box[0]


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s."""
    if active():
        _collective("broadcasting a tensor", torch.distributed.broadcast, tensor, src)
    return tensor


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (not differentiable)."""
    if active():
        _collective("summing over ranks", torch.distributed.all_reduce, tensor)
    return tensor


def differentiable_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks with a backward pass (whose gradient is again summed over the ranks)."""
    if not active():
        return tensor
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():   # torch 2.14 marks it deprecated; it still has the backward this needs
        warnings.simplefilter("ignore", FutureWarning)
        return _collective("summing over ranks", all_reduce, tensor)


def average_grads(leaves) -> None:
    """Replace each leaf's ``.grad`` by its mean over the ranks (one all-reduce for all of them)."""
    if not active():
        return
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
    flat = torch.cat([g.reshape(-1) for g in grads])
    sum_(flat)
    flat /= world()
    at = 0
    for t in leaves:
        part = flat[at:at + t.numel()].view_as(t)
        at += t.numel()
        if t.grad is None:
            t.grad = part.clone()
        else:
            t.grad.copy_(part)


def agree(fn, what: str):
    """Run ``fn()`` on rank 0 and share its result; a UsageError there is raised on every rank alike,
    so no rank waits for one that has already stopped."""
    if not active():
        return fn()
    result, problem = None, None
    if is_main():
        try:
            result = fn()
        except UsageError as exc:
            problem = str(exc)
    problem = broadcast_object(problem)
    if problem is not None:
        raise EveryRank(problem)
    return result if is_main() else None


def check_all(ok: bool, message) -> None:
    """Raise ``EveryRank(message(bad_ranks))`` on every rank when ``ok`` is false on any."""
    flags = gather_objects(bool(ok))
    bad = [r for r, flag in enumerate(flags) if not flag]
    if bad:
        raise EveryRank(message(bad))


def check_folder_visible(folder, option: str) -> None:
    """Every rank must see ``folder`` (a shared file system); else one line names the ranks that do not."""
    check_all(os.path.isdir(folder), lambda bad: f"{option} {folder} is not visible to rank(s) "
              f"{', '.join(map(str, bad))} of {world()}; put it on a file system every node mounts at the same path")


def shard(n: int) -> tuple[int, int]:
    """This rank's slice ``[lo, hi)`` of ``n`` items split into contiguous near-equal parts."""
    r, w = rank(), world()
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def resolve_mode(mode: str) -> str:
    """``distill --parallel``: auto is batch under torchrun (with more than one rank) and none otherwise."""
    if mode not in MODES:
        raise UsageError(f"--parallel {mode}: choose one of {', '.join(MODES)}")
    if mode == "auto":
        return "batch" if active() else "none"
    if mode != "none" and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise UsageError(f"--parallel {mode} needs several processes: start the command with torchrun, e.g. "
                         f"'torchrun --standalone --nproc-per-node 2 --no-python ddtool distill ...', or drop "
                         f"--parallel")
    return mode
