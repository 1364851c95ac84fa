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
    [methods.herding]             # a coreset: 'ddtool select --method herding' on the buffer's first expert
    coreset = "herding"
    options = { kcenter_start = "mean" }   # optional 'ddtool select' options
    [methods.MTT]
    matcher = "mtt"
    [methods."DATM+CPD+DAE"]
    matcher = "datm"
    plugins = ["cpd", "dae"]
    options = { cpd_alpha = 0.25 }   # extra 'ddtool distill' options for this method
    ipc = { 1 = { cpd_alpha = 0 } }  # optional: this method's options at one IPC
    datasets = ["fashion-mnist"]     # optional: only these of [bench] datasets (default: all)
    paper = { fashion-mnist = { 1 = [75.1, 0.9] } }   # optional: published mean and spread (%) per
    gpu_hours = { fashion-mnist = { 1 = 0.5 } }       # dataset and IPC, and what a cell costs on a GPU

With ``paper`` values (and ``source = "..."`` in ``[bench]`` saying where they are from),
``ddtool bench SPEC --compare`` prints each cell beside its published value.

``scores = true`` in [bench] adds DD-Ranking's LRS and ARS to every distilled and coreset cell
(``ddtool eval --scores``, with the [full] section's network as the teacher, so [full] is required),
and a table of them under the accuracies.

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
METHOD_KEYS = {"matcher", "plugins", "options", "ipc", "random", "datasets", "coreset", "paper", "gpu_hours"}
NETWORK_KEYS = ("model", "width", "depth", "norm", "pooling")


@dataclass
class Method:
    name: str
    matcher: str | None = None        #: None for the random-real baseline
    plugins: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    datasets: list[str] | None = None  #: the [bench] datasets this method runs on; None: all of them
    per_ipc: dict = field(default_factory=dict)    #: {ipc: options} on top of ``options`` at that IPC
    paper: dict = field(default_factory=dict)      #: {(dataset, ipc): (mean %, spread %) or (mean %,)} as published
    gpu_hours: dict = field(default_factory=dict)  #: {(dataset, ipc): estimated GPU hours of one cell}
    coreset: str | None = None        #: a 'ddtool select --method' (options: its options); None: not a coreset

    @property
    def random(self) -> bool:
        return self.matcher is None and self.coreset is None

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
    source: str | None = None         #: where the methods' ``paper`` values come from
    scores: bool = False              #: DD-Ranking's LRS and ARS for every distilled and coreset cell

    @property
    def network(self) -> dict:
        """The buffer's architecture options, which the random baseline and full-data training share."""
        return {k: v for k, v in self.buffer.items() if k in NETWORK_KEYS}

    def distill_options(self, ipc: int, method: Method) -> dict:
        return {**self.distill, **self.per_ipc.get(ipc, {}).get("distill", {}), **method.options,
                **method.per_ipc.get(ipc, {})}

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
    unknown = sorted(set(bench) - {"title", "datasets", "ipcs", "seeds", "scores", "source"})
    if unknown:
        raise UsageError(f"{where}: unknown [bench] key(s) {unknown}; known: datasets, ipcs, scores, seeds, source, title")
    scores = bench.get("scores", False)
    if not isinstance(scores, bool):
        raise UsageError(f"{where}: [bench] scores must be true or false (got {scores!r})")
    if scores and full is None:
        raise UsageError(f"{where}: [bench] scores = true needs a [full] section (its network is the scores' teacher "
                         f"and its accuracy their full-data accuracy)")
    return Spec(path=path, title=str(bench.get("title", path.stem)), datasets=datasets, ipcs=sorted(set(ipcs)),
                methods=methods, buffer=_table(data, "buffer", where, required=False),
                distill=_table(data, "distill", where, required=False), eval=_table(data, "eval", where, required=False),
                per_ipc=per_ipc, full=full, seeds=seeds, scores=scores,
                source=str(bench["source"]) if "source" in bench else None)


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
        if m.coreset is not None:
            check_preset(f"{spec.path} [methods.{m.name}]", {"select": m.options}, parsers)
        elif not m.random:
            for ipc in spec.ipcs:
                check_preset(f"{spec.path} [methods.{m.name}] at IPC {ipc}", {"distill": spec.distill_options(ipc, m)},
                             parsers)


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
    published = _per_cell(m, "paper", name, where, all_datasets,
                          lambda v: isinstance(v, list) and len(v) in (1, 2) and all(_number(x) and x >= 0 for x in v),
                          "[mean, spread] in percent, e.g. [46.3, 0.8] ([mean] where the paper gives no spread)")
    hours = _per_cell(m, "gpu_hours", name, where, all_datasets, lambda v: _number(v) and v > 0, "a positive number")
    m = {k: v for k, v in m.items() if k not in ("paper", "gpu_hours")}
    method = _plain_method(name, m, where, datasets)
    method.paper = {k: tuple(float(x) for x in v) for k, v in published.items()}
    method.gpu_hours = {k: float(v) for k, v in hours.items()}
    return method


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _per_cell(m, key, name, where, all_datasets, valid, what) -> dict:
    """``{dataset = {IPC = value}}`` as ``{(dataset, ipc): value}``, every entry checked."""
    table = m.get(key, {})
    out = {}
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [methods.{name}] {key} must be a table: {key} = {{ dataset = {{ IPC = value }} }}")
    for dataset, per_ipc in table.items():
        if dataset not in all_datasets or not isinstance(per_ipc, dict):
            raise UsageError(f"{where}: [methods.{name}] {key}.{dataset}: name a [bench] dataset "
                             f"({', '.join(all_datasets)}) and give a table of IPC = value")
        for ipc, value in per_ipc.items():
            if not ipc.isdigit() or not valid(value):
                raise UsageError(f"{where}: [methods.{name}] {key}.{dataset}.{ipc} = {value!r}: the key must be an "
                                 f"IPC and the value {what}")
            out[(dataset, int(ipc))] = value
    return out


def _plain_method(name, m, where, datasets) -> Method:
    if m.get("coreset") is not None:
        from ..selection import METHODS

        if set(m) - {"coreset", "options", "datasets"}:
            raise UsageError(f"{where}: [methods.{name}] is a coreset; it takes options and datasets, no matcher, "
                             f"plugins or random")
        if m["coreset"] not in METHODS:
            raise UsageError(f"{where}: [methods.{name}] coreset must be one of {', '.join(METHODS)} "
                             f"(got {m['coreset']!r})")
        options = m.get("options", {})
        if not isinstance(options, dict):
            raise UsageError(f"{where}: [methods.{name}] options must be a table of 'ddtool select' options")
        return Method(name, options=options, datasets=datasets, coreset=m["coreset"])
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
    per_ipc = m.get("ipc", {})
    if not (isinstance(per_ipc, dict) and all(k.isdigit() and isinstance(v, dict) for k, v in per_ipc.items())):
        raise UsageError(f"{where}: [methods.{name}] ipc must be a table of IPC = {{ options }}, e.g. "
                         f"ipc = {{ 10 = {{ cpd_alpha = 0.25 }} }}")
    return Method(name, m["matcher"], plugins, options, datasets, {int(k): v for k, v in per_ipc.items()})
