"""Seeds, devices, threads and signals, set the same way by every command; and the facts of the
environment a result was made in (versions, device, host, date), for the records that keep results."""

from __future__ import annotations

import contextlib
import datetime
import functools
import platform
import random
import signal
import threading

import numpy as np
import torch

from .errors import UsageError


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the toolbox draws from (Kornia draws from torch's global RNG).

    Returns a CPU generator seeded the same way, for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def random_state_kept(device: torch.device):
    """Draw freely inside; afterwards Python's, NumPy's and torch's streams (CPU and ``device``)
    continue as if nothing had run. Side work in a run (intermediate evaluation, loggers) must not
    change the images a seed produces."""
    state = random.getstate()
    np_state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available; asking for CUDA without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from exc
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: ddtoolbox runs on cpu or cuda[:N], not {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for but CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def configure_backends(device: torch.device, tf32: bool = False) -> None:
    """Speed settings that do not change results beyond what the user allowed.

    cuDNN autotuning pays off because every step of a run has the same shapes. TF32 is off unless
    asked for (PyTorch enables it for convolutions by default), so float32 results stay float32.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32


class StopSignals:
    """``with StopSignals() as stop:`` SIGINT and SIGTERM set ``stop.signum`` instead of killing the
    process, so a long loop can finish its step, save and exit cleanly. A second SIGINT raises
    KeyboardInterrupt at once (the user means it). Outside the main thread it does nothing.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _raise_signalled(signum, frame):
    from .errors import Signalled

    raise Signalled(signum)


def stop_at_once_on_signals() -> dict:
    """SIGTERM (and SIGINT) raise :class:`~ddtoolbox.errors.Signalled` wherever the process is, as
    Ctrl-C raises KeyboardInterrupt: a command then cleans up, says one line and exits 143 (130).
    :class:`StopSignals` overrides this where a loop can finish its step first. Returns the
    handlers it replaced, for :func:`restore_signals`."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _raise_signalled)
    return previous


@contextlib.contextmanager
def stops_resumably(say):
    """Inside, a SIGINT or SIGTERM (or Ctrl-C's KeyboardInterrupt) becomes
    :class:`~ddtoolbox.errors.Interrupted` with the one line ``say(signal name)`` returns, saying
    what was kept and how to go on; exit 130 / 143 like a stopped distillation."""
    from .errors import Interrupted, signal_number

    try:
        yield
    except KeyboardInterrupt as exc:
        signum = signal_number(exc)
        raise Interrupted(say(signal.Signals(signum).name), signum) from None


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run with ``n`` torch CPU threads, then restore the count (``main`` also runs inside tests)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def honours_threads(fn):
    """Decorate a library entry point ``fn(settings, ...)`` to run with ``settings.threads`` CPU threads,
    so Python callers get what ``--threads`` gives on the command line."""

    @functools.wraps(fn)
    def run(settings, *args, **kwargs):
        with cpu_threads(getattr(settings, "threads", None)):
            return fn(settings, *args, **kwargs)

    return run


def environment(device: torch.device) -> dict:
    """Where and with what a result is being made: date (UTC), device, host, CPU and versions."""
    import kornia

    from . import __version__

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device), "host": platform.node(), "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "kornia": kornia.__version__,
        "ddtoolbox": __version__, "cuda": torch.version.cuda,
    }
