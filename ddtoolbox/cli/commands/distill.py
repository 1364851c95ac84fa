"""``ddtool distill``: options -> :class:`ddtoolbox.DistillConfig` -> :func:`ddtoolbox.distill`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ... import hookimpl
from ...config import DistillConfig
from ..parsing import add_plugin_option, add_preset_option, add_settings


def setup(p, pm) -> None:
    add_plugin_option(p)
    add_preset_option(p)
    add_settings(p, DistillConfig, pm, "distill")
    p.epilog = matcher_notes(pm)
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args, pm) -> None:
    from ...distillation import distill
    from ...evaluate import format_result

    if args.resume:
        config, plugins, options = resume_settings(args, pm)
    else:
        config, plugins, options = DistillConfig.from_namespace(args), args.plugins, pm.option_values("distill", args)
    run = distill(config, plugins=plugins, options=options, manager=pm, explicit=getattr(args, "given", ()))
    from ...parallel import is_main

    if not is_main():
        return
    extra = [p for p in run.plugins if p != pm.matcher(run.config.matcher).plugin]
    if not run.history:     # --iterations 0: the initial images, published as they are (an ablation's init row)
        ending = "0 iterations, so these are the initial images, unmatched"
    else:
        ending = f"final loss {run.loss:.4f}" if math.isfinite(run.loss) else "the last iteration was skipped"
    learned = "" if "lr_lr" in run.matcher.unused else f", learned lr {run.syn_lr.item():.4g}"
    print(f"distilled {len(run.images)} images ({config.ipc} per class) with {config.matcher}"
          f"{' + ' + ', '.join(extra) if extra else ''}; {ending}{learned}")
    evals = [h for h in run.history if "eval_mean" in h]
    if evals:
        print(f"accuracy at iteration {evals[-1]['iteration'] + 1}: "
              f"{format_result({'mean': evals[-1]['eval_mean'], 'std': evals[-1]['eval_std']})}")
    print(f"files: {Path(config.out) / 'synthetic.pt'}, synthetic.png, metrics.json")
    if not run.config.no_report:
        from ...report import report_after_run

        path = report_after_run(config.out)
        if path is not None:
            print(f"report: {path}")


def matcher_notes(pm) -> str:
    """``--help``'s word on the matchers that set other defaults than the core's or leave options unused."""
    lines = []
    for name in sorted(pm.matchers):
        cls = pm.matchers[name].obj
        defaults = " ".join(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                            for k, v in (getattr(cls, "defaults", None) or {}).items())
        unused = " ".join(f"--{k.replace('_', '-')}" for k in (getattr(cls, "unused", None) or ()))
        parts = ([f"defaults {defaults}"] if defaults else []) + ([f"does not use {unused}"] if unused else [])
        if parts:
            lines.append(f"  --matcher {name}: {'; '.join(parts)}")
    if not lines:
        return ""
    return "matchers' own settings (a core option left at its default takes the matcher's):\n" + "\n".join(lines)


def resume_settings(args, pm):
    """``--resume``: the checkpoint's settings, with the flags given now checked against them."""
    from ...config import RUNTIME_FIELDS
    from ...distillation import resume_settings as saved
    from ...errors import UsageError

    from dataclasses import fields

    if args.preset:
        raise UsageError("--resume takes the run's settings from its checkpoint; drop --preset")
    config, plugins, options = saved(args.out)
    given = getattr(args, "given", set())
    changes = {}
    for name in given & set(config.as_dict()):
        now, before = getattr(args, name), getattr(config, name)
        if name in RUNTIME_FIELDS:
            changes[name] = now
        elif now != before and name != "out":
            raise UsageError(f"--{name.replace('_', '-')} {now} contradicts the run in {args.out} ({before}); "
                             f"drop it to resume, or start a new run in another --out")
    for name in given & set(options):
        if getattr(args, name) != options[name]:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} contradicts the run in {args.out} "
                             f"({options[name]}); drop it to resume")
    unused = sorted(given & {f.name for cls in pm.option_classes("distill").values() for f in fields(cls)}
                    - set(options))
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} is not an option of the run in {args.out} (its plugins: "
                         f"{', '.join(plugins) or 'none'}); drop it to resume")
    if "plugins" in given and [p for p in args.plugins if p != config.matcher] != plugins:
        raise UsageError(f"the run in {args.out} has plugins {plugins or 'none'}; resume it without --plugin")
    return config.replace(**changes), plugins, options


@hookimpl
def register_commands(register):
    register("distill", setup=setup, run=run, help="distil a synthetic set (trajectory matching or any registered matcher)")
