"""Eager against ``--compile``, end to end (start-up, data, compiling and training), on a shared CPU.

    python benchmarks/compile/bench.py WORK [--size full|small] [--rounds N] [--only NAME ...]
                                            [--note TEXT] [--records FILE]

Workloads (``--size full``; ``small`` shrinks each to seconds, to check the script):

* ``expert``: one expert, one epoch, ConvNet-3 width 32 on all 60,000 Fashion-MNIST images;
* ``eval``: one network, 300 epochs on IPC 10 (random real images), width 32;
* ``demo-buffer`` and ``demo-eval``: the demo's expert training (4 experts x 8 epochs on 1,000 images
  per class) and its evaluation of random real images (3 networks x 300 epochs of IPC 1);
* ``cifar-expert``, with ``--cifar-root DIR`` (where ``ddtool buffer --dataset cifar10 --data-root DIR``
  finds CIFAR-10): one expert epoch of ConvNet-3 width 128 on the 50,000 training images.

Each workload runs in three variants: ``eager``; ``compiled-cold`` (``--compile`` with an empty
compile cache: what a first run pays); ``compiled-warm`` (``--compile`` again on the cache the cold
run of the same round filled: what every later run pays). The variants of a round follow each other,
the eager run first in even rounds and last in odd ones, so a change in the machine's load falls on
both sides.

Every run is its own ``ddtool`` process in a session of its own (``setsid``, as
``start_new_session``): Linux's autogroup scheduler (``/proc/sys/kernel/sched_autogroup_enabled``)
shares the CPU between sessions, not processes, so a process that shares its session with a busy
shell or with other jobs gets less CPU than one alone in its session, whatever the work. The wall
time and the CPU time (user + system, from the child's rusage) are both kept, with the load
average before and after; each run is appended to ``--records`` (default
``benchmarks/compile/results.jsonl``) with the machine's facts, and the medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DDTOOL = [sys.executable, "-m", "ddtoolbox.cli"]
COMMON = ["--device", "cpu", "--threads", "1", "--quiet", "--seed", "0"]
VARIANTS = ("eager", "compiled-cold", "compiled-warm")


def workloads(size: str, out: Path, cifar_root: str | None = None) -> dict[str, list[str]]:
    """``ddtool`` argv per workload; ``out`` is this run's scratch folder."""
    small = size == "small"
    cifar = {"cifar-expert": ["buffer", "--dataset", "cifar10", "--data-root", cifar_root, "--out", str(out / "buffer"),
                              "--width", "128", "--num-experts", "1", "--epochs", "1",
                              *(["--train-subset", "20"] if small else [])]} if cifar_root else {}
    return {
        "expert": ["buffer", "--dataset", "fashion-mnist", "--out", str(out / "buffer"), "--width", "32",
                   "--num-experts", "1", "--epochs", "1", *(["--train-subset", "100"] if small else [])],
        "eval": ["eval", "--random-ipc", "10", "--dataset", "fashion-mnist", "--width", "32", "--lr", "0.01",
                 "--runs", "1", "--epochs", "20" if small else "300", "--json", str(out / "eval.json")],
        "demo-buffer": ["buffer", "--dataset", "fashion-mnist", "--out", str(out / "buffer"), "--width", "32",
                        *(["--train-subset", "50", "--num-experts", "2", "--epochs", "2"] if small else
                          ["--train-subset", "1000", "--num-experts", "4", "--epochs", "8"])],
        "demo-eval": ["eval", "--random-ipc", "1", "--dataset", "fashion-mnist", "--width", "32", "--lr", "0.01",
                      "--runs", "3" if not small else "2", "--epochs", "20" if small else "300",
                      "--json", str(out / "eval.json")],
        **cifar,
    }


