"""``ddtool distill``: options -> :class:`ddtoolbox.DistillConfig` -> :func:`ddtoolbox.distill`."""

from __future__ import annotations

from pathlib import Path

from ... import hookimpl
from ...config import DistillConfig
from ..parsing import add_plugin_option, add_preset_option, add_settings, plugin_values


def setup(p, pm) -> None:
    add_plugin_option(p)
    add_preset_option(p)
    add_settings(p, DistillConfig, pm, "distill")
    p.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html at the end (see 'ddtool report')")


def run(args, pm) -> None:
    from ...distillation import distill
    from ...evaluate import format_result

    config = DistillConfig.from_namespace(args)
    run = distill(config, plugins=args.plugins, options=plugin_values(args, pm, "distill"), manager=pm)
    extra = [p for p in run.plugins if p != run.config.matcher]
    print(f"distilled {len(run.images)} images ({config.ipc} per class) with {config.matcher}"
          f"{' + ' + ', '.join(extra) if extra else ''}; "
          f"final loss {run.loss:.4f}, learned lr {run.syn_lr.item():.4g}")
    evals = [h for h in run.history if "eval_mean" in h]
    if evals:
        print(f"accuracy at iteration {evals[-1]['iteration'] + 1}: "
              f"{format_result({'mean': evals[-1]['eval_mean'], 'std': evals[-1]['eval_std']})}")
    print(f"files: {Path(config.out) / 'synthetic.pt'}, synthetic.png, metrics.json")
    if not args.no_report:
        from ...report import report_after_run

        path = report_after_run(config.out)
        if path is not None:
            print(f"report: {path}")


@hookimpl
def register_commands(register):
    register("distill", setup=setup, run=run, help="distil a synthetic set (trajectory matching or any registered matcher)")
