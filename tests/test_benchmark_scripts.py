"""The CPU benchmark scripts: valid, and launching every variant they compare in a session of its own
(the kernel's autogroup scheduler shares the CPU between sessions; see docs/benchmarks.md)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_scripts_are_valid_and_launch_in_own_sessions():
    for script in ("benchmarks/scaling/run.sh", "benchmarks/compile/run.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True).returncode == 0, script
    scaling = (ROOT / "benchmarks/scaling/run.sh").read_text()
    launches = [line for line in scaling.splitlines() if "$bin/ddtool" in line or "$bin/torchrun" in line]
    assert launches and all("setsid --wait" in line for line in launches), launches
    driver = (ROOT / "benchmarks/compile/bench.py").read_text()
    assert driver.count("subprocess.Popen(") == 1 and "start_new_session=True" in driver


def test_the_compile_driver_documents_itself():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/compile/bench.py"), "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--rounds" in r.stdout and "--size" in r.stdout
