"""The store of full-data accuracies: the upper bound every distilled set is measured against.

``ddtool train-full`` (:func:`ddtoolbox.evaluate.train_full`) trains fresh networks on the whole
training split with the evaluation protocol's training loop, tests them, and stores the accuracy here, in a small JSON
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
from .finite import require_finite_number
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


def result_key(dataset: str, model: str, options: dict, images: dict | None = None) -> str:
    """The store's key. ``images`` (:func:`ddtoolbox.data.image_record`) keeps apart accuracies on
    images made differently: ZCA-whitened or not, squashed or cropped to size, and other copies of
    the data (a prepared store's content id, which also tells sizes apart). Plain images add
    nothing, so keys written before these were recorded still match."""
    name, opts = canonical(model, options)
    key = f"{dataset}/{name}/" + ",".join(f"{k}={opts[k]}" for k in sorted(opts))
    images = images or {}
    if images.get("resize"):
        key += f"|resize={images['resize']}"
    if images.get("zca"):
        key += "|zca"
    if images.get("source"):
        key += f"|source={images['source']}"
    return key


def read_store(path) -> dict:
    path = Path(path)
    if not path.exists():
        return {"format": STORE_FORMAT, "results": {}}
    store = read_json(path, "full-data results", f"delete {path} and re-run 'ddtool train-full'")
    if store.get("format") != STORE_FORMAT or not isinstance(store.get("results"), dict):
        raise UsageError(f"{path} is not a ddtoolbox full-data results file; point --full-results elsewhere or delete it")
    return store


def lookup_full(path, dataset: str, model: str, options: dict, images: dict | None = None) -> dict | None:
    """The stored full-data result for this dataset, model and options on images made as ``images``
    says, or None."""
    return read_store(path)["results"].get(result_key(dataset, model, options, images))


def store_full(path, dataset: str, model: str, options: dict, result: dict, settings: dict,
               images: dict | None = None) -> dict:
    """Add (or replace) one entry and rewrite the store atomically; return the entry."""
    for key in ("mean", "std"):
        require_finite_number(result[key], f"the full-data accuracy's {key}", "re-run 'ddtool train-full' with a "
                              "lower --lr")
    store = read_store(path)
    name, opts = canonical(model, options)
    entry = {"dataset": dataset, "model": name, "model_options": opts,
             "mean": result["mean"], "std": result["std"], "runs": result["runs"], **settings, **(images or {}),
             "ddtoolbox_version": __version__,
             "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    store["results"][result_key(dataset, model, options, images)] = entry
    write_json(path, store)
    return entry
