"""``ddtool eval`` and ``ddtool train-full``: options -> settings -> :mod:`ddtoolbox.evaluate`."""

from __future__ import annotations

from ... import hookimpl
from ...config import PROTOCOLS, EvalSettings, TrainFullSettings
from ..parsing import add_plugin_option, add_preset_option, add_settings


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
    with lock:
        result = evaluate_synthetic(settings, report=print)
        if settings.json and is_main():
            write_json(settings.json, result)


def setup_train_full(p, pm) -> None:
    add_plugin_option(p, hidden=True)
    add_settings(p, TrainFullSettings)


def run_train_full(args, pm) -> None:
    from ...evaluate import train_full_data
    from ...io import write_json

    settings = TrainFullSettings.from_namespace(args)
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
