"""Atomic writes: all or nothing, and the permissions a normal write would give."""

import os

import pytest

from ddtoolbox.io import atomic_write, write_json


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"ok": 1})

    def explode(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, explode)
    assert path.read_text().strip().startswith("{") and '"ok": 1' in path.read_text()
    assert os.listdir(tmp_path) == ["result.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_permissions_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_json(tmp_path / "r.json", {})
        plain = tmp_path / "plain"
        plain.write_text("")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask
