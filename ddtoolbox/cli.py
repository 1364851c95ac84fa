"""``ddtool``: the command line.

Every subcommand takes ``--seed`` and ``--device``; every user error is one line on stderr and
exit status 2 (see :mod:`ddtoolbox.errors`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import UsageError
from .plugins import PluginManager, split_plugin_args


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, like every other ddtool error."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_float(text):
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text):
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def positive_int(text):
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text):
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got '{text}'")


# ---------------------------------------------------------------------------- options


def add_common(p):
    g = p.add_argument_group("common")
    g.add_argument("--seed", type=int, default=0, help="seed for every random draw (default 0)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    g.add_argument("--data-root", default=None, help="folder holding the dataset (else $DDTOOL_DATA, then system locations)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: one per core; on a CPU shared with other jobs 1 is often fastest)")


def add_model_options(p):
    g = p.add_argument_group("network")
    g.add_argument("--model", default="ConvNet", help="architecture name (see 'ddtool plugins'); default ConvNet")
    g.add_argument("--width", type=positive_int, default=128, help="ConvNet channels (default 128)")
    g.add_argument("--depth", type=positive_int, default=None, help="ConvNet blocks (default 3, or the D in ConvNetD4/5)")
    g.add_argument("--norm", default="instancenorm", help="instancenorm (default), layernorm, batchnorm or none")
    g.add_argument("--pooling", default="avgpool", help="avgpool (default), maxpool or none")


def model_options(args) -> dict:
    opts = {"width": args.width, "norm": args.norm, "pooling": args.pooling}
    if args.depth is not None:
        opts["depth"] = args.depth
    return opts


def add_preset_option(p):
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="fill options from a published setting (see 'ddtool presets'); explicit flags win")


def add_distill_options(p):
    g = p.add_argument_group("distillation (defaults: MTT's published settings)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    g.add_argument("--ipc", type=int, default=1, help="synthetic images per class (default 1)")
    g.add_argument("--matcher", default="mtt", help="trajectory matcher (default mtt; see 'ddtool plugins')")
    g.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME",
                   help="activate a plugin by name or module path; no:NAME blocks an installed one (repeatable)")
    add_preset_option(g)
    g.add_argument("--buffer", required=True, help="folder of expert trajectories from 'ddtool buffer'")
    g.add_argument("--out", required=True, help="output folder for synthetic.pt, synthetic.png, metrics.json")
    g.add_argument("--model", default=None, help="check that the buffer holds this architecture")
    g.add_argument("--iterations", type=non_negative_int, default=5000, help="outer iterations (default 5000)")
    g.add_argument("--syn-steps", type=positive_int, default=20, help="student steps per iteration (default 20)")
    g.add_argument("--expert-epochs", type=positive_int, default=3, help="expert epochs to match (default 3)")
    g.add_argument("--min-start-epoch", type=non_negative_int, default=0, help="lowest start epoch (default 0)")
    g.add_argument("--max-start-epoch", type=positive_int, default=25, help="start epochs are drawn below this (default 25)")
    g.add_argument("--lr-img", type=non_negative_float, default=1000.0, help="image learning rate (default 1000)")
    g.add_argument("--lr-lr", type=non_negative_float, default=1e-5, help="learning rate of the learned student lr (default 1e-5)")
    g.add_argument("--lr-y", type=non_negative_float, default=2.0, help="label learning rate, for matchers with learned labels (default 2)")
    g.add_argument("--lr-teacher", type=positive_float, default=None, help="initial student lr (default: the experts' lr)")
    g.add_argument("--batch-syn", type=int, default=None, help="synthetic images per student step (default all)")
    g.add_argument("--no-dsa", action="store_true", help="no differentiable augmentation in the unroll")
    g.add_argument("--unroll", choices=("full", "checkpointed", "auto"), default="auto",
                   help="full keeps every student step's graph (fastest); checkpointed keeps only the step "
                        "parameters and recomputes one step at a time in the backward pass (exact, memory flat "
                        "in --syn-steps, ~1.5x the compute); auto (default) picks full where it fits in memory")
    g.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls/convolutions on Ampere+ GPUs (faster, ~1e-3 relative precision)")
    g.add_argument("--eval-every", type=non_negative_int, default=0, help="evaluate every N iterations and at the end (0: never)")
    add_eval_protocol(p, default_runs=3, short=False)


def add_eval_protocol(p, default_runs=5, short=True):
    """The standard protocol's knobs; ``eval`` also accepts the short ``--runs``/``--epochs``."""
    g = p.add_argument_group("evaluation protocol (fresh ConvNets, SGD momentum 0.9, wd 5e-4, DSA)")
    g.add_argument("--eval-runs", *(["--runs"] if short else []), dest="eval_runs", type=positive_int,
                   default=default_runs, help=f"fresh networks to train and test (default {default_runs})")
    g.add_argument("--eval-epochs", *(["--epochs"] if short else []), dest="eval_epochs", type=positive_int,
                   default=1000, help="training epochs per network (default 1000)")
    g.add_argument("--eval-batch", type=positive_int, default=256, help="training batch (default 256)")


# ---------------------------------------------------------------------------- commands


def cmd_buffer(args, pm):
    from .augment import DSA
    from .data import load_dataset
    from .runtime import resolve_device, seed_everything
    from .trajectories import train_experts

    device = resolve_device(args.device)
    generator = seed_everything(args.seed)
    train_set = load_dataset(args.dataset, "train", args.data_root)
    if args.train_subset:
        train_set = train_set.subset(n_per_class=args.train_subset, generator=generator)
    test_set = load_dataset(args.dataset, "test", args.data_root)
    trainer = pm.trainer(args.trainer)
    if trainer.plugin not in pm.plugin_names():
        pm.load(trainer.plugin)
    buf = train_experts(
        out=args.out, train_set=train_set, test_set=test_set, model=args.model,
        model_options=model_options(args), num_experts=args.num_experts, epochs=args.train_epochs,
        lr=args.lr, batch_size=args.batch_size, augment=None if args.no_dsa else DSA(),
        step=trainer.obj(args), trainer=args.trainer, seed=args.seed, device=device,
        resume=args.resume, progress=not args.quiet,
        extra_meta={"train_subset_per_class": args.train_subset,
                    "trainer_options": pm.option_values(trainer.plugin, "buffer", args)},
    )
    accs = [e["test_accuracy"] for e in buf.meta["experts"]]
    print(f"buffer: {buf.num_experts} experts, final test accuracy {min(accs) * 100:.2f}-{max(accs) * 100:.2f}%, in {buf.path}")


def evaluator_for(args, info_model, device):
    """The standard-protocol evaluation of a run's current images (for --eval-every)."""
    from .augment import DSA
    from .evaluate import EvalConfig, evaluate_set

    def evaluate(run):
        cfg = EvalConfig(run.buffer.meta["model"], run.buffer.meta["model_options"], args.eval_epochs,
                         args.eval_batch, augment=DSA())
        soft = run.matcher.learn_targets
        return evaluate_set(cfg, run.images.detach(), run.targets.detach(), run.syn_lr.item(), info_model,
                            args.eval_runs, device, soft=soft, progress=not args.quiet)

    return evaluate


def cmd_distill(args, pm):
    from .data import load_dataset
    from .distill import distill
    from .evaluate import format_result
    from .runtime import resolve_device

    evaluator = None
    if args.eval_every:
        test_set = load_dataset(args.dataset, "test", args.data_root)
        evaluator = evaluator_for(args, test_set, resolve_device(args.device))
    run = distill(args, pm, progress=not args.quiet, evaluator=evaluator)
    print(f"distilled {len(run.images)} images ({args.ipc} per class) with {args.matcher}"
          f"{' + ' + ', '.join(p for p in run.plugins if p != args.matcher) if len(run.plugins) > 1 else ''}; "
          f"final loss {run.loss:.4f}, learned lr {run.syn_lr.item():.4g}")
    evals = [h for h in run.history if "eval_mean" in h]
    if evals:
        print(f"accuracy at iteration {evals[-1]['iteration'] + 1}: "
              f"{format_result({'mean': evals[-1]['eval_mean'], 'std': evals[-1]['eval_std']})}")
    print(f"files: {Path(args.out) / 'synthetic.pt'}, synthetic.png, metrics.json")


