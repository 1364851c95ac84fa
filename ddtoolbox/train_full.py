"""Full-data training: the upper bound every distilled set is measured against.

``ddtool train-full`` trains fresh networks on the whole training split with the evaluation
protocol's training loop (:func:`ddtoolbox.evaluate.train_on_set`: SGD momentum 0.9, weight decay
5e-4, one x0.1 decay at the midpoint, DSA), tests them, and stores the accuracy in a small JSON
file, keyed by dataset, model and the model's full options (defaults filled in, so
``ConvNet`` and ``ConvNetD3`` with default options are the same key). ``ddtool eval`` looks the
matching entry up and prints the *recovery ratio*, distilled accuracy / full-data accuracy.

Where the store lives: ``--full-results FILE`` if given, else ``$DDTOOL_HOME/full-data.json``, else
``$XDG_CACHE_HOME/ddtoolbox/full-data.json``, else ``~/.cache/ddtoolbox/full-data.json``.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import os
import re
from pathlib import Path

from . import __version__
from .errors import UsageError
from .io import read_json, user_cache_dir, write_json
from .models import canonical_model_name
from .models.registry import model_defaults

STORE_FORMAT = "ddtoolbox-full-data"
STORE_NAME = "full-data.json"


def default_store_path() -> Path:
    if os.environ.get("DDTOOL_HOME"):
        return Path(os.environ["DDTOOL_HOME"]) / STORE_NAME
    return user_cache_dir() / STORE_NAME


def store_path(override=None) -> Path:
    return Path(override) if override else default_store_path()


def canonical(model: str, options: dict) -> tuple[str, dict]:
    """``(name, options)`` with the registered spelling and every default filled in.

    The ConvNet family is one key: ``ConvNetD4`` is ``ConvNet`` with ``depth=4``.
    """
    name = canonical_model_name(model)
    opts = dict(options)
    m = re.fullmatch(r"ConvNetD(\d+)", name)
    if name == "ConvNet" or m:
        from .models.convnet import ConvNet

        defaults = {p.name: p.default for p in list(inspect.signature(ConvNet.__init__).parameters.values())[4:]}
        if m:
            opts["depth"] = int(m.group(1))
        name = "ConvNet"
    else:
        defaults = model_defaults(name)
    return name, {**defaults, **opts}


def result_key(dataset: str, model: str, options: dict) -> str:
    name, opts = canonical(model, options)
    return f"{dataset}/{name}/" + ",".join(f"{k}={opts[k]}" for k in sorted(opts))


def read_store(path) -> dict:
    path = Path(path)
    if not path.exists():
        return {"format": STORE_FORMAT, "results": {}}
    store = read_json(path, "full-data results", f"delete {path} and re-run 'ddtool train-full'")
    if store.get("format") != STORE_FORMAT or not isinstance(store.get("results"), dict):
        raise UsageError(f"{path} is not a ddtoolbox full-data results file; point --full-results elsewhere or delete it")
    return store


def lookup_full(path, dataset: str, model: str, options: dict) -> dict | None:
    """The stored full-data result for this dataset, model and options, or None."""
    return read_store(path)["results"].get(result_key(dataset, model, options))


def store_full(path, dataset: str, model: str, options: dict, result: dict, settings: dict) -> dict:
    """Add (or replace) one entry and rewrite the store atomically; return the entry."""
    store = read_store(path)
    name, opts = canonical(model, options)
    entry = {"dataset": dataset, "model": name, "model_options": opts,
             "mean": result["mean"], "std": result["std"], "runs": result["runs"], **settings,
             "ddtoolbox_version": __version__,
             "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    store["results"][result_key(dataset, model, options)] = entry
    write_json(path, store)
    return entry


def train_full(*, train_set, test_set, model: str, model_options: dict, epochs: int, lr: float,
               batch_size: int, augment, runs: int, device, save_model=None, progress: bool = True) -> dict:
    """Train ``runs`` networks on all of ``train_set``, test each; optionally save the first."""
    import torch

    from .evaluate import EvalConfig, summarise, train_on_set
    from .trajectories import accuracy

    if runs < 1:
        raise UsageError(f"--runs must be at least 1 (got {runs})")
    cfg = EvalConfig(model, model_options, epochs, batch_size, augment=augment)
    x_test, y_test = test_set.images.to(device), test_set.labels.to(device)
    accs = []
    for r in range(runs):
        net = train_on_set(cfg, train_set.images, train_set.labels, lr, train_set.info, device,
                           progress=progress, desc=f"train-full {r + 1}/{runs}")
        accs.append(accuracy(net, x_test, y_test))
        if progress:
            print(f"network {r + 1}: test accuracy {accs[-1] * 100:.2f}%")
        if r == 0 and save_model:
            from .teacher import save_model as save

            save(save_model, net, model=canonical_model_name(model), model_options=model_options,
                 info=train_set.info, extra={"test_accuracy": accs[-1], "epochs": epochs, "lr": lr,
                                             "train_images": len(train_set)})
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return summarise(accs)
