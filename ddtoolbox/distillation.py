"""The outer distillation loop: matcher + plugins' hooks + optimisers + outputs.

Usable from Python without the command line::

    from ddtoolbox import DistillConfig, distill
    run = distill(DistillConfig(buffer="runs/buffer", out="runs/edf", ipc=10, matcher="datm"),
                  plugins=["cpd", "dae"], options={"cpd_alpha": 0.25})
    run.images, run.history[-1]
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .augment import DSA
from .buffer import Buffer
from .config import DistillConfig
from .data import load_dataset
from .errors import PluginError, UsageError, forget_warnings, warn
from .io import save_tensors, write_json
from .losses import combine_weights, matching_loss
from .matchers import Matcher, MatcherContext
from .models import canonical_model_name
from .models.registry import NETWORK_FIELDS
from .plugins import PluginManager
from .runtime import configure_backends, environment, resolve_device, seed_everything
from .viz import save_image_grid, snapshot_path

#: smallest learned student lr; MTT's lr is a free parameter and can otherwise go negative and diverge
MIN_SYN_LR = 1e-8


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

    def log(self, **values) -> None:
        """Add plain numbers to the current iteration's record in ``metrics.json``."""
        if self.record is None or self.record.get("iteration") != self.iteration:
            self.record = {"iteration": self.iteration}
            self.history.append(self.record)
        self.record.update({k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})

    def make_model(self) -> torch.nn.Module:
        """A freshly initialised network of the run's architecture, on the run's device."""
        return self.matcher.make_model()

    def expert_model(self, expert: int = 0, epoch: int = -1) -> torch.nn.Module:
        """An expert's snapshot as a ready network (``epoch=-1``: its final, fully trained state)."""
        if self.buffer is None:
            raise UsageError(f"matcher '{self.config.matcher}' runs without a buffer, so there is no expert; "
                             f"give --buffer or choose another activation model")
        return self.buffer.expert_model(expert, epoch, self.device)

    def trace_summary(self) -> str:
        return f"Run(iteration={self.iteration}, images={tuple(self.images.shape)})"


def distill(config: DistillConfig, plugins=(), options: dict | None = None, *,
            manager: PluginManager | None = None, progress: bool | None = None) -> Run:
    """Distil a synthetic set as ``config`` says, write it under ``config.out`` and return the run.

    :param plugins: names (or module paths) of plugins to activate, e.g. ``["cpd", "dae"]``.
    :param options: plugin options by field name, e.g. ``{"cpd_alpha": 0.25}``.
    :param manager: the plugin manager (default: a new one over the installed plugins).
    :param progress: show a progress bar (default: ``not config.quiet``).
    """
    forget_warnings()
    pm = manager or PluginManager()
    progress = (not config.quiet) if progress is None else progress
    active = pm.activate(plugins)      # module-path plugins may register the matcher
    matcher_entry = pm.matcher(config.matcher)
    if matcher_entry.plugin not in active:
        active.append(matcher_entry.plugin)
    plugin_options = pm.plugin_options("distill", dict(options or {}), active)

    device = resolve_device(config.device)
    configure_backends(device, config.tf32)
    generator = seed_everything(config.seed)
    matcher_cls = matcher_entry.obj
    buffer = open_buffer(config, matcher_cls)
    train_set = load_dataset(config.dataset, "train", config.data_root)
    if buffer is not None:
        given = {k: getattr(config, k) for k in NETWORK_FIELDS if getattr(config, k) is not None}
        buffer.check_compatible(config.dataset, config.model and canonical_model_name(config.model), given,
                                needed_epochs=config.max_start_epoch + config.expert_epochs)
    augment = None if config.no_dsa else DSA()
    ctx = MatcherContext(config=config, options=plugin_options.get(matcher_entry.plugin), train_set=train_set,
                         buffer=buffer, device=device, augment=augment)
    call = pm.call_user
    matcher = call(matcher_entry.plugin, f"matcher {config.matcher}", matcher_cls, ctx)
    images, labels = call(matcher_entry.plugin, "initial_images", matcher.initial_images, config.ipc, generator)
    images = images.to(device).detach().clone().requires_grad_(True)
    labels = labels.to(device)
    targets = call(matcher_entry.plugin, "initial_targets", matcher.initial_targets, images.detach(), labels)
    if matcher.learn_targets:
        targets = targets.detach().clone().requires_grad_(True)
    first_lr = config.lr_teacher or (buffer.meta["lr"] if buffer is not None else 0.01)
    syn_lr = torch.tensor(float(first_lr), device=device, requires_grad=True)
    run = Run(config=config, out_dir=Path(config.out), device=device, info=train_set.info, train_set=train_set,
              buffer=buffer, matcher=matcher, augment=augment, images=images, labels=labels, targets=targets,
              syn_lr=syn_lr, plugins=active, options=plugin_options)
    hooks = pm.run_hooks(active)
    failure = None
    try:
        call(matcher_entry.plugin, "start", matcher.start, run)
        hooks.on_run_start(run)
        _iterate(run, hooks, pm, matcher_entry.plugin, progress)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _end(run, hooks, failure)
    return run


