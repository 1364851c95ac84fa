"""Output folders: checked before any compute, locked while written, published as one set.

Three promises every command that writes results keeps:

* **Checked first.** :func:`check_writable` makes the folder, writes a probe file and compares the
  free space with what the command will write, so a read-only path, a file in the way or a full
  disk fails in seconds with one line, not after hours of compute.
* **One writer.** :class:`OutputLock` holds an OS file lock (``filelock``) on ``FOLDER/.ddtool.lock``
  for as long as a command writes there. A second writer fails at once naming the folder; a lock
  left by a killed process is released by the operating system, so it never blocks.
* **A set, never a mix.** :func:`publish` writes a run's files (each atomically) between removing
  and rewriting ``manifest.json``, which records every file's SHA-256. :func:`check_published`
  refuses a file whose folder's manifest is missing or does not match it, so a reader never
  mistakes half of a new set plus half of an old one for a result.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from . import __version__
from .errors import UsageError
from .io import os_reason, read_json, sha256, write_json

LOCK_NAME = ".ddtool.lock"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "ddtoolbox-output-set"
#: extra room asked for beyond a command's own estimate (file system overhead, temp copies)
SLACK_BYTES = 16 << 20


def os_problem(exc: OSError, path) -> str:
    """An OSError in words a user can act on."""
    return f"{path}: {os_reason(exc)}"


def check_writable(folder, need_bytes: int = 0, what: str = "output folder", option: str = "--out") -> Path:
    """Make ``folder`` and prove it can take ``need_bytes`` more; else a UsageError naming ``option``."""
    folder = Path(folder).expanduser()
    try:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{option} {folder} is a file, not a folder; choose another {option}")
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ddtool-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"ok")
        finally:     # a write that failed half-way (a full disk) must not leave the probe behind
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the {what} ({os_problem(exc, folder)}); choose another {option}") from exc
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes + SLACK_BYTES:
        raise UsageError(f"the {what} {folder} has {free / 2**20:.0f} MiB free but this command writes about "
                         f"{(need_bytes + SLACK_BYTES) / 2**20:.0f} MiB; free some space or choose another {option}")
    return folder


def check_file_writable(path, need_bytes: int = 0, option: str = "--json") -> Path:
    """:func:`check_writable` for the folder of an output file, and the file itself must not be a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    check_writable(path.parent, need_bytes, f"folder of {option}", option)
    return path


class OutputLock:
    """``with OutputLock(folder):`` the only ddtool process writing ``folder``, or a UsageError at once.

    With ``file``, the lock covers that one output file in ``folder`` (``eval --json FILE``), so
    writers of other files in the same folder go on.
    """

    def __init__(self, folder, option: str = "--out", file: str | None = None):
        self.folder = Path(folder).expanduser()
        self.option = option
        self.target = self.folder / file if file else self.folder
        self.lock_path = self.folder / (f".{file}.ddtool.lock" if file else LOCK_NAME)
        self._lock = FileLock(str(self.lock_path), timeout=0)

    def __enter__(self):
        try:
            self._lock.acquire()
        except Timeout:
            raise UsageError(f"another ddtool process is writing {self.target} (it holds {self.lock_path}); "
                             f"wait for it to finish or choose another {self.option}") from None
        except OSError as exc:
            raise UsageError(f"cannot lock {self.folder} ({os_problem(exc, self.folder)}); choose another "
                             f"{self.option}") from exc
        return self

    def __exit__(self, *exc):
        self._lock.release()
        return False


def publish(folder, files: dict[str, Callable[[Path], object]], what: str = "run") -> Path:
    """Write a set of files so that readers see the old set, no set, or the new set, never a mix.

    :param files: ``{file name: write(path)}``; each writer must write its path atomically (the
        :mod:`ddtoolbox.io` savers do).
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    manifest.unlink(missing_ok=True)          # from here on, no reader trusts the folder's old files
    for name, write in files.items():
        write(folder / name)
    write_json(manifest, {"format": MANIFEST_FORMAT, "format_version": 1, "what": what, "ddtoolbox_version": __version__,
                          "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "files": {name: sha256(folder / name) for name in files}})
    return manifest


def check_published(path, fix: str) -> None:
    """Refuse ``path`` unless its folder's manifest lists it with its current content."""
    path = Path(path)
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        raise UsageError(f"{path} is not part of a complete result ({manifest} is missing: the run that wrote it "
                         f"was interrupted while saving, or is still saving); {fix}")
    entries = read_json(manifest, "output manifest", fix).get("files")
    if not isinstance(entries, dict) or path.name not in entries:
        raise UsageError(f"{manifest} does not list {path.name}; {fix}")
    if entries[path.name] != sha256(path):
        raise UsageError(f"{path} is not the file its run published ({manifest} records another); it was "
                         f"overwritten or is from an interrupted run; {fix}")
