"""The outer distillation loop: matcher + plugins' hooks + optimisers + outputs.

Usable from Python without the command line::

    from ddtoolbox import DistillConfig, distill
    run = distill(DistillConfig(buffer="runs/buffer", out="runs/edf", ipc=10, matcher="datm"),
                  plugins=["cpd", "dae"], options={"cpd_alpha": 0.25})
    run.images, run.history[-1]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import torch

from . import __version__
from .augment import DSA, siamese
from .buffer import Buffer
from .checkpoint import checkpoint_path, load_checkpoint
from .config import RUNTIME_FIELDS, DistillConfig
from .data import image_record, load_dataset
from .errors import PluginError, UsageError, forget_warnings, warn
from .finite import require_finite
from .io import save_tensors, write_json
from .loop import Loop, make_optimisers, run_generator
from .matchers import Matcher, MatcherContext
from .models import canonical_model_name
from .models.registry import NETWORK_FIELDS
from .outputs import OutputLock, check_writable, publish
from .plugins import PluginManager
from . import compiled, parallel
from .runtime import configure_backends, environment, honours_threads, random_state_kept, seed_everything
from .viz import save_image_grid


#: the versions of synthetic.pt's and metrics.json's layouts (docs/formats.md, ddtoolbox.schemas)
SYNTHETIC_VERSION = 1
METRICS_VERSION = 1


@dataclass(eq=False)
class Run:
    """One distillation run, as plugins and matchers see it.

    Compared and hashed by identity, so a run can key a dict. Tensors are the live ones: read them,
    do not modify them, except where a hook says so. Every field is valid from ``on_run_start`` on,
    unless its comment says otherwise.
    """

    config: DistillConfig            #: the core settings (see ``ddtool distill --help``)
    out_dir: Path                     #: the output folder; plugins may write files under it
    device: torch.device              #: where the run's tensors live
    info: object                      #: :class:`ddtoolbox.data.DatasetInfo` of the real data
    train_set: object                 #: :class:`ddtoolbox.data.TensorDataset`, the real training data
    buffer: Buffer | None             #: the expert trajectories; None for a matcher that needs none
    matcher: Matcher                  #: the run's matcher, started
    augment: object                   #: the differentiable augmentation (``augment(x) -> (x_aug, params)``), or None
    images: torch.Tensor              #: synthetic images (N, C, H, W), normalised, a leaf tensor
    labels: torch.Tensor              #: hard class id of each synthetic image (N,)
    targets: torch.Tensor             #: what the inner loss uses: ``labels``, or learned soft labels (N, K)
    syn_lr: torch.Tensor              #: the learned student learning rate (a 0-d leaf tensor)
    plugins: list = field(default_factory=list)   #: names of the active plugins (the matcher's included)
    options: dict = field(default_factory=dict)   #: plugin name -> its options object (see ``add_options``)
    state: dict = field(default_factory=dict)     #: plugin name -> its saved state dict (checkpointable)
    cache: dict = field(default_factory=dict)     #: plugin name -> objects rebuilt on start, never saved
    iteration: int = -1               #: the current (or just finished) outer iteration, 0-based; -1 before the first
    loss: float = math.nan            #: matching loss of the current iteration (set after backward)
    segment: dict = field(default_factory=dict)   #: what the matcher drew this iteration (expert, start epoch)
    record: dict | None = None        #: this iteration's metrics record (None before the first iteration)
    history: list = field(default_factory=list)   #: every record so far, as metrics.json will hold them
    unroll_mode: str = "none"         #: how the student unroll keeps its graph (set by trajectory matchers)
    parallel: str = "none"            #: under torchrun: batch or segments (``--parallel``); none for one process
    writes: bool = True               #: whether this process writes files (under torchrun only rank 0 does);
                                      #: a plugin writes under ``out_dir`` only when it is True
    optimisers: dict = field(default_factory=dict)  #: images / lr / targets -> the live torch optimiser
    generator: torch.Generator | None = None        #: the run's own CPU generator, seeded by --seed, checkpointed
    inner_loss: object = None         #: this iteration's student loss ``(logits, targets) -> loss`` (on_inner_loss)

    def augment_pair(self, real: torch.Tensor, syn: torch.Tensor, params=None):
        """One DSA draw applied to a real and a synthetic batch: ``(real_aug, syn_aug, params)``.

        Both batches get the same group and image ``i`` of each the same transform
        (:func:`ddtoolbox.augment.siamese`); pass ``params`` back to replay it. With ``--no-dsa`` the
        batches come back unchanged, with ``params`` ``None``.
        """
        return siamese(self.augment, real, syn, params)

    def log(self, **values) -> None:
        """Add plain numbers to the current iteration's record in ``metrics.json``."""
        if self.record is None or self.record.get("iteration") != self.iteration:
            self.record = {"iteration": self.iteration}
            self.history.append(self.record)
        self.record.update({k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})

    def say(self, line: str) -> None:
        """Show ``line`` to the person watching, above the progress bar. Under torchrun only the
        process that writes speaks, so a launch of N processes shows each line once, not N times."""
        if self.writes:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def make_model(self) -> torch.nn.Module:
        """A freshly initialised network of the run's architecture, on the run's device."""
        return self.matcher.make_model()

    def expert_model(self, expert: int = 0, epoch: int = -1) -> torch.nn.Module:
        """An expert's snapshot as a ready network (``epoch=-1``: its final, fully trained state)."""
        if self.buffer is None:
            raise UsageError(f"matcher '{self.config.matcher}' runs without a buffer, so there is no expert network "
                             f"to use; choose a model that does not need one")
        return self.buffer.expert_model(expert, epoch, self.device)

    def trace_summary(self) -> str:
        return f"Run(iteration={self.iteration}, images={tuple(self.images.shape)})"


