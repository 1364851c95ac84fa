"""Run the tests from a checkout without installing the package: put ddtoolbox_dc on the path if it is not."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("ddtoolbox_dc") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
