"""The benchmark spec: a small TOML file naming a grid of datasets x IPCs x methods.

::

    [bench]
    title = "Fashion-MNIST, CPU-sized"
    datasets = ["fashion-mnist"]
    ipcs = [1, 10]
    seeds = [0, 1]                # optional: run every cell once per seed (default: once, with --seed)

    [buffer]                      # 'ddtool buffer' options, one buffer per dataset
    width = 32
    num_experts = 4

    [distill]                     # 'ddtool distill' options shared by every method
    iterations = 200

    [eval]                        # 'ddtool eval' options for every cell
    eval_runs = 3

    [ipc.10.distill]              # overrides for one IPC (also [ipc.N.eval])
    iterations = 100

    [full]                        # optional: 'ddtool train-full' options; gives the recovery row
    epochs = 20

    [methods.random]              # random real images per class
    random = true
    [methods.MTT]
    matcher = "mtt"
    [methods."DATM+CPD+DAE"]
    matcher = "datm"
    plugins = ["cpd", "dae"]
    options = { cpd_alpha = 0.25 }   # extra 'ddtool distill' options for this method
    datasets = ["fashion-mnist"]     # optional: only these of [bench] datasets (default: all)

Keys are option destinations, as in presets (``syn_steps`` for ``--syn-steps``), and every one is
checked against the real parser before anything runs: a typo must fail in the first second, not
after an hour of buffers.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

SECTIONS = {"bench", "buffer", "distill", "eval", "ipc", "full", "methods"}
METHOD_KEYS = {"matcher", "plugins", "options", "random", "datasets"}
NETWORK_KEYS = ("model", "width", "depth", "norm", "pooling")


@dataclass
class Method:
    name: str
    matcher: str | None = None        #: None for the random-real baseline
    plugins: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    datasets: list[str] | None = None  #: the [bench] datasets this method runs on; None: all of them

    @property
    def random(self) -> bool:
        return self.matcher is None

    @property
    def slug(self) -> str:
        """A folder name for the method's cells: readable, and stable while the name is."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_").lower() or "method"


@dataclass
class Spec:
    path: Path
    title: str
    datasets: list[str]
    ipcs: list[int]
    methods: list[Method]
    buffer: dict
    distill: dict
    eval: dict
    per_ipc: dict                     #: {ipc: {"distill": {...}, "eval": {...}}}
    full: dict | None                 #: train-full options, or None for no full-data row
    seeds: list[int] | None = None    #: run each cell once per seed (distill and eval); None: once, with --seed

    @property
    def network(self) -> dict:
        """The buffer's architecture options, which the random baseline and full-data training share."""
        return {k: v for k, v in self.buffer.items() if k in NETWORK_KEYS}

    def distill_options(self, ipc: int, method: Method) -> dict:
        return {**self.distill, **self.per_ipc.get(ipc, {}).get("distill", {}), **method.options}

    def eval_options(self, ipc: int) -> dict:
        return {**self.eval, **self.per_ipc.get(ipc, {}).get("eval", {})}


def read_spec(path) -> Spec:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"benchmark spec {path} does not exist; see 'ddtool bench --help' for its format") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"benchmark spec {path} is not a text file (byte {exc.start} is not UTF-8); give a TOML "
                         f"spec (see benchmarks/*/spec.toml)") from exc
    except OSError as exc:
        from ..outputs import os_problem

        raise UsageError(f"benchmark spec cannot be read ({os_problem(exc, path)}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"benchmark spec {path} cannot be read: {exc}") from exc
    where = f"benchmark spec {path}"
    unknown = sorted(set(data) - SECTIONS)
    if unknown:
        raise UsageError(f"{where}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    bench = _table(data, "bench", where)
    datasets = bench.get("datasets")
    if not (isinstance(datasets, list) and datasets and all(isinstance(d, str) for d in datasets)):
        raise UsageError(f"{where}: [bench] needs datasets = [\"name\", ...]")
    ipcs = bench.get("ipcs")
    if not (isinstance(ipcs, list) and ipcs and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1
                                                    for i in ipcs)):
        raise UsageError(f"{where}: [bench] needs ipcs = [1, 10, ...] (positive integers)")
    if len(set(ipcs)) != len(ipcs):
        twice = sorted({i for i in ipcs if ipcs.count(i) > 1})
        raise UsageError(f"{where}: [bench] ipcs lists {', '.join(map(str, twice))} more than once; list each IPC once")
    methods_table = _table(data, "methods", where, required=False)
    if not methods_table:
        raise UsageError(f"{where}: no [methods.NAME] tables; add at least one method")
    methods = [_method(name, m, where, datasets) for name, m in methods_table.items()]
    slugs = [m.slug for m in methods]
    if len(set(slugs)) != len(slugs):
        raise UsageError(f"{where}: method names {[m.name for m in methods]} collide as folder names")
    per_ipc = {}
    for key, value in _table(data, "ipc", where, required=False).items():
        if not (key.isdigit() and isinstance(value, dict) and set(value) <= {"distill", "eval"}):
            raise UsageError(f"{where}: [ipc.{key}] must be [ipc.N.distill] or [ipc.N.eval] with N an IPC")
        if int(key) not in ipcs:    # its settings would never be used: a typo, or an IPC left out of ipcs
            raise UsageError(f"{where}: [ipc.{key}] is for IPC {int(key)}, which is not in [bench] ipcs = {ipcs}; add "
                             f"it there or drop the table")
        per_ipc[int(key)] = value
    full = data.get("full")
    if full is not None and not isinstance(full, dict):
        raise UsageError(f"{where}: [full] must be a table of 'ddtool train-full' options")
    seeds = bench.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and len(set(seeds)) == len(seeds)
                                  and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise UsageError(f"{where}: [bench] seeds must be a list of distinct non-negative integers, e.g. "
                         f"seeds = [0, 1] (got {seeds!r}); leave it out to run each cell once with --seed")
    unknown = sorted(set(bench) - {"title", "datasets", "ipcs", "seeds"})
    if unknown:
        raise UsageError(f"{where}: unknown [bench] key(s) {unknown}; known: datasets, ipcs, seeds, title")
    return Spec(path=path, title=str(bench.get("title", path.stem)), datasets=datasets, ipcs=sorted(set(ipcs)),
                methods=methods, buffer=_table(data, "buffer", where, required=False),
                distill=_table(data, "distill", where, required=False), eval=_table(data, "eval", where, required=False),
                per_ipc=per_ipc, full=full, seeds=seeds)


def check_spec(spec: Spec, parsers: dict) -> None:
    """Every option must belong to its command, so a typo fails before hours of work."""
    from ..presets import check_preset

    sections = {"buffer": spec.buffer, "eval": spec.eval}
    if spec.full is not None:
        sections["train-full"] = spec.full
    for ipc, over in spec.per_ipc.items():
        if "eval" in over:
            check_preset(f"{spec.path} [ipc.{ipc}.eval]", {"eval": over["eval"]}, parsers)
        if "distill" in over:
            check_preset(f"{spec.path} [ipc.{ipc}.distill]", {"distill": over["distill"]}, parsers)
    check_preset(str(spec.path), sections, parsers)
    for m in spec.methods:
        if not m.random:
            check_preset(f"{spec.path} [methods.{m.name}]", {"distill": spec.distill_options(spec.ipcs[0], m)}, parsers)


def _table(data, name, where, required=True) -> dict:
    value = data.get(name, {} if not required else None)
    if not isinstance(value, dict):
        raise UsageError(f"{where}: missing or malformed [{name}] table")
    return value


def _method(name, m, where, all_datasets) -> Method:
    if not isinstance(m, dict) or set(m) - METHOD_KEYS:
        raise UsageError(f"{where}: [methods.{name}] may only set {sorted(METHOD_KEYS)}")
    datasets = m.get("datasets")
    if datasets is not None:
        if not (isinstance(datasets, list) and datasets and all(isinstance(d, str) for d in datasets)):
            raise UsageError(f"{where}: [methods.{name}] datasets must be a non-empty list of dataset names")
        unknown = [d for d in datasets if d not in all_datasets]
        if unknown:
            raise UsageError(f"{where}: [methods.{name}] datasets {unknown} are not in [bench] datasets "
                             f"{all_datasets}; add them there or drop them here")
    if m.get("random"):
        if set(m) - {"random", "datasets"}:
            raise UsageError(f"{where}: [methods.{name}] is the random baseline; it takes no matcher, plugins or options")
        return Method(name, datasets=datasets)
    if not isinstance(m.get("matcher"), str):
        raise UsageError(f"{where}: [methods.{name}] needs matcher = \"mtt\" (or random = true)")
    plugins = m.get("plugins", [])
    if not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
        raise UsageError(f"{where}: [methods.{name}] plugins must be a list of plugin names")
    options = m.get("options", {})
    if not isinstance(options, dict):
        raise UsageError(f"{where}: [methods.{name}] options must be a table")
    return Method(name, m["matcher"], plugins, options, datasets)
