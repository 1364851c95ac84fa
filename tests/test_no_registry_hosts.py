"""The repository names no package registry's host: installs go through pip's and apt's own
configuration, and the templates of generated files (dataset cards, reports) link to none."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# spelt in parts, so that this file does not name them either
HOSTS = ["pypi" + ".org", "pythonhosted" + ".org", "npmjs" + ".org", "npmjs" + ".com", "debian" + ".org"]


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_names_a_registry_host():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(errors="ignore").lower()
        except (OSError, IsADirectoryError):
            continue
        found += [f"{path.relative_to(ROOT)}: {host}" for host in HOSTS if host in text]
    assert not found, found

