"""Run a benchmark grid cell by cell, so that an interrupted benchmark loses at most one cell.

Layout under the output folder::

    buffers/<dataset>/               one expert buffer per dataset ('ddtool buffer --resume')
    full/<dataset>/result.json       full-data accuracy, when the spec has [full]
    cells/<dataset>/ipc<N>/<method>/ run/ (distill output), eval.json, log.txt, result.json
        seed<S>/                     with [bench] seeds: run/, eval.json, result.json per seed

A cell counts as done exactly when its ``result.json`` exists. A cell is computed in
``<method>.new/`` and renamed into place only once its ``result.json`` is written, so an
interrupted cell is never half-counted and a finished cell being rerun is kept until its
replacement succeeds. With several seeds (``[bench] seeds``) each seed folder follows the same
rule inside the staging folder, so an interrupted cell keeps the seeds it finished (under the
settings the spec still has) and reruns only the others; the cell's ``result.json`` pools every
seed's networks. Each step runs as its own ``ddtool`` process (``execute`` can be swapped, which the
tests do), so one cell's plugins, RNG or crash cannot leak into the next.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..checkpoint import checkpoint_path
from ..errors import Signalled, UsageError
from ..io import read_json, write_json
from ..presets import as_flags
from .spec import Method, Spec

#: ``execute(argv, log_path)`` runs ``ddtool argv`` and raises on failure.
Executor = Callable[[list[str], Path], None]

#: the children running now (several at once with ``bench --devices``), so an interrupt stops them all
_children: set = set()
_children_lock = threading.Lock()


def stop_children() -> None:
    """Ask every running child to stop (a distillation then writes its checkpoint)."""
    with _children_lock:
        for child in list(_children):
            if child.poll() is None:
                child.terminate()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the bench process dies, even by kill -9 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_in_subprocess(argv: list[str], log: Path) -> None:
    """Run ``ddtool argv`` as a child process, its output appended to ``log``.

    The child never outlives the bench: if the bench is interrupted (SIGINT, SIGTERM) it is asked to
    stop (a distillation then writes its checkpoint) and waited for; if the bench is killed outright,
    the operating system sends it SIGTERM.
    """
    _check_stop()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ ddtool {shlex.join(argv)}\n")
        fh.flush()
        child = subprocess.Popen([sys.executable, "-m", "ddtoolbox", *argv], stdout=fh, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        with _children_lock:
            _children.add(child)
        if _stop_signals:        # the signal came while the child was being started
            child.terminate()
        try:
            code = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
        finally:
            with _children_lock:
                _children.discard(child)
    _check_stop()
    if code in (130, 143):
        raise Signalled(code - 128)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise UsageError(f"'ddtool {argv[0]}' failed (exit {code}): {tail[0]}; full log in {log}")


@dataclass
class Cell:
    dataset: str
    ipc: int
    method: Method

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.dataset / f"ipc{self.ipc}" / self.method.slug

    def __str__(self):
        return f"{self.dataset} IPC {self.ipc} {self.method.name}"


def cells_of(spec: Spec) -> list[Cell]:
    return [Cell(d, ipc, m) for d in spec.datasets for ipc in spec.ipcs for m in spec.methods
            if m.datasets is None or d in m.datasets]


#: written in a cell's (or seed's) folder when an attempt starts: the settings it runs under
ATTEMPT = "attempt.json"
#: the full-data network saved as the teacher of ``eval --scores`` ([bench] scores = true)
TEACHER = "teacher.pt"


def score_rounds(evaluations: list[dict]) -> dict:
    """``{"scores": {"LRS": {mean, std, rounds}, "ARS": ...}}`` pooled over the evaluations' rounds
    (one evaluation, or one per seed), or ``{}`` when they carry none (``eval --scores``)."""
    pooled = {}
    for name in ("LRS", "ARS"):
        rounds = [v for e in evaluations for v in (e.get("scores", {}).get(name, {}).get("rounds") or [])]
        if rounds:
            pooled[name] = {"mean": statistics.fmean(rounds), "rounds": rounds,
                            "std": statistics.pstdev(rounds) if len(rounds) > 1 else 0.0}
    return {"scores": pooled} if pooled else {}


def cell_result(out: Path, cell: Cell) -> dict | None:
    path = cell.folder(out) / "result.json"
    return read_json(path, "cell result", "delete the cell folder to rerun it") if path.is_file() else None


def staging_folder(folder: Path) -> Path:
    """Where a cell is computed until it is finished and moved to ``folder``."""
    return folder.with_name(folder.name + ".new")


def same_but_seeds(a: dict, b: dict) -> bool:
    """Two cells' settings agree on everything one seed's result depends on: each seed's result
    serves any list of seeds it belongs to."""
    return {k: v for k, v in a.items() if k != "seeds"} == {k: v for k, v in b.items() if k != "seeds"}


def full_folder(out: Path, dataset: str) -> Path:
    return out / "full" / dataset


def full_result(out: Path, dataset: str) -> dict | None:
    path = full_folder(out, dataset) / "result.json"
    return read_json(path, "full-data result", f"delete {path.parent} to rerun it") if path.is_file() else None


#: the signals a running bench received: noted by the handler, acted on where a child is started or waited for
_stop_signals: list = []


def _terminated(signum, frame):
    """SIGINT / SIGTERM while the bench runs: note it and ask the children to stop. Raising here
    instead could land inside ``subprocess.Popen``'s fork handlers, which swallow exceptions, and
    leave the bench waiting for a child that was never told to stop."""
    _stop_signals.append(signum)
    for _ in range(3):      # no lock in a signal handler: the main thread may hold it; retry a copy instead
        try:
            children = list(_children)
            break
        except RuntimeError:   # the set changed size while copied (another thread started a cell)
            children = []
    for child in children:
        try:
            child.terminate()
        except OSError:
            pass


def _check_stop() -> None:
    if _stop_signals:
        raise Signalled(_stop_signals[0])    # exit 143 (SIGTERM) / 130 (SIGINT), as the README says


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _distill_seconds(run: Path) -> float:
    """The seconds a distillation spent over all its attempts (``meta.seconds`` in its metrics), 0 if none."""
    try:
        return float(json.loads((run / "metrics.json").read_text())["meta"]["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class BenchRunner:
    def __init__(self, spec: Spec, out, common: list[str], environment: dict, parsers: dict,
                 execute: Executor = run_in_subprocess, progress: bool = True, devices=None, ipcs=None):
        self.spec, self.out, self.common, self.parsers = spec, Path(out), list(common), parsers
        #: ``bench --ipc``: run only these IPCs' cells (None: all), e.g. the CPU-sized half of a GPU spec
        self.ipcs = set(ipcs) if ipcs else None
        #: with several, cells run at once, one per device (``bench --devices cuda:0,cuda:1``)
        self.devices = list(devices or [])
        self.environment, self.execute, self.progress = environment, execute, progress
        self._buffers_checked: set[str] = set()

    def flags(self, command: str, values: dict) -> list[str]:
        return as_flags(values, self.parsers[command])

    # ------------------------------------------------------------------ steps

    def buffer_dir(self, dataset: str) -> Path:
        return self.out / "buffers" / dataset

    def ensure_buffer(self, dataset: str) -> None:
        """Train the missing experts; once per run, so that a changed [buffer] is caught by --resume."""
        if dataset in self._buffers_checked:
            return
        argv = ["buffer", "--dataset", dataset, "--out", str(self.buffer_dir(dataset)), "--resume",
                *self.flags("buffer", self.spec.buffer), *self.common]
        self.execute(argv, self.out / "buffers" / f"{dataset}.log")
        self._buffers_checked.add(dataset)

    def ensure_full(self, dataset: str) -> dict | None:
        """Full-data accuracy of the buffer's architecture, trained once per dataset."""
        if self.spec.full is None:
            return None
        folder = full_folder(self.out, dataset)
        teacher = ["--save-model", str(folder / TEACHER)] if self.spec.scores else []
        if full_result(self.out, dataset) is None or (teacher and not (folder / TEACHER).is_file()):
            shutil.rmtree(folder, ignore_errors=True)
            model = self.spec.network
            argv = ["train-full", "--dataset", dataset, *self.flags("train-full", {**model, **self.spec.full}),
                    "--full-results", str(folder / "full-data.json"), "--json", str(folder / "train-full.json"),
                    *teacher, *self.common]
            start = time.time()
            self.execute(argv, folder / "log.txt")
            record = read_json(folder / "train-full.json", "train-full result", f"see {folder / 'log.txt'}")
            write_json(folder / "result.json", {"dataset": dataset, "command": "ddtool " + shlex.join(argv),
                                                "seconds": round(time.time() - start, 1), **self.environment,
                                                "result": record})
        return full_result(self.out, dataset)

    def settings(self, cell: Cell) -> dict:
        """What the spec asks of ``cell``; recorded with its result so that spec edits are noticed."""
        seeds = {"seeds": self.spec.seeds} if self.spec.seeds is not None else {}
        if self.spec.scores and not cell.method.random:
            seeds["scores"] = True                 # only when asked, so older cells' settings stay the same
        if cell.method.random:
            return {"random": True, "model": self.spec.network,
                    "eval": self.spec.eval_options(cell.ipc), **seeds}
        if cell.method.coreset is not None:
            return {"buffer": self.spec.buffer, "coreset": cell.method.coreset, "select": cell.method.options,
                    "eval": self.spec.eval_options(cell.ipc), **seeds}
        return {"buffer": self.spec.buffer, "matcher": cell.method.matcher, "plugins": cell.method.plugins,
                "distill": self.spec.distill_options(cell.ipc, cell.method), "eval": self.spec.eval_options(cell.ipc),
                **seeds}

    def changed(self, cell: Cell) -> bool:
        """Finished, but under settings the spec no longer has (a changed list of seeds aside)."""
        result = cell_result(self.out, cell)
        return result is not None and not same_but_seeds(result.get("settings", {}), self.settings(cell))

    def reseeded(self, cell: Cell) -> bool:
        """Finished under the spec's settings but for another list of seeds: the seeds it has are
        kept, the new ones are run, and the cell is pooled again over the spec's seeds."""
        result = cell_result(self.out, cell)
        return result is not None and same_but_seeds(result.get("settings", {}), self.settings(cell)) \
            and result.get("seeds") != self.spec.seeds

    def common_flags(self, device: str | None = None, seed_flags=()) -> list[str]:
        """The flags every command gets; ``device`` replaces the common ``--device``, and a seed in
        ``seed_flags`` the common ``--seed`` (so a logged command names the seed it ran with once)."""
        common = list(self.common)
        if device is not None and "--device" in common:
            common[common.index("--device") + 1] = device
        elif device is not None:
            common += ["--device", device]
        if "--seed" in seed_flags and "--seed" in common:
            at = common.index("--seed")
            del common[at:at + 2]
        return common

    def commands_of(self, cell: Cell, folder: Path, seed_flags=(), device: str | None = None) -> list[list[str]]:
        """The ``ddtool`` command lines that compute ``cell`` in ``folder`` (``seed_flags`` follow the common flags)."""
        common = self.common_flags(device, seed_flags)
        eval_json = folder / "eval.json"
        eval_flags = self.flags("eval", self.spec.eval_options(cell.ipc))
        if cell.method.random:
            model = self.flags("eval", self.spec.network)
            return [["eval", "--random-ipc", str(cell.ipc), "--dataset", cell.dataset, *model, *eval_flags,
                     "--json", str(eval_json), *common, *seed_flags]]
        run_dir = folder / "run"
        if self.spec.scores:
            full = full_folder(self.out, cell.dataset)
            eval_flags += ["--scores", "--teacher", str(full / TEACHER), "--full-results", str(full / "full-data.json")]
        evaluate = ["eval", "--synthetic", str(run_dir / "synthetic.pt"), *eval_flags, "--json", str(eval_json),
                    *common, *seed_flags]
        if cell.method.coreset is not None:
            return [["select", "--method", cell.method.coreset, "--dataset", cell.dataset, "--ipc", str(cell.ipc),
                     "--buffer", str(self.buffer_dir(cell.dataset)), "--out", str(run_dir),
                     *self.flags("select", cell.method.options), *common, *seed_flags], evaluate]
        plugins = [x for p in cell.method.plugins for x in ("--plugin", p)]
        return [["distill", "--dataset", cell.dataset, "--ipc", str(cell.ipc),
                 "--buffer", str(self.buffer_dir(cell.dataset)), "--out", str(run_dir),
                 "--matcher", cell.method.matcher, *plugins,
                 *self.flags("distill", self.spec.distill_options(cell.ipc, cell.method)), *common,
                 *seed_flags], evaluate]

    def run_cell(self, cell: Cell, device: str | None = None) -> dict:
        """Compute ``cell`` in a staging folder and swap it in only when it succeeded, so a finished
        cell being rerun (--rerun-changed) is kept until its replacement is complete."""
        folder = cell.folder(self.out)
        staging = staging_folder(folder)
        if folder.exists() and not (folder / "result.json").exists():
            shutil.rmtree(folder)                          # the remains of an attempt from before staging
        if not cell.method.random:
            self.ensure_buffer(cell.dataset)
        if self.spec.seeds is not None:
            record = self._run_seeds(cell, staging, device)
        else:
            settings = self.settings(cell)
            if self._attempt(staging, settings) is None:
                shutil.rmtree(staging, ignore_errors=True)    # an attempt under other settings starts from scratch
            evaluation, commands, seconds = self._run_once(cell, staging, staging / "log.txt", [], device, settings)
            record = {"dataset": cell.dataset, "ipc": cell.ipc, "method": cell.method.name,
                      "mean": evaluation["mean"], "std": evaluation["std"], "runs": evaluation["runs"],
                      "settings": settings, "commands": commands, "seconds": seconds, **self.environment,
                      **score_rounds([evaluation])}
        record["commands"] = [c.replace(str(staging), str(folder)) for c in record["commands"]]
        write_json(staging / "result.json", record)
        retired = folder.with_name(folder.name + ".old")
        shutil.rmtree(retired, ignore_errors=True)
        if folder.exists():
            folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
        return record

    def _run_seeds(self, cell: Cell, folder: Path, device: str | None = None) -> dict:
        """Every seed of ``cell`` not finished yet, each in ``folder/seed<S>/``; then the pooled record."""
        settings = self.settings(cell)
        wanted = {f"seed{s}" for s in self.spec.seeds}

        def reusable(entry: Path) -> bool:
            done = entry / "result.json"
            return entry.name in wanted and done.is_file() and \
                same_but_seeds(read_json(done, "seed result", f"delete {entry}").get("settings", {}), settings)

        if folder.exists():  # keep what an interrupted attempt did under these settings
            for entry in folder.iterdir():
                if not (reusable(entry) or (entry.name in wanted and self._attempt(entry, settings) is not None)):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        finished = cell.folder(self.out)
        for entry in (finished.iterdir() if finished.is_dir() else ()):   # and those of the finished cell
            if not (folder / entry.name).exists() and reusable(entry):
                shutil.copytree(entry, folder / entry.name)
        start, per_seed, commands, scored = time.time(), [], [], []
        for seed in self.spec.seeds:
            sub = folder / f"seed{seed}"
            done = sub / "result.json"
            if not done.is_file():
                evaluation, argvs, seconds = self._run_once(cell, sub, sub / "log.txt", ["--seed", str(seed)], device,
                                                            settings)
                write_json(done, {"seed": seed, "mean": evaluation["mean"], "std": evaluation["std"],
                                  "runs": evaluation["runs"], "settings": settings, "commands": argvs,
                                  "seconds": seconds, **self.environment, **score_rounds([evaluation])})
            result = read_json(done, "seed result", f"delete {sub} to rerun it")
            scored.append({"scores": result["scores"]} if "scores" in result else {})
            per_seed.append({k: result[k] for k in ("seed", "mean", "std", "runs", "seconds")})
            commands += result["commands"]
        runs = [acc for r in per_seed for acc in r["runs"]]
        return {"dataset": cell.dataset, "ipc": cell.ipc, "method": cell.method.name,
                "mean": statistics.fmean(runs), "std": statistics.pstdev(runs) if len(runs) > 1 else 0.0,
                "runs": runs, "seeds": list(self.spec.seeds), "per_seed": per_seed, "settings": settings,
                "commands": commands, "seconds": round(sum(r["seconds"] for r in per_seed), 1),
                "seconds_this_attempt": round(time.time() - start, 1), **self.environment, **score_rounds(scored)}

    def continued(self, cell: Cell) -> list[str]:
        """What an interrupted attempt at ``cell`` left that the next run continues, in words (for
        ``--dry-run``): the seeds finished, the distillations that will resume from a checkpoint."""
        staging = staging_folder(cell.folder(self.out))
        settings = self.settings(cell)
        parts = {"": staging} if self.spec.seeds is None else \
            {f"seed {s} ": staging / f"seed{s}" for s in self.spec.seeds}
        words = []
        for name, part in parts.items():
            if name and (part / "result.json").is_file():
                words.append(f"{name}done")
            elif self._attempt(part, settings) is not None and checkpoint_path(part / "run").is_file():
                words.append(f"{name}resumes from its checkpoint")
        return words

    @staticmethod
    def _attempt(folder: Path, settings: dict) -> dict | None:
        """The record (``attempt.json``) of an unfinished attempt at these very settings in
        ``folder``, which the next attempt continues (a published distillation is kept, a
        checkpointed one resumed); ``None`` if there is none to continue."""
        path = folder / ATTEMPT
        if not path.is_file() or (folder / "result.json").exists():
            return None
        record = read_json(path, "attempt record", f"delete {folder}")
        return record if same_but_seeds(record.get("settings", {}), settings) else None

    def _run_once(self, cell: Cell, folder: Path, log: Path, seed_flags: list[str],
                  device: str | None = None, settings: dict | None = None) -> tuple[dict, list[str], float]:
        """Distil (unless random) and evaluate ``cell`` into ``folder``; the evaluation, the commands
        run and the seconds they took, earlier attempts' distillation included.

        An interrupted attempt (same settings, see :meth:`_attempt`) is continued: a distillation
        that published its set is not run again, and one that left a checkpoint gets ``--resume``,
        so a long cell stopped by a signal, a crash or the end of a session loses at most the work
        since its last checkpoint."""
        commands = self.commands_of(cell, folder, seed_flags, device)
        if settings is not None and not cell.method.random:
            run_dir = folder / "run"
            flags = self.common_flags(device)
            now_on = flags[flags.index("--device") + 1] if "--device" in flags else None
            began_on = (self._attempt(folder, settings) or {}).get("device", now_on)
            if (run_dir / "manifest.json").is_file() and (run_dir / "synthetic.pt").is_file():
                commands = commands[1:]
            elif checkpoint_path(run_dir).is_file():
                # a run resumes on the device it began on, so its result is bit for bit the
                # uninterrupted one's; with --devices that device may be busy with another cell for a while
                commands[0] = [*self.commands_of(cell, folder, seed_flags, began_on)[0], "--resume"]
            else:
                shutil.rmtree(run_dir, ignore_errors=True)   # stopped before its first checkpoint
                began_on = now_on
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / ATTEMPT, {"settings": settings, "device": began_on})
        start, distilling = time.time(), 0.0
        for argv in commands:
            began = time.time()
            self.execute(argv, log)
            if argv[0] == "distill":
                distilling = time.time() - began
        # a resumed distillation's own clock counts its earlier attempts too; the wall clock here does not
        earlier = max(0.0, _distill_seconds(folder / "run") - distilling)
        return read_json(folder / "eval.json", "evaluation result", f"see {log}"), \
            ["ddtool " + shlex.join(a) for a in commands], round(time.time() - start + earlier, 1)

    def check(self, manager, only: set[str] | None = None) -> None:
        """Every cell's commands parse and make valid settings, every matcher, plugin and dataset
        exists: checked before the first cell runs, so a typo never surfaces hours in."""
        from ..config import BufferConfig, DistillConfig, EvalSettings
        from ..data import dataset_info
        from ..selection import SelectSettings

        for dataset in self.spec.datasets:
            dataset_info(dataset)
        epochs = {}      # each dataset's buffer: its experts' epochs, known before any is trained
        for dataset in self.spec.datasets:
            argv = ["--dataset", dataset, "--out", str(self.buffer_dir(dataset)),
                    *self.flags("buffer", self.spec.buffer), *self.common]
            try:
                epochs[dataset] = BufferConfig.from_namespace(self.parsers["buffer"].parse_args(argv)).train_epochs
            except UsageError as exc:
                raise UsageError(f"{self.spec.path} [buffer]: {exc}") from None
        for cell in self.selected(only):
            for argv in self.commands_of(cell, cell.folder(self.out)):
                where = f"{self.spec.path}, cell {cell}"
                try:
                    args = self.parsers[argv[0]].parse_args(argv[1:])
                except UsageError as exc:
                    raise UsageError(f"{where}: {exc}") from None
                if argv[0] == "eval":
                    EvalSettings.from_namespace(args)
                    continue
                if argv[0] == "select":
                    SelectSettings.from_namespace(args)
                    continue
                config = DistillConfig.from_namespace(args)
                needed = config.max_start_epoch + config.expert_epochs
                if needed > epochs[cell.dataset]:
                    raise UsageError(f"{where}: max_start_epoch + expert_epochs = {needed}, but the [buffer] experts "
                                     f"train for {epochs[cell.dataset]} epochs; lower them or raise [buffer] "
                                     f"train_epochs (found before training anything)")
                manager.matcher(config.matcher)
                active = manager.activate(args.plugins + [p for p in cell.method.plugins if p not in args.plugins])
                manager.plugin_options("distill", manager.option_values("distill", args), active + [manager.matcher(config.matcher).plugin])

    # ------------------------------------------------------------------ the grid

    def selected(self, only: set[str] | None = None) -> list[Cell]:
        return [c for c in cells_of(self.spec) if (only is None or c.method.name in only)
                and (self.ipcs is None or c.ipc in self.ipcs)]

    def todo(self, only: set[str] | None = None, rerun_changed: bool = False) -> tuple[list[Cell], list[Cell]]:
        """The cells to run, and the finished cells whose settings differ from the spec's."""
        cells = self.selected(only)
        changed = [c for c in cells if self.changed(c)]
        todo = [c for c in cells if cell_result(self.out, c) is None or self.reseeded(c)
                or (rerun_changed and c in changed)]
        return todo, changed

    def run(self, only: set[str] | None = None, rerun_changed: bool = False, log=tqdm.write) -> list[dict]:
        _stop_signals.clear()
        previous = {sig: signal.signal(sig, _terminated) for sig in (signal.SIGINT, signal.SIGTERM)} \
            if _main_thread() else {}
        try:
            return self._run(only, rerun_changed, log)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self, only, rerun_changed, log) -> list[dict]:
        todo, changed = self.todo(only, rerun_changed)
        if changed and not rerun_changed:
            log(f"warning: {len(changed)} finished cell(s) ran with settings the spec no longer has "
                f"({', '.join(map(str, changed))}); they are kept: pass --rerun-changed to run them again")
        total = len(self.selected(only))
        if len(todo) < total:
            log(f"{total - len(todo)} of {total} cells already done in {self.out}; running the other {len(todo)}")
        for dataset in self.spec.datasets:
            full = self.ensure_full(dataset)
            if full is not None:
                log(f"{dataset}: full-data accuracy {full['result']['mean'] * 100:.2f}%")
        if len(self.devices) > 1 and len(todo) > 1:
            return self._run_on_devices(todo, log)
        records = []
        bar = tqdm(todo, desc="bench", unit="cell", disable=not self.progress)
        for cell in bar:
            bar.set_postfix_str(str(cell))
            record = self.run_cell(cell)
            records.append(record)
            log(f"{cell}: {record['mean'] * 100:.2f} ± {record['std'] * 100:.2f}% ({record['seconds']:.0f} s)")
        return records

    def _run_on_devices(self, todo: list[Cell], log) -> list[dict]:
        """``--devices``: one cell per device at a time; each cell's commands get its device.

        The buffers are made (or checked) first, one after the other. An interrupt stops every
        running child; the cells that finished keep their results, as in a sequential run.
        """
        import concurrent.futures
        import queue

        for dataset in dict.fromkeys(c.dataset for c in todo if not c.method.random):
            self.ensure_buffer(dataset)
        free = queue.Queue()
        for device in self.devices:
            free.put(device)

        def work(cell: Cell) -> dict:
            device = free.get()
            try:
                return self.run_cell(cell, device)
            finally:
                free.put(device)

        records = {}
        bar = tqdm(total=len(todo), desc="bench", unit="cell", disable=not self.progress)
        with concurrent.futures.ThreadPoolExecutor(len(self.devices)) as pool:
            futures = {pool.submit(work, cell): i for i, cell in enumerate(todo)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    record = future.result()
                    records[futures[future]] = record
                    bar.update(1)
                    log(f"{todo[futures[future]]}: {record['mean'] * 100:.2f} ± {record['std'] * 100:.2f}% "
                        f"({record['seconds']:.0f} s)")
            except BaseException:
                for future in futures:
                    future.cancel()
                stop_children()
                raise
        bar.close()
        return [records[i] for i in sorted(records)]