#: options that only the ConvNet family takes (cross-architecture nets refuse them)
CONVNET_ONLY = ("depth", "pooling")


def add_network_options(p, several: bool):
    """``--model`` (several names for ``eval``) and model options that default to the model's own."""
    g = p.add_argument_group("network")
    if several:
        g.add_argument("--model", nargs="+", default=None, metavar="NAME",
                       help="one or more architectures, e.g. --model ConvNet VGG11 ResNet18 (case-insensitive; "
                            "see 'ddtool plugins'); default: the synthetic set's, or ConvNet. One result per model")
    else:
        g.add_argument("--model", default="ConvNet", metavar="NAME",
                       help="architecture (case-insensitive; see 'ddtool plugins'); default ConvNet")
    g.add_argument("--width", type=positive_int, default=None,
                   help="channels: ConvNet's (default 128), or the base width of ResNet18/ResNet18_AP (64), "
                        "VGG11 (64) and AlexNet (128)")
    g.add_argument("--depth", type=positive_int, default=None, help="ConvNet blocks (ConvNet family only; default 3)")
    g.add_argument("--norm", default=None,
                   help="instancenorm, batchnorm or none (layernorm: ConvNet only); default the model's own: "
                        "instancenorm, AlexNet none")
    g.add_argument("--pooling", default=None, help="ConvNet only: avgpool (default), maxpool or none")


def network_options(args, model: str, base: dict | None = None) -> dict:
    """The options for ``model``: ``base`` (the synthetic set's, for its own model) or the defaults,
    overridden by the flags given; ConvNet-only flags on another model are a usage error."""
    from .models import canonical_model_name

    name = canonical_model_name(model)
    given = {k: getattr(args, k) for k in ("width", "depth", "norm", "pooling") if getattr(args, k) is not None}
    if name.startswith("ConvNet"):
        opts = dict(base) if base is not None else {"width": 128, "norm": "instancenorm", "pooling": "avgpool"}
    else:
        bad = [k for k in CONVNET_ONLY if k in given]
        if bad:
            raise UsageError(f"--{bad[0]} applies to the ConvNet family only, not {name}; drop it for {name}")
        opts = dict(base) if base is not None else {}
    opts.update(given)
    return opts


