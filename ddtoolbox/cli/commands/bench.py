"""``ddtool bench SPEC``: run a benchmark grid's missing cells and render its table (:mod:`ddtoolbox.bench`)."""

from __future__ import annotations

from pathlib import Path

from ... import hookimpl
from ...config import CommonSettings
from ...errors import UsageError
from ...options import add_arguments
from ..parsing import build_parser


def setup(p, pm) -> None:
    p.add_argument("spec", help="benchmark spec (TOML; see docs/evaluation.md and benchmarks/*/spec.toml)")
    p.add_argument("--out", default=None, help="results folder (default: the spec's folder)")
    p.add_argument("--method", dest="methods", action="append", default=None, metavar="NAME",
                   help="run only this method's cells (repeatable); the table still shows every finished cell")
    p.add_argument("--ipc", dest="ipcs", action="append", type=int, default=None, metavar="N",
                   help="run only this IPC's cells (repeatable); the table still shows every finished cell")
    p.add_argument("--rerun-changed", action="store_true",
                   help="also rerun finished cells whose settings differ from the spec's now (default: keep them, with a warning)")
    p.add_argument("--render-only", action="store_true", help="run nothing; redraw the table and plot")
    p.add_argument("--dry-run", action="store_true", help="print the cells still to run and stop")
    p.add_argument("--compare", action="store_true",
                   help="run nothing; print each cell beside the paper's value given in the spec (methods' paper = ...) "
                        "and say whether it lies within the published spread")
    p.add_argument("--devices", default=None, metavar="LIST",
                   help="run several cells at once, one per listed device, e.g. cuda:0,cuda:1 (a device listed twice runs two "
                        "cells on it); default: one cell at a time on --device")
    add_arguments(p, CommonSettings)


def run(args, pm) -> None:
    from ...bench.report import render
    from ...bench.runner import BenchRunner, cell_result, full_result
    from ...bench.spec import check_spec, read_spec
    from ...runtime import resolve_device
    from ...runtime import environment

    spec = read_spec(args.spec)
    parsers = build_parser(pm).commands
    check_spec(spec, parsers)
    out = Path(args.out) if args.out else spec.path.parent
    if args.compare:
        from ...bench.report import comparison

        print(comparison(spec, out), end="")
        return
    unknown = sorted(set(args.methods or ()) - {m.name for m in spec.methods})
    if unknown:
        raise UsageError(f"--method {unknown[0]} is not in {spec.path}; its methods: {', '.join(m.name for m in spec.methods)}")
    stray = sorted(set(args.ipcs or ()) - set(spec.ipcs))
    if stray:
        raise UsageError(f"--ipc {stray[0]} is not in {spec.path}; its IPCs: {', '.join(map(str, spec.ipcs))}")
    only = set(args.methods) if args.methods else None
    devices = [str(resolve_device(d.strip())) for d in args.devices.split(",")] if args.devices else []
    device = resolve_device(devices[0] if devices else args.device)
    common = ["--seed", str(args.seed), "--device", str(device), "--quiet"]
    if args.data_root:
        common += ["--data-root", args.data_root]
    if args.threads:
        common += ["--threads", str(args.threads)]
    if not args.dry_run:
        from ...outputs import check_writable

        check_writable(out, what="results folder")     # before any cell runs, not after the first
    runner = BenchRunner(spec, out, common, environment(device), parsers, progress=not args.quiet, devices=devices,
                         ipcs=args.ipcs)
    if not args.render_only:
        runner.check(pm, only)
    if args.dry_run:
        todo, changed = runner.todo(only, args.rerun_changed)
        full = [d for d in spec.datasets if spec.full is not None and full_result(out, d) is None]
        print(f"{len(todo) + len(full)} step(s) to run in {out}:" if todo or full else f"every cell is done in {out}")
        for dataset in full:
            print(f"  {dataset} full-data training")
        seeds = f" x seeds {', '.join(map(str, spec.seeds))}" if spec.seeds else ""
        for cell in todo:
            note = " (settings changed)" if cell in changed else ""
            if runner.reseeded(cell) and not note:
                kept = [s for s in cell_result(out, cell).get("seeds") or [] if s in spec.seeds]
                note = f" (seeds {', '.join(map(str, kept))} kept)" if kept else ""
            elif not note and (left := runner.continued(cell)):
                note = f" ({', '.join(left)})"
            print(f"  {cell}{seeds}{note}")
        for cell in changed:
            if cell not in todo:
                print(f"  kept, though its settings changed: {cell} (--rerun-changed reruns it)")
        return
    if not args.render_only:
        runner.run(only, args.rerun_changed)
    written = render(spec, out)
    print("wrote " + ", ".join(str(p) for p in written.values()))


@hookimpl
def register_commands(register):
    register("bench", setup=setup, run=run, help="run a benchmark grid from a spec file and render its table",
             description="Run every cell (dataset x IPC x method) of a benchmark spec that is not done yet, then "
                         "write table.md, table.csv and plot.png. Rerunning skips finished cells; an interrupted "
                         "cell is rerun from scratch.")
