"""``--compile``: ordinary first-order training (experts, evaluation networks, train-full) through
``torch.compile`` in its default mode.

Why only there: most CPU hours of this project go into plain training, where convolutions take
about 40% of an epoch and instance norm, pooling and ReLU about 45%. Inductor fuses the latter; an
epoch at width 32 ran about 1.5x faster. The distillation unroll is not compiled: it differentiates
through student steps (double backward), which ``torch.compile`` does not support.

What the caller gets is a wrapper that shares the network's parameters, used for the training
forward pass only. The network itself stays eager, so testing it, flattening it into a trajectory
or saving it works as before, and no inference graph is compiled for the test set's batch sizes.

Batch shapes: the first batch compiles a graph for its size; the first batch of another size (the
last, partial batch of an epoch) compiles once more with the batch dimension symbolic, and that
graph serves every later size. Nothing is padded, so the loss of the partial batch is exactly the
mean over its own images (``tests/test_compiled.py`` compares a whole epoch against eager).
Fresh networks of the same architecture reuse the compiled code within a process.

The compiled code is kept on disk under the user's cache folder (``$XDG_CACHE_HOME/ddtoolbox/
torch-compile``, else ``~/.cache/ddtoolbox/torch-compile``) unless ``TORCHINDUCTOR_CACHE_DIR`` names
another folder than Inductor's own default, so a second process with the same shapes skips most of the 10-100 s of compiling (the tracing,
a second or two, is redone). Inductor's own default, a folder under ``/tmp``, is lost at reboot.
"""

from __future__ import annotations

import functools
import os
import shutil

import torch

from .errors import UsageError
from .io import user_cache_dir

#: the backend ``torch.compile`` gets; tests set ``"aot_eager"`` to check the wiring without codegen
BACKEND = "inductor"
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def cache_dir() -> str:
    """Where compiled code is kept: ``$TORCHINDUCTOR_CACHE_DIR`` if the user set it, else ours.

    Importing parts of torch (torchvision does, when plugins load) makes Inductor write its own
    default into the variable, so that value counts as unset.
    """
    value = os.environ.get(CACHE_ENV)
    if value:
        try:
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        except ImportError:     # another torch layout: trust the variable
            return value
        if os.path.abspath(value) != os.path.abspath(default_cache_dir()):
            return value
    return str(user_cache_dir() / "torch-compile")


def prepare(enabled: bool, device: torch.device | str = "cpu") -> None:
    """Before any work: refuse ``--compile`` where it cannot compile, and place the cache.

    Inductor writes C++ (CPU) or Triton (CUDA, which also builds a small C launcher) and calls a
    compiler on first use; without one it fails deep inside the first training step with a long
    traceback. Checked here, the user gets one line and nothing has been trained yet.
    """
    if not enabled:
        return
    # before the compiler check, which also makes Inductor fill in its default
    os.environ[CACHE_ENV] = cache_dir()
    if BACKEND == "inductor":
        _check_compilers(torch.device(device).type)


@functools.lru_cache(maxsize=None)
def _check_compilers(device_type: str) -> None:
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise UsageError("--compile on a GPU needs Triton (pip install triton, matching your torch); "
                             "install it or drop --compile")
        if not _which_c_compiler(("CC",), ("gcc", "clang")):
            raise UsageError("--compile on a GPU needs a C compiler for Triton (gcc or clang on the PATH, or "
                             "$CC); install one (e.g. apt-get install gcc) or drop --compile")
    elif not _cpp_compiler():
        raise UsageError(f"--compile on the CPU needs a C++ compiler ({os.environ.get('CXX') or 'g++'}, from $CXX or "
                         f"the PATH) and none runs here; install one (e.g. apt-get install g++) or drop --compile")


def _which_c_compiler(env_names, names) -> str | None:
    for var in env_names:
        if os.environ.get(var):
            return shutil.which(os.environ[var])
    return next((found for name in names if (found := shutil.which(name))), None)


def _cpp_compiler() -> str | None:
    """The compiler Inductor would call (it tries ``$CXX``, else ``g++``), or None when none runs."""
    try:
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:      # a torch without this helper: look for the same names ourselves
        return _which_c_compiler(("CXX",), ("g++", "c++", "clang++"))
    try:
        return get_cpp_compiler()
    except (exc.InvalidCxxCompiler, OSError):
        return None


def training_module(net: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """What the training loop calls for its forward pass: ``net`` itself, or its compiled wrapper
    (same parameters, so the optimiser, trajectory snapshots and tests see one network)."""
    if not enabled:
        return net
    param = next(net.parameters(), None)
    prepare(True, param.device if param is not None else "cpu")   # a no-op after the command's own check
    return torch.compile(net, backend=BACKEND)
