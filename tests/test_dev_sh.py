"""dev.sh's disk check: a first install short of room stops in one line before it writes anything."""

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _setup(tmp_path, free_kb: int):
    """Run `dev.sh setup` into a new venv path with `df` reporting FREE_KB available and a stand-in
    python that only leaves a mark, so nothing is installed whichever way the check goes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "df", f'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                         f'echo "/dev/x 100000000 1 {free_kb} 1% /"\n')
    mark = tmp_path / "python-ran"
    _fake(bin_dir, "python3", f'touch "{mark}"; exit 7\n')
    venv = tmp_path / "not" / "yet" / "venv"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DDTOOL_VENV": str(venv),
           "PYTHON": str(bin_dir / "python3")}
    r = subprocess.run(["bash", str(ROOT / "dev.sh"), "setup"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    return r, venv, mark


def test_a_first_install_without_room_stops_in_one_line_and_writes_nothing(tmp_path):
    r, venv, mark = _setup(tmp_path, free_kb=3 * 1024 * 1024)          # 3 GiB, the CI disk that failed
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "GiB free" in lines[0] and "has 3.0 GiB" in lines[0] and "DDTOOL_VENV" in lines[0]
    assert not venv.exists() and not mark.exists()


def test_with_room_it_goes_on_to_create_the_environment(tmp_path):
    r, venv, mark = _setup(tmp_path, free_kb=20 * 1024 * 1024)
    assert mark.exists(), r.stderr                                      # got past the check to `python -m venv`
    assert r.returncode == 7 and "GiB free" not in r.stderr
