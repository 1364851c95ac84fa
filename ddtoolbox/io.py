"""Reading and writing the toolbox's files safely.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted command never leaves a half-written file under the real name. Tensor files are read
with ``torch.load(weights_only=True)``: a file from an untrusted source can be wrong, but it cannot
run code.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .errors import UsageError, brief
from .finite import require_finite


#: OS errors that mean "this path cannot take the file" (the user's disk, quota, permissions or
#: limits), reported as a usage error naming the path rather than as a bug
USER_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
               errno.EROFS: "read-only file system", errno.ENOTDIR: "a file stands where a folder is needed",
               errno.EEXIST: "a file is in the way", errno.EDQUOT: "the disk quota is exceeded",
               errno.EISDIR: "a folder stands where a file is needed",
               errno.EFBIG: "the file is larger than this process may write (ulimit -f) or the file system allows",
               errno.ENAMETOOLONG: "the name is too long", errno.ENOENT: "no such file or folder"}


def os_reason(exc: OSError) -> str:
    """An OSError's cause in words a user can act on."""
    return USER_ERRNOS.get(exc.errno, exc.strerror or type(exc).__name__)


def os_fix(exc: OSError) -> str:
    """What to do about an OSError of :data:`USER_ERRNOS`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space or choose another path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions or choose another path"
    if exc.errno == errno.EFBIG:
        return "raise the limit (ulimit -f) or choose another path"
    return "choose another path"


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path`` and rename it into place.

    An OS error of the user's path (:data:`USER_ERRNOS`: full disk, read-only, file-size limit, ...)
    becomes a UsageError naming the path; nothing is left under either name.
    """
    path = Path(path)
    try:
        _atomic_write(path, write)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        raise UsageError(f"cannot write {path} ({os_reason(exc)}); {os_fix(exc)}") from exc
    return path


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.chmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide results from co-workers
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def user_cache_dir() -> Path:
    """Where ddtoolbox keeps files of its own by default: ``$XDG_CACHE_HOME/ddtoolbox``, else ``~/.cache/ddtoolbox``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ddtoolbox"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (files may be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(path, obj: dict) -> Path:
    """Save a dict of tensors and plain values, loadable with ``weights_only=True``.

    A tensor holding NaN or infinity is refused (:mod:`ddtoolbox.finite`): nothing diverged is stored.
    """
    require_finite(obj, f"{Path(path).name}, about to be written to {Path(path).parent},",
                   "lower the learning rate of the run that made it")
    return atomic_write(path, lambda fh: _torch_save(obj, fh))


class _WriteRecorder:
    """A file object that remembers the OSError its ``write`` raised: torch's writer turns it into a
    RuntimeError ("unexpected pos ...") that no longer says the disk was full."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        return self.fh.flush()


def _torch_save(obj, fh) -> None:
    recorder = _WriteRecorder(fh)
    try:
        torch.save(obj, recorder)
    except RuntimeError:
        if recorder.error is not None:
            raise recorder.error from None
        raise


def load_tensors(path, what: str, fix: str) -> dict:
    """Load a file written by :func:`save_tensors`; any failure becomes a one-line UsageError.

    :param what: what the file is, for the message ("synthetic set", "expert trajectory").
    :param fix: what the user should do about a bad file.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist; {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{what} file {path} is corrupt, truncated or not a ddtoolbox file ({brief(reason)}); {fix}") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"{what} file {path} does not hold a dict of tensors; {fix}")
    return obj


def write_json(path, obj) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def read_json(path, what: str, fix: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist; {fix}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path} is not valid JSON ({exc}); {fix}") from exc


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


#: a field's expected kind for :func:`check_fields`: a type, a tuple of types, or ``(check, "what it must be")``
def check_fields(obj, fields: dict, what: str, fix: str) -> None:
    """Refuse metadata whose fields are missing or of the wrong kind, in one line naming the first.

    Files ddtool reads may be hand-edited or written by another version; a wrong type must be a
    clear error, not a traceback deep in the code that uses the value.
    """
    if not isinstance(obj, dict):
        raise UsageError(f"{what} is not a mapping of fields (got {type(obj).__name__}); {fix}")
    for name, kind in fields.items():
        if name not in obj:
            raise UsageError(f"{what} lacks the field '{name}'; {fix}")
        value = obj[name]
        if isinstance(kind, tuple) and len(kind) == 2 and callable(kind[0]) and isinstance(kind[1], str):
            check, described = kind
            ok = _safely(check, value)
        else:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
            described = " or ".join(k.__name__ for k in kinds)
        if not ok:
            shown = repr(value) if not hasattr(value, "shape") else f"a tensor of shape {tuple(value.shape)}"
            raise UsageError(f"{what} has '{name}' = {brief(shown, 60)}, which is not {described}; {fix}")


def _safely(check, value) -> bool:
    try:
        return bool(check(value))
    except Exception:
        return False