@honours_threads
def distill(config: DistillConfig, plugins=(), options: dict | None = None, *,
            manager: PluginManager | None = None, progress: bool | None = None, explicit=()) -> Run:
    """Distil a synthetic set as ``config`` says, write it under ``config.out`` and return the run.

    :param plugins: names (or module paths) of plugins to activate, e.g. ``["cpd", "dae"]``.
    :param options: plugin options by field name, e.g. ``{"cpd_alpha": 0.25}``.
    :param manager: the plugin manager (default: a new one over the installed plugins).
    :param progress: show a progress bar (default: ``not config.quiet``).
    :param explicit: fields of ``config`` set on purpose (the command line passes the flags it was
        given): they keep their value even where it equals the core's default and the matcher
        declares another (``Matcher.defaults``).

    With ``config.resume`` the run in ``config.out`` continues from its checkpoint; ``config``,
    ``plugins`` and ``options`` must then be the checkpoint's (:func:`resume_settings` gives them).
    """
    forget_warnings()
    pm = manager or PluginManager()
    device = parallel.setup(config.device, config.dist_backend, config.dist_timeout)
    mode = parallel.resolve_mode(config.parallel)
    main = parallel.is_main()
    progress = (not config.quiet) if progress is None else progress
    progress = progress and main
    out = Path(config.out)
    checkpoint = None
    active = pm.activate(plugins)      # module-path plugins may register the matcher
    matcher_entry = pm.matcher(config.matcher)
    if not config.resume:        # a resumed run's settings are the checkpoint's, already resolved
        config = matcher_settings(config, matcher_entry, explicit)
    if config.resume:
        checkpoint = load_checkpoint(checkpoint_path(out))
        check_same_run(config, plugins, options or {}, checkpoint)
        began_on = checkpoint.get("device", device.type)     # older checkpoints do not say
        if began_on != device.type and main:
            warn(f"the run in {out} began on {began_on} and now runs on {device.type}: it continues, but its "
                 f"result will differ (at float rounding, growing with the iterations) from an uninterrupted run")
    if matcher_entry.plugin not in active:
        active.append(matcher_entry.plugin)
    plugin_options = pm.plugin_options("distill", dict(options or {}), active)

    configure_backends(device, config.tf32)
    if config.compile and not config.eval_every and main:
        warn("--compile compiles the networks --eval-every trains (the unroll cannot be compiled); without "
             "--eval-every it does nothing")
    compiled.prepare(config.compile and bool(config.eval_every), device)
    generator = seed_everything(config.seed)
    matcher_cls = matcher_entry.obj
    if mode != "none" and config.buffer is not None:
        parallel.check_folder_visible(config.buffer, "--buffer")
    buffer = open_buffer(config, matcher_cls)
    train_set = load_dataset(config.dataset, "train", config.data_root, zca=config.zca)
    if buffer is not None:
        given = {k: getattr(config, k) for k in NETWORK_FIELDS if getattr(config, k) is not None}
        buffer.check_compatible(config.dataset, config.model and canonical_model_name(config.model), given,
                                needed_epochs=config.max_start_epoch + config.expert_epochs, info=train_set.info)
    parallel.agree(lambda: prepare_output(config, train_set.info), "output folder")
    lock = OutputLock(out)
    parallel.agree(lock.__enter__, "output lock")     # only rank 0 holds the lock (and writes)
    if mode != "none":
        parallel.check_folder_visible(out, "--out")
    try:
        if checkpoint is None and main:
            checkpoint_path(out).unlink(missing_ok=True)    # a fresh start never resumes an older run
        augment = None if config.no_dsa else DSA(crop_ratio=config.dsa_crop_ratio)
        ctx = MatcherContext(config=config, options=plugin_options.get(matcher_entry.plugin), train_set=train_set,
                             buffer=buffer, device=device, augment=augment)
        call = pm.call_user
        matcher = call(matcher_entry.plugin, f"matcher {config.matcher}", matcher_cls, ctx)
        if checkpoint is None:
            images, labels = call(matcher_entry.plugin, "initial_images", matcher.initial_images, config.ipc, generator)
            labels = labels.to(device)
            targets = call(matcher_entry.plugin, "initial_targets", matcher.initial_targets,
                           images.to(device).detach(), labels)
            first_lr = config.lr_teacher or (buffer.meta["lr"] if buffer is not None else 0.01)
        else:
            images, targets, first_lr = checkpoint["images"], checkpoint["targets"], checkpoint["syn_lr"].item()
            labels = checkpoint["labels"].to(device)
        images = images.to(device).detach().clone().requires_grad_(True)
        targets = targets.to(device).detach().clone()
        if matcher.learn_targets:
            targets.requires_grad_(True)
        syn_lr = torch.tensor(float(first_lr), device=device, requires_grad=True)
        run = Run(config=config, out_dir=out, device=device, info=train_set.info, train_set=train_set,
                  buffer=buffer, matcher=matcher, augment=augment, images=images, labels=labels, targets=targets,
                  syn_lr=syn_lr, plugins=active, options=plugin_options, parallel=mode, writes=main,
                  generator=run_generator(config.seed), inner_loss=matcher.inner_loss)
        run.optimisers.update(make_optimisers(run))
        hooks = pm.run_hooks(active)
        failure = None
        try:
            call(matcher_entry.plugin, "start", matcher.start, run)
            hooks.on_run_start(run)
            evaluate = progress_evaluator(run, progress) if config.eval_every else None
            seconds = Loop(run, hooks, pm, matcher_entry.plugin, progress, checkpoint, evaluate).run_all()
            if main:
                save_run(run, seconds)
                checkpoint_path(out).unlink(missing_ok=True)    # the result is published: nothing to resume
            parallel.barrier()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _end(run, hooks, failure)
    finally:
        if main:
            lock.__exit__(None, None, None)
    return run


