"""``ddtool eval`` and ``ddtool train-full``: options -> settings -> :mod:`ddtoolbox.evaluate`."""

from __future__ import annotations

from ... import hookimpl
from ...config import PROTOCOLS, EvalSettings, TrainFullSettings
from ..parsing import add_plugin_option, add_preset_option, add_settings
from ...runtime import stops_resumably


def setup_eval(p, pm) -> None:
    p.epilog = ("protocols (--protocol): " + "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items())
                + ". See docs/evaluation.md.")
    add_plugin_option(p, hidden=True)
    add_preset_option(p)
    add_settings(p, EvalSettings)


def run_eval(args, pm) -> None:
    from ...evaluate import evaluate_synthetic
    from ...io import write_json

    import contextlib

    from ...outputs import OutputLock, check_file_writable
    from ...parallel import is_main

    settings = EvalSettings.from_namespace(args)
    lock = contextlib.nullcontext()
    if settings.json and is_main():      # one writer per --json file (and its .partial progress)
        target = check_file_writable(settings.json, option="--json")
        lock = OutputLock(target.parent, "--json", file=target.name)
    with lock, stops_resumably(lambda name: _eval_stopped(name, settings.json)):
        if settings.scores:
            from ...ranking import score_set

            result = score_set(settings, report=print)
        else:
            result = evaluate_synthetic(settings, report=print)
        if settings.json and is_main():
            write_json(settings.json, result)


def _eval_stopped(signal_name: str, json_path) -> str:
    """The line a SIGINT or SIGTERM ends ``eval`` with: what is kept (``FILE.partial``), how to go on."""
    import json
    from pathlib import Path

    if not json_path:
        return (f"{signal_name}: evaluation stopped; nothing was written (with --json FILE, finished networks are kept "
                f"for a rerun)")
    partial = Path(json_path).with_name(Path(json_path).name + ".partial")
    try:
        done = sum(len(v) for v in json.loads(partial.read_text())["done"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        done = 0
    return (f"{signal_name}: evaluation stopped; {done} finished network(s) kept in {partial}; run the same command "
            f"again to continue")


def setup_train_full(p, pm) -> None:
    add_plugin_option(p, hidden=True)
    add_settings(p, TrainFullSettings)


def run_train_full(args, pm) -> None:
    from ...evaluate import train_full_data
    from ...io import write_json

    settings = TrainFullSettings.from_namespace(args)
    with stops_resumably(lambda name: f"{name}: full-data training stopped; nothing was stored; run the command "
                                      f"again (it starts afresh)"):
        entry = train_full_data(settings, report=print)
    if settings.json:
        write_json(settings.json, {**entry, "what": f"full data of {entry['dataset']}"})


@hookimpl
def register_commands(register):
    register("eval", setup=setup_eval, run=run_eval,
             help="train fresh networks on a synthetic set (or random real images) and test them",
             description="Train fresh networks on a synthetic set (or random real images), test them, and report "
                         "mean ± std, plus the recovery ratio (distilled / full-data accuracy) where 'ddtool "
                         "train-full' stored a full-data accuracy for the same dataset, model and options.")
    register("train-full", setup=setup_train_full, run=run_train_full,
             help="train on the whole training set: full-data accuracy (recovery ratios) and KD teachers",
             description="Train fresh networks on the whole training split with the evaluation protocol's loop "
                         "(SGD momentum 0.9, wd 5e-4, x0.1 at the midpoint, DSA), test them, and store the "
                         "accuracy for 'ddtool eval' to print recovery ratios.")
