"""``ddtool bench-speed``: time, peak memory and FLOP rate of one distillation iteration per unroll mode."""

from __future__ import annotations

from dataclasses import dataclass

from ... import hookimpl
from ...config import NETWORK, CommonSettings, NetworkSettings
from ...options import add_arguments, option, positive_float, positive_int
from ...unroll import EXACT_MODES


@dataclass(kw_only=True)
class SpeedNetwork(NetworkSettings):
    model: str = option("ConvNet", "architecture (see 'ddtool plugins'); default ConvNet", metavar="NAME",
                        group=NETWORK)


def setup(p, pm) -> None:
    p.add_argument("--channels", type=positive_int, default=1, help="image channels (default 1)")
    p.add_argument("--size", type=positive_int, default=28, help="image side in pixels (default 28)")
    p.add_argument("--num-classes", type=positive_int, default=10, help="classes (default 10)")
    p.add_argument("--ipc", type=positive_int, default=10, help="images per class (default 10)")
    p.add_argument("--batch-syn", type=positive_int, default=None, help="images per student step (default all)")
    p.add_argument("--syn-steps", type=positive_int, default=20, help="student steps (default 20)")
    p.add_argument("--modes", nargs="+", choices=EXACT_MODES, default=list(EXACT_MODES),
                   help="unroll modes to measure (default both)")
    p.add_argument("--iterations", type=positive_int, default=3, help="timed iterations (median; default 3)")
    p.add_argument("--no-dsa", action="store_true", help="no augmentation")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on Ampere+ GPUs")
    p.add_argument("--peak-tflops", type=positive_float, default=None,
                   help="the device's peak TFLOP/s, to report achieved/peak (default: data sheet for known GPUs, an estimate for CPUs)")
    results = p.add_argument("--results", default="benchmarks/speed-results.jsonl",
                             help="JSON-lines file to append to (default benchmarks/speed-results.jsonl; '' for none)")
    results.allow_empty = True     # '' means "append nowhere"
    add_arguments(p, SpeedNetwork)
    add_arguments(p, CommonSettings)


def run(args, pm) -> None:
    from ...models import model_options
    from ...runtime import configure_backends, environment, resolve_device
    from ...speed import append_results, hardware_peak_tflops, measure

    from ...outputs import check_file_writable

    device = resolve_device(args.device)
    if args.results:
        check_file_writable(args.results, option="--results")     # before the timing, not after it
    configure_backends(device, args.tf32)
    opts = model_options(args.model, args)
    env = environment(device)
    config = {"channels": args.channels, "size": args.size, "num_classes": args.num_classes, "model": args.model,
              "model_options": opts, "ipc": args.ipc, "batch_syn": args.batch_syn, "syn_steps": args.syn_steps,
              "dsa": not args.no_dsa, "tf32": args.tf32}
    print(f"bench-speed on {env['device']}: {args.model} {opts}, {args.channels}x{args.size}x{args.size}, "
          f"IPC {args.ipc} x {args.num_classes} classes, batch_syn {args.batch_syn or 'all'}, {args.syn_steps} steps")
    peak = (args.peak_tflops, "given with --peak-tflops") if args.peak_tflops else hardware_peak_tflops(device, args.tf32)
    if peak:
        print(f"hardware peak {peak[0] * 1000:.1f} GFLOP/s ({peak[1]})")
    rows = []
    for mode in args.modes:
        r = measure(mode, channels=args.channels, size=args.size, num_classes=args.num_classes, model=args.model,
                    model_options=opts, ipc=args.ipc, batch_syn=args.batch_syn, syn_steps=args.syn_steps,
                    device=device, iterations=args.iterations, dsa=not args.no_dsa, seed=args.seed)
        if peak:
            r.update(peak_tflops=peak[0], peak_source=peak[1], fraction_of_peak=r["achieved_tflops"] / peak[0])
        share = f" ({r['fraction_of_peak']:.0%} of peak)" if peak else ""
        print(f"  {mode:<13} {r['seconds_per_iteration'] * 1000:9.1f} ms/iteration   peak {r['peak_memory_bytes'] / 2**20:9.1f} MiB   "
              f"{r['gflop_per_iteration']:8.1f} GFLOP -> {r['achieved_tflops'] * 1000:.1f} GFLOP/s achieved{share}")
        rows.append({**env, **config, **r})
    if args.results:
        append_results(args.results, rows)
        print(f"appended to {args.results}")


@hookimpl
def register_commands(register):
    register("bench-speed", setup=setup, run=run,
             help="time and memory of one distillation iteration per unroll mode")