def matcher_settings(config: DistillConfig, entry, explicit=()) -> DistillConfig:
    """``config`` with the matcher's own defaults (``Matcher.defaults``) for the fields left at the
    core's (and not in ``explicit``), and a warning for each option it does not use
    (``Matcher.unused``) that was set."""
    cls, fields = entry.obj, DistillConfig.__dataclass_fields__
    defaults, unused = dict(getattr(cls, "defaults", None) or {}), tuple(getattr(cls, "unused", None) or ())
    wrong = [k for k in (*defaults, *unused) if k not in fields or k in RUNTIME_FIELDS]
    if wrong:
        raise PluginError(f"matcher '{config.matcher}' of plugin '{entry.plugin}' declares defaults or unused options "
                          f"for {', '.join(wrong)}, which are not distill settings a matcher may change; see "
                          f"'ddtool distill --help'", entry.plugin, "Matcher.defaults")
    for k in unused:
        if getattr(config, k) != fields[k].default or k in explicit:
            warn(f"--matcher {config.matcher} does not use --{k.replace('_', '-')}; ignoring it")
    changes = {k: v for k, v in defaults.items() if k not in explicit and getattr(config, k) == fields[k].default}
    return config.replace(**changes) if changes else config


def prepare_output(config: DistillConfig, info) -> None:
    """Before any compute: the folder is writable, has room, and holds nothing this run would silently replace."""
    out = Path(config.out)
    per_set = config.ipc * info.num_classes * info.channels * info.image_size[0] * info.image_size[1] * 4
    check_writable(out, need_bytes=8 * per_set + (4 << 20), what="output folder")
    if config.resume:
        return
    if (out / "synthetic.pt").exists() and not config.overwrite:
        raise UsageError(f"{out} already holds a distilled set (synthetic.pt); pass --overwrite to replace it, "
                         f"or choose another --out")
    if checkpoint_path(out).exists() and not config.overwrite:
        raise UsageError(f"{out} holds an unfinished run (checkpoint.pt); continue it with 'ddtool distill --resume "
                         f"--out {out}', or pass --overwrite to start afresh")


