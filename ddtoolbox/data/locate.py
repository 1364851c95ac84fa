"""Finding the folder that holds a dataset's files.

Users keep datasets in many layouts (a folder per dataset, torchvision's ``ROOT/Name/raw``, a
Debian package under /usr/share). Rather than making them restructure, each dataset declares
which folder names it may sit under and how to recognise its files, and one search routine
applies the same lookup order to all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ddtoolbox.errors import UsageError

ENV_VAR = "DDTOOL_DATA"


def _no_defaults() -> tuple[Path, ...]:
    return ()


@dataclass(frozen=True)
class DataLocation:
    """How to find one dataset on disk.

    ``is_data_dir`` recognises the folder that directly holds the files. ``folder_names`` are
    paths relative to a root (the ``data_root`` argument or ``$DDTOOL_DATA``) where that folder
    may be; they are tried before the root itself, so a root holding several datasets side by
    side resolves each one to its own subfolder. ``default_dirs`` is called at lookup time
    (not at registration) so system locations and cache folders can depend on the environment
    and be redirected in tests. ``files_hint`` and ``install_hint`` complete the error message.
    """

    is_data_dir: Callable[[Path], bool]
    folder_names: tuple[str, ...] = ()
    default_dirs: Callable[[], Iterable[Path]] = field(default=_no_defaults)
    files_hint: str = ""
    install_hint: str = ""


def _candidates(root: Path, location: DataLocation) -> list[Path]:
    return [root / sub for sub in location.folder_names] + [root]


def _first_match(root: Path, location: DataLocation, searched: list[str], origin: str) -> Path | None:
    for cand in _candidates(root, location):
        searched.append(f"{cand} ({origin})")
        if cand.is_dir() and location.is_data_dir(cand):
            return cand
    return None


def locate(name: str, location: DataLocation, data_root: str | os.PathLike | None) -> Path:
    """Resolve the data folder: explicit ``data_root``, then ``$DDTOOL_DATA``, then defaults.

    An explicit ``data_root`` that does not hold the dataset is an error rather than a reason
    to fall back: silently training on another copy than the one the user named would hide a
    typo. So is a ``$DDTOOL_DATA`` that is no folder. ``$DDTOOL_DATA`` is a general setting that
    may hold only some datasets, so a dataset missing from it falls through to the defaults.
    """
    searched: list[str] = []
    fixes = f"pass --data-root DIR (data_root= in Python) or set {ENV_VAR}=DIR, where DIR {location.files_hint or 'holds the files'}"
    if location.install_hint:
        fixes += f", or {location.install_hint}"

    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise UsageError(f"data root {root} for {name} does not exist or is not a folder; {fixes}")
        found = _first_match(root, location, searched, "--data-root")
        if found is None:
            raise UsageError(f"{name} data not found under --data-root {root}; searched: {', '.join(searched)}; {fixes}")
        return found.resolve()

    env = os.environ.get(ENV_VAR)
    if env:
        env_root = Path(env).expanduser()
        if env_root.is_dir():
            found = _first_match(env_root, location, searched, ENV_VAR)
            if found is not None:
                return found.resolve()
        else:   # set, but pointing nowhere: a typo, not a reason to train on another copy
            raise UsageError(f"{ENV_VAR}={env} does not exist or is not a folder; fix it, unset it, or pass "
                             f"--data-root DIR")
    else:
        searched.append(f"{ENV_VAR} (not set)")

    for default in location.default_dirs():
        default = Path(default)
        searched.append(f"{default} (default)")
        if default.is_dir() and location.is_data_dir(default):
            return default.resolve()

    raise UsageError(f"{name} data not found; searched: {', '.join(searched)}; {fixes}")
