"""What a run folder holds, read for the report: metrics.json, its evaluations and its pictures.

A run folder is the ``--out`` of ``ddtool distill``. It holds ``metrics.json`` (settings,
provenance and one record per iteration), ``synthetic.png`` (the final images, one row per class),
``snapshots/synthetic_itNNNNNN.png`` (the images after N iterations, ``--snapshot-every``) and,
with the ``dae`` plugin, ``dae/maps_itNNNNNN.png`` and ``dae/maps_final.png``. A final evaluation
comes from the history's ``eval_*`` entries (``--eval-every``) or from an ``eval.json`` written by
``ddtool eval --json`` into the run folder (as ``ddtool edf-ablation`` does) or beside it (as
``ddtool bench`` does, when it names this run's ``synthetic.pt``).

Only ``metrics.json`` is required; everything else is shown when it is there.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError, warn

METRICS = "metrics.json"
EVAL_FILE = "eval.json"
_ITERATION = re.compile(r"_it(\d+)\.png$")

#: record keys the report plots in their own panels; other numeric keys are "other logged values"
KNOWN_KEYS = {"iteration", "loss", "syn_lr", "skipped", "eval_mean", "eval_std", "eval_runs", "eval_seconds",
              "dae_area", "dae_area_final", "cpd_full_loss", "expert", "start_epoch"}


@dataclass
class Picture:
    """A PNG of the run and what it shows."""

    path: Path
    caption: str
    iteration: int | None = None   #: iterations done when it was taken (None: the end)


@dataclass
class Evaluation:
    """A final evaluation of the run's synthetic set."""

    source: str                     #: where the numbers come from, in words
    mean: float
    std: float
    runs: list                      #: the accuracy of each fresh network
    recovery: float | None = None   #: mean / full-data accuracy, when a full-data accuracy is known
    full_accuracy: float | None = None
    models: list = field(default_factory=list)   #: eval.json's per-model results (cross-architecture)


@dataclass
class RunData:
    """One run folder, read."""

    path: Path
    metrics: dict
    history: list
    evaluation: Evaluation | None
    in_run_evals: list              #: the history's records that hold ``eval_mean``
    eval_file: Path | None
    snapshots: list                 #: :class:`Picture` s, oldest first, the final images last
    dae_maps: list                  #: :class:`Picture` s of DAE's overlays, oldest first
    notes: list = field(default_factory=list)   #: things the reader should know (unreadable files, ...)

    @property
    def meta(self) -> dict:
        return self.metrics.get("meta") or {}

    @property
    def config(self) -> dict:
        """The core settings (older metrics files kept them, with the plugins' options, under ``args``)."""
        return self.metrics.get("config") or self.metrics.get("args") or {}

    @property
    def options(self) -> dict:
        """``{plugin: {field: value}}`` of the plugins' options."""
        return self.metrics.get("options") or {}

    @property
    def environment(self) -> dict:
        return self.metrics.get("environment") or {}

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def series(self, key: str, x_offset: int = 1) -> tuple[list, list]:
        """``(x, y)`` of a numeric (or true/false) record key; x counts iterations done (record iteration +
        ``x_offset``)."""
        xs, ys = [], []
        for r in self.history:
            v = r.get(key)
            if (_is_number(v) or isinstance(v, bool)) and _is_number(r.get("iteration")):
                xs.append(r["iteration"] + x_offset)
                ys.append(float(v))
        return xs, ys

    def other_keys(self) -> list[str]:
        """Numeric keys plugins logged that have no panel of their own, in first-seen order."""
        seen: dict[str, int] = {}
        for r in self.history:
            for k, v in r.items():
                if k not in KNOWN_KEYS and _is_number(v) and not isinstance(v, bool):
                    seen[k] = seen.get(k, 0) + 1
        return [k for k, n in seen.items() if n >= 2]

    def last(self, key: str):
        for r in reversed(self.history):
            if _is_number(r.get(key)):
                return r[key]
        return None

    def seconds_per_iteration(self) -> tuple[float | None, float | None]:
        """Seconds per iteration with and without the in-run evaluations (None when unknown)."""
        total = self.metrics.get("seconds_per_iteration")
        iterations = len(self.history)
        if not _is_number(total) or not iterations:
            return None, None
        eval_seconds = [r["eval_seconds"] for r in self.history if _is_number(r.get("eval_seconds"))]
        if len(eval_seconds) < len(self.in_run_evals):
            return total, None          # evaluations whose time was not recorded (older runs)
        return total, max(total - sum(eval_seconds) / iterations, 0.0)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _iteration_of(path: Path) -> int | None:
    m = _ITERATION.search(path.name)
    return int(m.group(1)) if m else None


def find_run_dir(path) -> Path:
    """The run folder ``path`` names (a folder, or its metrics.json); a one-line error otherwise."""
    path = Path(path)
    if path.is_file() and path.name == METRICS:
        path = path.parent
    if not path.exists():
        raise UsageError(f"run folder {path} does not exist; give the --out folder of a finished 'ddtool distill'")
    if not path.is_dir():
        raise UsageError(f"{path} is not a run folder; give the --out folder of a finished 'ddtool distill'")
    if not (path / METRICS).is_file():
        runs = sorted(p.parent.name for p in path.glob(f"*/{METRICS}"))
        if runs:
            shown = " ".join(str(path / r) for r in runs[:4]) + (" ..." if len(runs) > 4 else "")
            raise UsageError(f"{path} has no {METRICS} but holds runs in subfolders; give them: "
                             f"ddtool report {shown}")
        raise UsageError(f"{path} has no {METRICS}, so it is not a finished run ('ddtool distill' writes it at "
                         f"the end); give the --out folder of a finished run")
    return path