def cmd_eval(args, pm):
    from .augment import DSA
    from .data import load_dataset
    from .evaluate import (DEFAULT_TEMPERATURE, EvalConfig, evaluate_set, format_recovery, format_result,
                           load_synthetic, recovery_ratio, resolve_protocol)
    from .io import write_json
    from .models import canonical_model_name, create_model
    from .runtime import resolve_device, seed_everything
    from .train_full import lookup_full, store_path

    if (args.synthetic is None) == (args.random_ipc is None):
        raise UsageError("give exactly one of --synthetic FILE or --random-ipc N")
    device = resolve_device(args.device)
    models = [canonical_model_name(m) for m in (args.model or [])]   # unknown names fail before any work
    if args.synthetic:
        record = load_synthetic(args.synthetic)
        meta = record["meta"]
        dataset = args.dataset or meta["dataset"]
        test_set = load_dataset(dataset, "test", args.data_root)
        if test_set.info.name != meta["dataset"]:
            raise UsageError(f"{args.synthetic} was distilled from '{meta['dataset']}', not '{dataset}'; drop --dataset")
        models = models or [meta["model"]]
        has_learned = "targets" in record
        lr = args.lr or float(record["lr"])
        what = f"{args.synthetic} ({meta['matcher']}, IPC {meta['ipc']})"
        own_model = canonical_model_name(meta["model"])
    else:
        if args.random_ipc < 1:
            raise UsageError(f"--random-ipc must be at least 1 (got {args.random_ipc})")
        if not args.dataset:
            raise UsageError("--random-ipc needs --dataset")
        train_set = load_dataset(args.dataset, "train", args.data_root)
        test_set = load_dataset(args.dataset, "test", args.data_root)
        models = models or ["ConvNet"]
        has_learned, lr, own_model = False, args.lr or 0.01, None
        what = f"random real images, IPC {args.random_ipc} of {test_set.info.name}"
    teacher = None
    if args.teacher:
        from .teacher import load_teacher

        teacher, _ = load_teacher(args.teacher, test_set.info, device)
    protocol = resolve_protocol(args.protocol, has_learned, teacher, args.temperature or DEFAULT_TEMPERATURE)
    if args.temperature is not None and protocol.name != "kd":
        raise UsageError(f"--temperature is used by --protocol kd only, not {protocol.name}")
    options_all = [network_options(args, m, meta["model_options"] if args.synthetic and m == own_model else None)
                   for m in models]
    for model, options in zip(models, options_all):   # bad options or sizes fail before any training
        create_model(model, test_set.info.channels, test_set.info.num_classes, test_set.info.image_size, **options)
    full_path = store_path(args.full_results)
    augment = None if args.no_dsa else DSA()
    results = []
    for model, options in zip(models, options_all):
        generator = seed_everything(args.seed)   # each model's result is independent of the others
        cfg = EvalConfig(model, options, args.eval_epochs, args.eval_batch, augment=augment)
        if args.synthetic:
            targets = record["targets"] if protocol.soft_targets and teacher is None else record["labels"]
            result = evaluate_set(cfg, record["images"], targets, lr, test_set, args.eval_runs, device,
                                  progress=not args.quiet, desc=f"eval {model}", protocol=protocol)
        else:
            result = evaluate_set(cfg, None, None, lr, test_set, args.eval_runs, device,
                                  progress=not args.quiet, desc=f"eval random {model}", protocol=protocol,
                                  sampler=lambda r: train_set.sample_per_class(args.random_ipc, generator))
        full = lookup_full(full_path, test_set.info.name, model, options)
        full_mean = full["mean"] if full else None
        ratio = recovery_ratio(result["mean"], full_mean)
        results.append({"model": model, "model_options": options, **result,
                        "full_accuracy": full_mean, "recovery": ratio})
        rec = f"  {format_recovery(ratio)} of full-data {full_mean * 100:.2f}%" if full else ""
        print(f"{what}: {format_result(result)} over {len(result['runs'])} {model} networks "
              f"({protocol.name} protocol){rec}")
    if args.json:
        first = results[0]
        write_json(args.json, {
            "what": what, "model": first["model"], "model_options": first["model_options"],
            "mean": first["mean"], "std": first["std"], "runs": first["runs"],
            "full_accuracy": first["full_accuracy"], "recovery": first["recovery"],
            "protocol": protocol.name, "temperature": protocol.temperature if protocol.name == "kd" else None,
            "teacher": str(args.teacher) if args.teacher else None, "dataset": test_set.info.name,
            "lr": lr, "epochs": args.eval_epochs, "results": results,
        })


