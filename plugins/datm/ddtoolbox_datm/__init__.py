"""DATM matcher (soft labels, difficulty-aligned start epochs, loss threshold) and the DATM/EDF presets.

Installed as the ``datm`` plugin (entry point group ``ddtoolbox``). ``--matcher datm`` activates it.
Presets: ``datm/<dataset>/ipcN`` (DATM's published CIFAR-10 settings) and ``edf/<dataset>/ipcN``
(the EDF paper's Tables 8 and 11; they need the ``ddtoolbox-edf`` plugin for CPD and DAE).
"""

from __future__ import annotations

from pathlib import Path

from ddtoolbox import hookimpl
from ddtoolbox.presets import register_folder

from .matcher import DATM, mean_correct_logits, start_epoch_upper

__version__ = "0.1.0"
__all__ = ["DATM", "mean_correct_logits", "start_epoch_upper", "PRESET_DIR"]

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
def add_options(command, parser):
    if command != "distill":
        return
    from ddtoolbox.cli import non_negative_int, positive_float, positive_int

    parser.add_argument("--current-max-start-epoch", type=positive_int, default=None, metavar="N",
                        help="datm: upper bound (exclusive) of the start epoch at iteration 0; it grows "
                             "linearly to --max-start-epoch at --expansion-end-epoch (default: half of "
                             "--max-start-epoch)")
    parser.add_argument("--expansion-end-epoch", type=positive_int, default=1000, metavar="IT",
                        help="datm: the iteration at which the start-epoch window reaches --max-start-epoch "
                             "(DATM's name; it counts iterations, default 1000)")
    parser.add_argument("--no-sequential-generation", dest="no_sequential_generation", action="store_true",
                        default=False,
                        help="datm: draw start epochs from the full [--min-start-epoch, --max-start-epoch) "
                             "from the first iteration (sequential generation is on by default)")
    parser.add_argument("--sequential-generation", dest="no_sequential_generation", action="store_false",
                        help="datm: grow the start-epoch window (the default; undoes a preset's "
                             "--no-sequential-generation)")
    parser.add_argument("--threshold", type=positive_float, default=None, metavar="L",
                        help="datm: skip the image, lr and label steps of an iteration whose matching loss "
                             "exceeds L (default: never skip)")
    parser.add_argument("--label-experts", type=non_negative_int, default=0, metavar="N",
                        help="datm: use the first N experts' final snapshots to pick initial images and "
                             "initialise soft labels (default 0: all experts)")