def open_buffer(config: DistillConfig, matcher_cls) -> Buffer | None:
    """The run's buffer, or ``None`` for a matcher that matches no trajectories."""
    if matcher_cls.needs_buffer:
        if config.buffer is None:
            raise UsageError(f"--matcher {config.matcher} matches expert trajectories: give --buffer DIR "
                             f"(made by 'ddtool buffer')")
        return Buffer.open(config.buffer)
    if config.buffer is not None:
        warn(f"--matcher {config.matcher} does not use expert trajectories; ignoring --buffer {config.buffer}")
    return None


def _iterate(run: Run, hooks, pm: PluginManager, matcher_plugin: str, progress: bool) -> None:
    config, matcher, images, targets, syn_lr = run.config, run.matcher, run.images, run.targets, run.syn_lr
    opt_img = torch.optim.SGD([images], lr=config.lr_img, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=config.lr_lr, momentum=0.5)
    opt_y = torch.optim.SGD([targets], lr=config.lr_y, momentum=0.9) if matcher.learn_targets else None
    optimisers = [o for o in (opt_img, opt_lr, opt_y) if o is not None]
    evaluate = progress_evaluator(run, progress) if config.eval_every else None
    snapshot_every = config.snapshot_interval
    if snapshot_every:
        save_snapshot(run, 0)
    start = time.time()
    bar = tqdm(range(config.iterations), desc=f"distill {config.matcher}", unit="it", disable=not progress)
    for it in bar:
        run.iteration = it
        run.segment = {}
        run.log()
        num, den = pm.call_user(matcher_plugin, "loss_terms", matcher.loss_terms, run)
        results = hooks.results("on_loss_vector", run, num=num, den=den)
        weights = combine_weights(results, num)
        if weights is not None and not (weights * den).sum() > 0:
            who = ", ".join(name for name, w in results if w is not None)
            raise PluginError(f"the loss weights of plugin(s) {who} keep no element with a non-zero denominator",
                              who, "on_loss_vector")
        loss = matching_loss(num, den, weights)
        if not torch.isfinite(loss):
            raise UsageError(f"the matching loss became {loss.item()} at iteration {it}; lower --lr-img or --lr-lr "
                             f"(now {config.lr_img}, {config.lr_lr})")
        for opt in optimisers:
            opt.zero_grad(set_to_none=False)
        loss.backward()
        run.loss = loss.item()
        hooks.on_pixel_grad(run, grad=images.grad, images=images.detach())
        skipped = bool(matcher.skip_update(run.loss))
        if not skipped:
            for opt in optimisers:
                opt.step()
            with torch.no_grad():
                syn_lr.clamp_(min=MIN_SYN_LR)
        del num, den, loss
        run.log(loss=run.loss, syn_lr=syn_lr.item(), skipped=skipped, **run.segment)
        if evaluate is not None and ((it + 1) % config.eval_every == 0 or it == config.iterations - 1):
            eval_start = time.time()
            result = evaluate(run)
            run.log(**{f"eval_{k}": v for k, v in result.items()}, eval_seconds=round(time.time() - eval_start, 3))
            bar.write(f"iteration {it + 1}: accuracy {result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}%")
        if snapshot_every and (it + 1) % snapshot_every == 0 and it < config.iterations - 1:
            save_snapshot(run, it + 1)   # the last iteration's images are synthetic.png
        hooks.on_iteration(run, record=run.record)
        bar.set_postfix(loss=f"{run.loss:.4f}", lr=f"{syn_lr.item():.4g}")
    bar.close()
    save_run(run, time.time() - start)