def cmd_train_full(args, pm):
    from .augment import DSA
    from .data import load_dataset
    from .evaluate import format_result
    from .io import write_json
    from .models import canonical_model_name, create_model
    from .runtime import resolve_device, seed_everything
    from .train_full import store_full, store_path, train_full

    device = resolve_device(args.device)
    model = canonical_model_name(args.model)
    options = network_options(args, model)
    seed_everything(args.seed)
    train_set = load_dataset(args.dataset, "train", args.data_root)
    test_set = load_dataset(args.dataset, "test", args.data_root)
    info = train_set.info
    create_model(model, info.channels, info.num_classes, info.image_size, **options)  # fail before training
    result = train_full(train_set=train_set, test_set=test_set, model=model, model_options=options,
                        epochs=args.train_epochs, lr=args.lr, batch_size=args.batch_size,
                        augment=None if args.no_dsa else DSA(), runs=args.runs, device=device,
                        save_model=args.save_model, progress=not args.quiet)
    settings = {"epochs": args.train_epochs, "lr": args.lr, "batch_size": args.batch_size,
                "augmentation": "none" if args.no_dsa else "dsa", "seed": args.seed, "train_images": len(train_set)}
    path = store_path(args.full_results)
    entry = store_full(path, test_set.info.name, model, options, result, settings)
    print(f"full data ({test_set.info.name}, {len(train_set)} images): {format_result(result)} over "
          f"{len(result['runs'])} {model} networks; stored in {path}"
          + (f"; network saved to {args.save_model}" if args.save_model else ""))
    if args.json:
        write_json(args.json, {**entry, "what": f"full data of {test_set.info.name}"})


def cmd_plugins(args, pm):
    from .models import list_models

    rows = []
    for name in pm.plugin_names():
        matchers = [m.name for m in pm.matchers.values() if m.plugin == name]
        trainers = [t.name for t in pm.trainers.values() if t.plugin == name]
        options = {c: pm.options_of(name, c) for c in ("buffer", "distill", "eval")}
        rows.append({"plugin": name, "description": pm.description(name), "matchers": matchers,
                     "trainers": trainers, "options": {c: o for c, o in options.items() if o}})
    if args.json:
        print(json.dumps({"plugins": rows, "models": list_models()}, indent=2))
        return
    print("matchers:")
    for m in sorted(pm.matchers.values(), key=lambda m: m.name):
        print(f"  {m.name:<10} {m.description}  [plugin {m.plugin}]")
    print("trainers:")
    for t in sorted(pm.trainers.values(), key=lambda t: t.name):
        print(f"  {t.name:<10} {t.description}  [plugin {t.plugin}]")
    print("plugins:")
    for r in rows:
        print(f"  {r['plugin']:<10} {r['description']}")
        for command, opts in r["options"].items():
            print(f"  {'':<10}   {command} options: {' '.join(opts)}")
    print(f"models: {', '.join(list_models())}")


def cmd_presets(args, pm):
    from .presets import as_flags, check_preset

    parser = build_parser(pm)
    if args.show:
        entry = pm.preset(args.show)
        check_preset(entry.name, entry.obj, parser.commands)
        print(f"{entry.name}: {entry.description}  [plugin {entry.plugin}]")
        for command, values in entry.obj.items():
            flags = " ".join(as_flags(values))
            print(f"  ddtool {command} {flags}")
        return
    if not pm.presets:
        print("no presets installed (the ddtoolbox-datm and ddtoolbox-edf plugins ship the published ones)")
    for entry in sorted(pm.presets.values(), key=lambda e: e.name):
        print(f"  {entry.name:<28} {entry.description}  [plugin {entry.plugin}]")


def cmd_bench_speed(args, pm):
    from .speed import cmd_bench_speed as run

    run(args, pm)


def cmd_demo(args, pm):
    from .demo import run_demo

    run_demo(args, pm)


# ---------------------------------------------------------------------------- parser


def _protocols() -> dict:
    from .evaluate import PROTOCOLS

    return PROTOCOLS