def resume_settings(out) -> tuple[DistillConfig, list, dict]:
    """The settings, plugins and plugin options of the run whose checkpoint is in ``out``."""
    ckpt = load_checkpoint(checkpoint_path(out))
    values = {**ckpt["config"], "out": str(out), "resume": True}
    config = DistillConfig.from_values(values, "checkpoint")
    plugins = [p for p in ckpt["plugins"] if p != ckpt["config"].get("matcher")]
    options = {k: v for opts in ckpt["options"].values() for k, v in opts.items()}
    return config, plugins, options


def check_same_run(config: DistillConfig, plugins, options: dict, ckpt: dict) -> None:
    """A resumed run must be the checkpoint's run: only how it runs may change, never what it computes."""
    saved = ckpt["config"]
    now = config.as_dict()
    # a setting the checkpoint lacks is newer than the run, which therefore ran as its default says
    fields = DistillConfig.__dataclass_fields__
    changed = [k for k, v in now.items() if k not in RUNTIME_FIELDS and k != "out"
               and saved.get(k, fields[k].default if k in fields else None) != v]
    if changed:
        k = changed[0]
        raise UsageError(f"--{k.replace('_', '-')} {now[k]} contradicts the run in {config.out} "
                         f"({saved.get(k)}); drop it to resume, or start a new run in another --out")
    saved_plugins = [p for p in ckpt["plugins"] if p != saved.get("matcher")]
    if list(plugins) != saved_plugins:
        raise UsageError(f"the run in {config.out} has plugins {saved_plugins or 'none'}, not {list(plugins) or 'none'}; "
                         f"resume it without --plugin")
    saved_options = {k: v for opts in ckpt["options"].values() for k, v in opts.items()}
    different = sorted(k for k, v in options.items() if k in saved_options and saved_options[k] != v)
    if different:
        k = different[0]
        raise UsageError(f"--{k.replace('_', '-')} {options[k]} contradicts the run in {config.out} "
                         f"({saved_options[k]}); drop it to resume")


def open_buffer(config: DistillConfig, matcher_cls) -> Buffer | None:
    """The run's buffer, or ``None`` for a matcher that matches no trajectories."""
    if matcher_cls.needs_buffer:
        if config.buffer is None:
            raise UsageError(f"--matcher {config.matcher} matches expert trajectories: give --buffer DIR "
                             f"(made by 'ddtool buffer')")
        buffer = Buffer.open(config.buffer)
        buffer.check_files()
        return buffer
    if config.buffer is not None:
        warn(f"--matcher {config.matcher} does not use expert trajectories; ignoring --buffer {config.buffer}")
    return None


def _end(run: Run, hooks, failure: BaseException | None) -> None:
    """``on_run_end`` for every active plugin; while failing, its own errors only warn."""
    try:
        hooks.on_run_end(run, exception=failure)
    except Exception as exc:
        if failure is None:
            raise
        warn(f"{exc} (while the run was already failing)")