def read_metrics(run_dir: Path) -> dict:
    file = run_dir / METRICS
    try:
        metrics = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{file} is truncated or not valid JSON ({exc.msg} at line {exc.lineno}); re-run the "
                         f"distillation, or restore the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file} cannot be read ({exc}); check the file, or re-run the distillation") from exc
    if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list):
        raise UsageError(f"{file} is not a ddtoolbox metrics file (no 'history' list); give the --out folder "
                         f"of 'ddtool distill'")
    metrics["history"] = [r for r in metrics["history"] if isinstance(r, dict)]
    return metrics


def load_run(path) -> RunData:
    """Read a run folder; a missing or broken ``metrics.json`` is a :class:`UsageError`."""
    run_dir = find_run_dir(path)
    metrics = read_metrics(run_dir)
    history = metrics["history"]
    notes: list[str] = []
    in_run = [r for r in history if _is_number(r.get("eval_mean"))]
    eval_file, eval_json = _find_eval_file(run_dir, notes)
    evaluation = None
    if eval_json is not None:
        evaluation = _from_eval_json(eval_json, eval_file)
    elif in_run:
        evaluation = _from_history(in_run[-1], metrics)
    snapshots = [Picture(p, _snapshot_caption(_iteration_of(p)), _iteration_of(p))
                 for p in sorted((run_dir / "snapshots").glob("synthetic_it*.png"), key=_iteration_of_or_zero)]
    if (run_dir / "synthetic.png").is_file():
        done = len(history)
        snapshots.append(Picture(run_dir / "synthetic.png", f"final ({done})", None))
    maps = sorted((run_dir / "dae").glob("maps_it*.png"), key=_iteration_of_or_zero)
    dae_maps = [Picture(p, _snapshot_caption(_iteration_of(p)), _iteration_of(p)) for p in maps]
    if (run_dir / "dae" / "maps_final.png").is_file():
        dae_maps.append(Picture(run_dir / "dae" / "maps_final.png", "final", None))
    return RunData(path=run_dir, metrics=metrics, history=history, evaluation=evaluation, in_run_evals=in_run,
                   eval_file=eval_file, snapshots=snapshots, dae_maps=dae_maps, notes=notes)


def _iteration_of_or_zero(path: Path) -> int:
    return _iteration_of(path) or 0


def _snapshot_caption(iterations: int | None) -> str:
    if iterations is None:
        return "?"
    return "initial" if iterations == 0 else f"after {iterations}"


def _find_eval_file(run_dir: Path, notes: list) -> tuple[Path | None, dict | None]:
    """``RUN/eval.json``, else an eval.json beside the run folder that names this run's synthetic.pt."""
    inside, beside = run_dir / EVAL_FILE, run_dir.parent / EVAL_FILE
    candidates = [(inside, False)] + ([(beside, True)] if beside.is_file() and run_dir.parent != run_dir else [])
    for file, must_name_run in candidates:
        if not file.is_file():
            continue
        try:
            result = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            message = f"{file} could not be read ({exc}); the report leaves it out"
            warn(message)
            notes.append(message)
            continue
        if not isinstance(result, dict) or not _is_number(result.get("mean")):
            notes.append(f"{file} is not a result of 'ddtool eval --json'; the report leaves it out")
            continue
        if must_name_run and f"{run_dir.name}/synthetic.pt" not in str(result.get("what", "")):
            continue
        return file, result
    return None, None


def _from_eval_json(result: dict, file: Path) -> Evaluation:
    runs = [v for v in result.get("runs", []) if _is_number(v)]
    detail = []
    if result.get("protocol"):
        detail.append(f"{result['protocol']} protocol")
    if result.get("model"):
        detail.append(f"{len(runs)} {result['model']} network{'s' if len(runs) != 1 else ''}")
    if _is_number(result.get("epochs")):
        detail.append(f"{result['epochs']} epochs each")
    source = f"{file.name} ('ddtool eval'{': ' + ', '.join(detail) if detail else ''})"
    models = [m for m in result.get("results", []) if isinstance(m, dict) and _is_number(m.get("mean"))]
    return Evaluation(source=source, mean=result["mean"], std=result.get("std") or 0.0, runs=runs,
                      recovery=result.get("recovery") if _is_number(result.get("recovery")) else None,
                      full_accuracy=result.get("full_accuracy") if _is_number(result.get("full_accuracy")) else None,
                      models=models if len(models) > 1 else [])


def _from_history(record: dict, metrics: dict) -> Evaluation:
    runs = [v for v in record.get("eval_runs", []) if _is_number(v)] if isinstance(record.get("eval_runs"), list) else []
    config = metrics.get("config") or metrics.get("args") or {}
    epochs = config.get("eval_epochs")
    source = (f"the evaluation after iteration {record['iteration'] + 1} (--eval-every: {len(runs)} fresh "
              f"network{'s' if len(runs) != 1 else ''}{f' x {epochs} epochs' if epochs else ''})")
    full = _full_accuracy(metrics)
    return Evaluation(source=source, mean=record["eval_mean"], std=record.get("eval_std") or 0.0, runs=runs,
                      recovery=record["eval_mean"] / full if full else None, full_accuracy=full)


def _full_accuracy(metrics: dict) -> float | None:
    """The stored full-data accuracy (``ddtool train-full``) of the run's dataset and network, if any."""
    meta = metrics.get("meta") or {}
    if not (meta.get("dataset") and meta.get("model")):
        return None
    try:
        from ..full_results import lookup_full, store_path

        entry = lookup_full(store_path(), meta["dataset"], meta["model"], meta.get("model_options") or {},
                            {"resize": meta.get("resize"), "zca": meta.get("zca", False)})
    except (UsageError, ValueError, TypeError):
        return None
    mean = entry.get("mean") if entry else None
    return mean if _is_number(mean) and mean > 0 else None