def build_parser(pm: PluginManager) -> Parser:
    parser = Parser(prog="ddtool", description="Dataset distillation by trajectory matching, with plugins.")
    parser.add_argument("--version", action="version", version=f"ddtoolbox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("demo", help="buffer, distil and evaluate on Fashion-MNIST in minutes on a CPU")
    p.add_argument("--full", action="store_true", help="full-size settings (width 128, all 60k images, paper-like; hours on a CPU)")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's files (default runs/demo)")
    add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("buffer", help="train expert networks and save their trajectories")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    p.add_argument("--out", required=True, help="buffer folder to create")
    p.add_argument("--num-experts", type=positive_int, default=5, help="experts to train (default 5)")
    p.add_argument("--train-epochs", "--epochs", dest="train_epochs", type=positive_int, default=50,
                   help="epochs per expert (default 50, MTT; DATM/EDF use 100)")
    p.add_argument("--lr", type=positive_float, default=0.01, help="expert SGD learning rate (default 0.01)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="expert batch size (default 256)")
    p.add_argument("--train-subset", type=positive_int, default=None, metavar="N", help="use N random training images per class")
    p.add_argument("--trainer", default="sgd", help="expert trainer (default sgd; see 'ddtool plugins')")
    p.add_argument("--no-dsa", action="store_true", help="train experts without augmentation")
    p.add_argument("--resume", action="store_true", help="add the missing experts to an existing buffer")
    p.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME", help=argparse.SUPPRESS)
    add_model_options(p)
    add_common(p)
    add_preset_option(p)
    pm.add_options("buffer", p)
    p.set_defaults(func=cmd_buffer)

    p = sub.add_parser("distill", help="distil a synthetic set by matching expert trajectories")
    add_distill_options(p)
    add_common(p)
    pm.add_options("distill", p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="train fresh networks on a synthetic set (or random real images) and test them",
                       description="Train fresh networks on a synthetic set (or random real images), test them, and "
                                   "report mean ± std, plus the recovery ratio (distilled / full-data accuracy) where "
                                   "'ddtool train-full' stored a full-data accuracy for the same dataset, model and options.",
                       epilog="protocols (--protocol): " + "; ".join(f"{k}: {v}" for k, v in _protocols().items())
                              + ". See docs/evaluation.md.")
    p.add_argument("--synthetic", default=None, help="synthetic.pt written by 'ddtool distill'")
    p.add_argument("--random-ipc", type=int, default=None, metavar="N", help="evaluate N random real images per class instead")
    p.add_argument("--dataset", default=None, help="dataset (default: the synthetic set's)")
    p.add_argument("--lr", type=positive_float, default=None, help="training lr (default: the learned lr, or 0.01 for random)")
    p.add_argument("--no-dsa", action="store_true", help="train without augmentation")
    p.add_argument("--protocol", default="auto", choices=tuple(_protocols()),
                   help="what the student minimises: auto (default: soft if the set has learned labels, else "
                        "standard), standard, soft, kd (needs --teacher), soft-no-teacher")
    p.add_argument("--teacher", default=None, metavar="FILE",
                   help="teacher network for kd / soft-no-teacher, from 'ddtool train-full --save-model FILE'")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="KD temperature (kd only; default 4: RDED's; SRe2L uses 3)")
    p.add_argument("--full-results", default=None, metavar="FILE",
                   help="full-data accuracies to compute recovery ratios from (default $DDTOOL_HOME/full-data.json, "
                        "else ~/.cache/ddtoolbox/full-data.json)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file (see docs/evaluation.md)")
    p.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME", help=argparse.SUPPRESS)
    add_eval_protocol(p)
    add_network_options(p, several=True)
    add_common(p)
    add_preset_option(p)
    pm.add_options("eval", p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train-full", help="train on the whole training set: full-data accuracy (recovery ratios) and KD teachers",
                       description="Train fresh networks on the whole training split with the evaluation protocol's "
                                   "loop (SGD momentum 0.9, wd 5e-4, x0.1 at the midpoint, DSA), test them, and store "
                                   "the accuracy for 'ddtool eval' to print recovery ratios.")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    p.add_argument("--epochs", dest="train_epochs", type=positive_int, default=50, help="training epochs (default 50)")
    p.add_argument("--lr", type=positive_float, default=0.01, help="SGD learning rate (default 0.01)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--runs", type=positive_int, default=1, help="networks to train and test (default 1)")
    p.add_argument("--no-dsa", action="store_true", help="train without augmentation")
    p.add_argument("--save-model", default=None, metavar="FILE",
                   help="save the first network (a teacher for 'ddtool eval --protocol kd --teacher FILE')")
    p.add_argument("--full-results", default=None, metavar="FILE",
                   help="JSON store to add the accuracy to (default $DDTOOL_HOME/full-data.json, "
                        "else ~/.cache/ddtoolbox/full-data.json)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME", help=argparse.SUPPRESS)
    add_network_options(p, several=False)
    add_common(p)
    p.set_defaults(func=cmd_train_full)

    p = sub.add_parser("bench-speed", help="time and memory of one distillation iteration per unroll mode")
    p.add_argument("--channels", type=positive_int, default=1, help="image channels (default 1)")
    p.add_argument("--size", type=positive_int, default=28, help="image side in pixels (default 28)")
    p.add_argument("--num-classes", type=positive_int, default=10, help="classes (default 10)")
    p.add_argument("--ipc", type=positive_int, default=10, help="images per class (default 10)")
    p.add_argument("--batch-syn", type=positive_int, default=None, help="images per student step (default all)")
    p.add_argument("--syn-steps", type=positive_int, default=20, help="student steps (default 20)")
    p.add_argument("--modes", nargs="+", choices=("full", "checkpointed"), default=["full", "checkpointed"])
    p.add_argument("--iterations", type=positive_int, default=3, help="timed iterations (median; default 3)")
    p.add_argument("--no-dsa", action="store_true", help="no augmentation")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on Ampere+ GPUs")
    p.add_argument("--peak-tflops", type=positive_float, default=None,
                   help="the device's peak TFLOP/s, to report achieved/peak (default: data sheet for known GPUs, an estimate for CPUs)")
    p.add_argument("--results", default="benchmarks/speed-results.jsonl",
                   help="JSON-lines file to append to (default benchmarks/speed-results.jsonl; '' for none)")
    add_model_options(p)
    add_common(p)
    p.set_defaults(func=cmd_bench_speed)

    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub, add_common)

    p = sub.add_parser("presets", help="list the published settings that --preset accepts")
    p.add_argument("--show", default=None, metavar="NAME", help="print one preset as ddtool options")
    p.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("plugins", help="list matchers, trainers, plugins and their options")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plugin", "-p", dest="plugins", action="append", default=[], metavar="NAME", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_plugins)
    from .compdd.cli import add_parsers  # ddtool data, ddtool compdd
    add_parsers(sub)
    parser.commands = dict(sub.choices)
    return parser