def _end(run: Run, hooks, failure: BaseException | None) -> None:
    """``on_run_end`` for every active plugin; while failing, its own errors only warn."""
    try:
        hooks.on_run_end(run, exception=failure)
    except Exception as exc:
        if failure is None:
            raise
        warn(f"{exc} (while the run was already failing)")


def save_snapshot(run: Run, iterations_done: int) -> None:
    """The current images as one row per class, for the run report (no random draws: results stay the same)."""
    save_image_grid(snapshot_path(run.out_dir, iterations_done), run.images.detach(), run.labels, run.info)


def progress_evaluator(run: Run, progress: bool):
    """The standard-protocol evaluation of a run's current images (for ``--eval-every``)."""
    from .evaluate import TrainRecipe, evaluate_set

    config = run.config
    test_set = load_dataset(config.dataset, "test", config.data_root)
    model, model_opts = run.matcher.network()

    def evaluate(run: Run) -> dict:
        recipe = TrainRecipe(model, model_opts, config.eval_epochs, config.eval_batch, augment=DSA())
        return evaluate_set(recipe, run.images.detach(), run.targets.detach(), run.syn_lr.item(), test_set,
                            config.eval_runs, run.device, soft=run.matcher.learn_targets, progress=progress)

    return evaluate


# ---------------------------------------------------------------------------- outputs


def _plain(options) -> dict:
    return asdict(options) if is_dataclass(options) else {}


def synthetic_record(run: Run, seconds: float) -> dict:
    """The contents of ``synthetic.pt``: tensors plus plain metadata (loads with weights_only=True)."""
    c, info = run.config, run.info
    model, model_opts = run.matcher.network()
    record = {
        "images": run.images.detach().cpu().clone(),
        "labels": run.labels.cpu().clone(),
        "lr": run.syn_lr.detach().cpu().clone(),
        "meta": {
            "format": "ddtoolbox-synthetic", "ddtoolbox_version": __version__,
            "dataset": info.name, "channels": info.channels, "image_size": list(info.image_size),
            "num_classes": info.num_classes, "class_names": list(info.class_names),
            "mean": list(info.mean), "std": list(info.std), "ipc": c.ipc,
            "model": model, "model_options": model_opts,
            "matcher": c.matcher, "plugins": list(run.plugins), "iterations": c.iterations,
            "syn_steps": c.syn_steps, "expert_epochs": c.expert_epochs, "seed": c.seed,
            "buffer": str(run.buffer.path) if run.buffer is not None else None, "seconds": round(seconds, 2),
            "soft_labels": bool(run.matcher.learn_targets), "unroll": run.unroll_mode,
        },
    }
    if run.matcher.learn_targets:
        record["targets"] = run.targets.detach().cpu().clone()
    record.update(run.matcher.extra_state())
    return record


def save_run(run: Run, seconds: float) -> None:
    out = run.out_dir
    record = synthetic_record(run, seconds)
    save_tensors(out / "synthetic.pt", record)
    save_image_grid(out / "synthetic.png", record["images"], record["labels"], run.info)
    write_json(out / "metrics.json", {
        "meta": record["meta"], "environment": environment(run.device), "config": run.config.as_dict(),
        "options": {name: _plain(opts) for name, opts in run.options.items()},
        "final_lr": record["lr"].item(), "seconds_per_iteration": seconds / max(run.config.iterations, 1),
        "history": run.history,
    })