def machine() -> dict:
    """What the numbers depend on: CPU, cores, scheduler, versions, date."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        autogroup = None
    return {"host": platform.node(), "cpu": model, "cores": os.cpu_count(), "sched_autogroup_enabled": autogroup,
            "python": platform.python_version(), "torch": torch.__version__,
            "compiler": shutil.which(os.environ.get("CXX", "g++")),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_once(argv: list[str], env: dict, log: Path) -> dict:
    """One process in its own session; its wall time, CPU time and exit status."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "exit": proc.returncode, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="scratch folder (buffers, caches, log.txt)")
    p.add_argument("--size", choices=("full", "small"), default="full")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=("expert", "eval", "demo-buffer", "demo-eval", "cifar-expert"))
    p.add_argument("--cifar-root", help="folder holding prepared CIFAR-10: adds the cifar-expert workload")
    p.add_argument("--note", default="", help="recorded with every run, e.g. 'measured under load'")
    p.add_argument("--records", type=Path, default=HERE / "results.jsonl")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    facts = machine()
    names = args.only or list(workloads(args.size, work, args.cifar_root))
    if "cifar-expert" in names and not args.cifar_root:
        p.error("cifar-expert needs --cifar-root DIR")
    results: dict[tuple[str, str], list[dict]] = {}
    base_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[1:] + VARIANTS[:1]
        for name in names:
            cache = work / "cache" / f"{name}-round{r}"
            shutil.rmtree(cache, ignore_errors=True)      # cold: nothing compiled yet
            for variant in order:
                scratch = work / "scratch"
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
                argv = [*DDTOOL, *workloads(args.size, scratch, args.cifar_root)[name], *COMMON]
                if variant != "eager":
                    argv.append("--compile")
                env = {**base_env, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
                with open(log, "a") as fh:
                    fh.write(f"\n# round {r} {name} {variant}\n$ {' '.join(argv)}\n")
                rec = {"workload": name, "variant": variant, "round": r, "size": args.size, **run_once(argv, env, log)}
                results.setdefault((name, variant), []).append(rec)
                print(f"round {r} {name:12s} {variant:14s} {rec['wall_s']:8.1f} s wall {rec['cpu_s']:8.1f} s cpu  "
                      f"load {rec['load_before'][0]:.2f} -> {rec['load_after'][0]:.2f}"
                      + ("" if rec["exit"] == 0 else f"  FAILED (exit {rec['exit']}; see {log})"), flush=True)
                with open(args.records, "a") as fh:
                    fh.write(json.dumps({**rec, "argv": argv[len(DDTOOL):], "note": args.note, **facts}) + "\n")
    print(f"\nmedians over {args.rounds} round(s), ratio = eager / variant (above 1: the variant is faster)")
    print(f"{'workload':12s} {'variant':14s} {'wall s':>8s} {'ratio':>6s} {'cpu s':>8s} {'ratio':>6s}  load (1 min)")
    for name in names:
        eager = results.get((name, "eager"), [])
        for variant in VARIANTS:
            runs = [x for x in results.get((name, variant), []) if x["exit"] == 0]
            if not runs:
                print(f"{name:12s} {variant:14s} {'failed':>8s}")
                continue
            wall, cpu = (statistics.median(x[k] for x in runs) for k in ("wall_s", "cpu_s"))
            ok = [x for x in eager if x["exit"] == 0]
            ew, ec = ((statistics.median(x[k] for x in ok) for k in ("wall_s", "cpu_s")) if ok else (None, None))
            loads = [x["load_before"][0] for x in runs] + [x["load_after"][0] for x in runs]
            print(f"{name:12s} {variant:14s} {wall:8.1f} {ew / wall if ew else float('nan'):6.2f} {cpu:8.1f} "
                  f"{ec / cpu if ec else float('nan'):6.2f}  {min(loads):.2f}-{max(loads):.2f}")
    print(f"\nrecords appended to {args.records}; {facts['cores']} cores, autogroup {facts['sched_autogroup_enabled']}")
    return 0 if all(x["exit"] == 0 for runs in results.values() for x in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