def evaluate_images(run: Run, images, *, progress: bool, desc: str = "eval") -> dict:
    """The standard-protocol evaluation of ``images`` (the run's, or a plugin's variant such as
    FTD's EMA) with the run's targets and step size, as ``--eval-every`` does it.

    Seeded like ``ddtool eval --seed <the run's seed>`` and outside the run's random streams: the
    run's images are the same with or without evaluations along the way, and the last evaluation of
    the run's images is the one ``ddtool eval`` gives on ``synthetic.pt``.
    """
    from .evaluate import TrainRecipe, evaluate_set

    c = run.config
    test_set = load_dataset(c.dataset, "test", c.data_root, zca=c.zca)   # cached after the first call
    model, model_opts = run.matcher.network()
    recipe = TrainRecipe(model, model_opts, c.eval_epochs, c.eval_batch, augment=DSA(crop_ratio=c.dsa_crop_ratio),
                         compile=c.compile)
    with random_state_kept(run.device):
        return evaluate_set(recipe, images.detach(), run.targets.detach(), run.syn_lr.item(), test_set,
                            c.eval_runs, run.device, soft=bool(run.matcher.learn_targets), progress=progress,
                            desc=desc, seed=c.seed)


def progress_evaluator(run: Run, progress: bool):
    """``--eval-every``'s evaluation of the run's current images."""
    load_dataset(run.config.dataset, "test", run.config.data_root, zca=run.config.zca)   # fail before iteration 0

    def evaluate(run: Run) -> dict:
        return evaluate_images(run, run.images, progress=progress)

    return evaluate


# ---------------------------------------------------------------------------- outputs


def _plain(options) -> dict:
    return asdict(options) if is_dataclass(options) else {}


def synthetic_record(run: Run, seconds: float) -> dict:
    """The contents of ``synthetic.pt``: tensors plus plain metadata (loads with weights_only=True)."""
    c, info = run.config, run.info
    unused = tuple(run.matcher.unused or ())
    model, model_opts = run.matcher.network()
    record = {
        "images": run.images.detach().cpu().clone(),
        "labels": run.labels.cpu().clone(),
        "lr": run.syn_lr.detach().cpu().clone(),
        "meta": {
            "format": "ddtoolbox-synthetic", "format_version": SYNTHETIC_VERSION, "ddtoolbox_version": __version__,
            "dataset": info.name, "channels": info.channels, "image_size": list(info.image_size),
            "num_classes": info.num_classes, "class_names": list(info.class_names),
            "mean": list(info.mean), "std": list(info.std), "ipc": c.ipc,
            "model": model, "model_options": model_opts,
            "matcher": c.matcher, "plugins": list(run.plugins), "iterations": c.iterations,
            "syn_steps": None if "syn_steps" in unused else c.syn_steps,
            "expert_epochs": None if "expert_epochs" in unused else c.expert_epochs,
            **({"unused": sorted(unused)} if unused else {}), "seed": c.seed,
            "buffer": str(run.buffer.path) if run.buffer is not None else None, "seconds": round(seconds, 2),
            "soft_labels": bool(run.matcher.learn_targets), "unroll": run.unroll_mode,
            "parallel": run.parallel, "world_size": parallel.world(),
            **image_record(info), "dsa_crop_ratio": c.dsa_crop_ratio,
            "published": True,     # a reader checks the folder's manifest (ddtoolbox.outputs)
        },
    }
    if run.matcher.learn_targets:
        record["targets"] = run.targets.detach().cpu().clone()
    record.update(run.matcher.extra_state())
    return record


def save_run(run: Run, seconds: float) -> None:
    """Publish ``synthetic.pt``, ``synthetic.png`` and ``metrics.json`` as one set (see :mod:`ddtoolbox.outputs`)."""
    record = synthetic_record(run, seconds)
    require_finite(record, "the final synthetic set", "lower --lr-img / --lr-lr")
    metrics = {
        "format_version": METRICS_VERSION, "meta": record["meta"], "environment": environment(run.device),
        "config": run.config.as_dict(),
        "options": {name: _plain(opts) for name, opts in run.options.items()},
        "final_lr": record["lr"].item(), "seconds_per_iteration": seconds / max(run.config.iterations, 1),
        "divergent_updates_skipped": sum(1 for h in run.history if "diverged" in h),
        "history": run.history,
    }
    publish(run.out_dir, {
        "synthetic.pt": lambda path: save_tensors(path, record),
        "synthetic.png": lambda path: save_image_grid(path, run.train_set.unwhiten(record["images"]), record["labels"],
                                                      run.info),
        "metrics.json": lambda path: write_json(path, metrics),
    }, what=f"distill {run.config.matcher}")
