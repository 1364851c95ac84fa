"""DATM matcher (soft labels, difficulty-aligned start epochs, loss threshold) and the DATM/EDF presets.

Installed as the ``datm`` plugin (entry point group ``ddtoolbox``). ``--matcher datm`` activates it.
Presets: ``datm/<dataset>/ipcN`` (DATM's published CIFAR-10 settings) and ``edf/<dataset>/ipcN``
(the EDF paper's Tables 8 and 11; they need the ``ddtoolbox-edf`` plugin for CPD and DAE).
"""

from __future__ import annotations

from pathlib import Path

from ddtoolbox import hookimpl
from ddtoolbox.presets import register_folder

from .matcher import DATM, DATMOptions, mean_correct_logits, start_epoch_upper

__version__ = "0.1.0"
__all__ = ["DATM", "DATMOptions", "mean_correct_logits", "start_epoch_upper", "PRESET_DIR"]

#: where the TOML presets live: ``PRESET_DIR / "datm"`` and ``PRESET_DIR / "edf"``
PRESET_DIR = Path(__file__).parent / "presets"


@hookimpl
def register_matchers(register):
    register(DATM)


@hookimpl
def register_presets(register):
    register_folder(register, PRESET_DIR / "datm", "datm")
    register_folder(register, PRESET_DIR / "edf", "edf")


@hookimpl
def add_options(command):
    return DATMOptions if command == "distill" else None