def _pre_parse(argv):
    """``--plugin`` and ``--preset``, read before the full parser exists (plugins add options)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("command", nargs="?")
    pre.add_argument("--plugin", "-p", dest="plugins", action="append", default=[])
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    active, blocked = split_plugin_args(known.plugins)
    return known.command, known.preset, active, blocked


def _apply_preset(pm, parser, command, name, active) -> list[str]:
    """Make a preset's values the defaults of ``command``; return the plugins it activates."""
    from .presets import check_preset

    entry = pm.preset(name)
    check_preset(entry.name, entry.obj, parser.commands)
    values = dict(entry.obj.get(command, {}))
    plugins = [pm.load(p) for p in values.pop("plugins", [])]
    parser.commands[command].set_defaults(**values)
    return [p for p in plugins if p not in active]


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run with ``n`` torch CPU threads, then restore the count (``main`` also runs inside tests)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        command, preset, active, blocked = _pre_parse(argv)
        pm = PluginManager(blocked=blocked)
        args_plugins = [pm.load(name) for name in active]  # module paths may add options
        parser = build_parser(pm)
        if preset and command in parser.commands:
            args_plugins += _apply_preset(pm, parser, command, preset, args_plugins)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.plugins = args_plugins
        with cpu_threads(getattr(args, "threads", None)):
            args.func(args, pm)
        return 0
    except UsageError as exc:
        print(f"ddtool: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddtool: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into 'head' and the like: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
