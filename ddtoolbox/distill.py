"""The outer distillation loop: matcher + unroll + hooks + optimisers + outputs."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .augment import DSA
from .errors import PluginError, UsageError
from .io import save_tensors, write_json
from .models import FlatModel, load_flat
from .unroll import choose_unroll, graph_bytes_per_step
from .viz import save_image_grid

#: smallest learned student lr; MTT's lr is a free parameter and can otherwise go negative and diverge
MIN_SYN_LR = 1e-8


@dataclass
class Run:
    """The state of one distillation run, as plugins see it.

    Tensors are the live ones: read them, do not modify them, except where a hook says so.
    """

    args: argparse.Namespace
    out_dir: Path
    device: torch.device
    info: object                      #: :class:`ddtoolbox.data.DatasetInfo` of the real data
    buffer: object                    #: :class:`ddtoolbox.trajectories.Buffer`
    matcher: object
    images: torch.Tensor              #: synthetic images (N, C, H, W), normalised, a leaf tensor
    labels: torch.Tensor              #: hard class id of each synthetic image (N,)
    targets: torch.Tensor             #: what the inner loss uses: labels, or learned soft labels
    syn_lr: torch.Tensor              #: the learned student learning rate (a 0-d leaf tensor)
    iteration: int = -1               #: the current (or just finished) outer iteration, 0-based
    loss: float = math.nan            #: matching loss of the current iteration
    segment: dict = field(default_factory=dict)   #: expert and start epoch of the current iteration
    history: list = field(default_factory=list)   #: one dict of logged numbers per logging point
    plugins: list = field(default_factory=list)   #: names of the active plugins
    unroll_mode: str = "full"                     #: how the student unroll keeps its graph

    def log(self, **values) -> None:
        """Add numbers for the current iteration to the metrics JSON."""
        if not self.history or self.history[-1].get("iteration") != self.iteration:
            self.history.append({"iteration": self.iteration})
        self.history[-1].update({k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})

    def make_model(self) -> torch.nn.Module:
        """A freshly initialised network of the experts' architecture, on the run's device."""
        return self.buffer.make_model().to(self.device)

    def expert_model(self, expert: int = 0, epoch: int = -1) -> torch.nn.Module:
        """An expert's snapshot as a ready network (``epoch=-1``: its final, fully trained state)."""
        return load_flat(self.make_model(), self.buffer.trajectory(expert)[epoch])


def check_args(args) -> None:
    """Reject impossible settings before any work is done."""
    if args.ipc < 1:
        raise UsageError(f"--ipc must be at least 1 (got {args.ipc})")
    for name in ("lr_img", "lr_lr", "iterations", "syn_steps", "expert_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative (got {getattr(args, name)})")
    if args.syn_steps < 1 or args.expert_epochs < 1:
        raise UsageError("--syn-steps and --expert-epochs must be at least 1")
    if args.lr_teacher is not None and args.lr_teacher <= 0:
        raise UsageError(f"--lr-teacher must be positive (got {args.lr_teacher})")
    if args.batch_syn is not None and args.batch_syn < 1:
        raise UsageError(f"--batch-syn must be at least 1 (got {args.batch_syn})")
    if not 0 <= args.min_start_epoch < args.max_start_epoch:
        raise UsageError(f"need 0 <= --min-start-epoch < --max-start-epoch (got {args.min_start_epoch}, {args.max_start_epoch})")


def reduce_loss(num, den, weights):
    """L = sum(w * num) / sum(w * den), with w the product of the plugins' weights (or 1)."""
    if weights is None:
        return num.sum() / den.sum()
    return (weights * num).sum() / (weights * den).sum()


def combine_weights(results, like: torch.Tensor):
    """Multiply the weights returned by ``on_loss_vector`` implementations; check each one."""
    weights = None
    for name, w in results:
        if w is None:
            continue
        w = torch.as_tensor(w, device=like.device).detach()
        if w.shape != like.shape:
            raise PluginError(f"plugin '{name}' returned weights of shape {tuple(w.shape)} from on_loss_vector, expected {tuple(like.shape)}")
        if (w < 0).any() or not torch.isfinite(w).all():
            raise PluginError(f"plugin '{name}' returned negative or non-finite weights from on_loss_vector")
        weights = w.to(like.dtype) if weights is None else weights * w
    return weights


def distill(args, plugin_manager, *, progress: bool = True, evaluator=None) -> Run:
    """Distil a synthetic set as ``args`` says, write it under ``args.out`` and return the run."""
    from .data import load_dataset
    from .runtime import configure_backends, resolve_device, seed_everything
    from .trajectories import Buffer

    check_args(args)
    device = resolve_device(args.device)
    configure_backends(device, args.tf32)
    generator = seed_everything(args.seed)
    buffer = Buffer.open(args.buffer)
    train_set = load_dataset(args.dataset, "train", args.data_root)
    buffer.check_compatible(args.dataset, args.model, needed_epochs=args.max_start_epoch + args.expert_epochs)
    matcher_entry = plugin_manager.matcher(args.matcher)
    active = [plugin_manager.load(p) for p in args.plugins]
    if matcher_entry.plugin not in active:
        active.append(matcher_entry.plugin)
    hooks = plugin_manager.run_hooks(active)

    matcher = matcher_entry.obj(args, buffer, train_set, device)
    images, labels = matcher.initial_images(args.ipc, generator)
    images = images.to(device).detach().clone().requires_grad_(True)
    labels = labels.to(device)
    targets = matcher.initial_targets(images.detach(), labels)
    if matcher.learn_targets:
        targets = targets.detach().clone().requires_grad_(True)
    syn_lr = torch.tensor(float(args.lr_teacher or buffer.meta["lr"]), device=device, requires_grad=True)
    batch_syn = args.batch_syn or images.shape[0]
    student = FlatModel(buffer.make_model().to(device))
    augment = None if args.no_dsa else DSA()

    unroll, run_mode = choose_unroll(
        args.unroll, args.syn_steps, device=device,
        bytes_per_step=lambda: graph_bytes_per_step(student, buffer.trajectory(0)[0].to(device), images, targets,
                                                    syn_lr, batch_syn, matcher.inner_loss, augment))
    out = Path(args.out)
    run = Run(args=args, out_dir=out, device=device, info=train_set.info, buffer=buffer, matcher=matcher,
              images=images, labels=labels, targets=targets, syn_lr=syn_lr, plugins=active,
              unroll_mode=run_mode)
    opt_img = torch.optim.SGD([images], lr=args.lr_img, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=args.lr_lr, momentum=0.5)
    opt_y = torch.optim.SGD([targets], lr=args.lr_y, momentum=0.9) if matcher.learn_targets else None

    hooks.on_run_start(run=run)
    start_time = time.time()
    bar = tqdm(range(args.iterations), desc=f"distill {args.matcher}", unit="it", disable=not progress)
    for it in bar:
        run.iteration = it
        theta_0, theta_star, run.segment = matcher.sample_segment(it)
        theta_n, _ = unroll(student, theta_0, images, targets, syn_lr, args.syn_steps, batch_syn,
                            matcher.inner_loss, augment)
        num, den = matcher.loss_terms(theta_n, theta_0, theta_star)
        weights = combine_weights(hooks.results("on_loss_vector", run=run, num=num, den=den), num)
        if weights is not None and not (weights * den).sum() > 0:
            who = [name for name, w in hooks.results("on_loss_vector", run=run, num=num, den=den) if w is not None]
            raise PluginError(f"the loss weights of plugin(s) {', '.join(who)} keep no parameter with a non-zero denominator")
        loss = reduce_loss(num, den, weights)
        if not torch.isfinite(loss):
            raise UsageError(
                f"the matching loss became {loss.item()} at iteration {it}; lower --lr-img or --lr-lr "
                f"(now {args.lr_img}, {args.lr_lr})"
            )
        for opt in (opt_img, opt_lr, opt_y):
            if opt is not None:
                opt.zero_grad(set_to_none=False)
        loss.backward()
        run.loss = loss.item()
        hooks.on_pixel_grad(run=run, grad=images.grad, images=images.detach())
        skipped = matcher.skip_update(run.loss)
        if not skipped:
            for opt in (opt_img, opt_lr, opt_y):
                if opt is not None:
                    opt.step()
            with torch.no_grad():
                syn_lr.clamp_(min=MIN_SYN_LR)
        del theta_n, num, den, loss
        run.log(loss=run.loss, syn_lr=syn_lr.item(), skipped=skipped, **run.segment)
        hooks.on_iteration(run=run)
        bar.set_postfix(loss=f"{run.loss:.4f}", lr=f"{syn_lr.item():.4g}")
        last = it == args.iterations - 1
        if evaluator is not None and args.eval_every and ((it + 1) % args.eval_every == 0 or last):
            result = evaluator(run)
            run.log(**{f"eval_{k}": v for k, v in result.items()})
            bar.write(f"iteration {it + 1}: accuracy {result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}%")
    bar.close()
    elapsed = time.time() - start_time
    save_run(run, elapsed)
    hooks.on_run_end(run=run)
    return run


def synthetic_record(run: Run, seconds: float) -> dict:
    """The contents of ``synthetic.pt``: tensors plus plain metadata (loads with weights_only=True)."""
    a, info = run.args, run.info
    targets = run.targets.detach().cpu()
    record = {
        "images": run.images.detach().cpu().clone(),
        "labels": run.labels.cpu().clone(),
        "lr": run.syn_lr.detach().cpu().clone(),
        "meta": {
            "format": "ddtoolbox-synthetic", "ddtoolbox_version": __version__,
            "dataset": info.name, "channels": info.channels, "image_size": list(info.image_size),
            "num_classes": info.num_classes, "class_names": list(info.class_names),
            "mean": list(info.mean), "std": list(info.std), "ipc": a.ipc,
            "model": run.buffer.meta["model"], "model_options": run.buffer.meta["model_options"],
            "matcher": a.matcher, "plugins": list(run.plugins), "iterations": a.iterations,
            "syn_steps": a.syn_steps, "expert_epochs": a.expert_epochs, "seed": a.seed,
            "buffer": str(run.buffer.path), "seconds": round(seconds, 2),
            "soft_labels": bool(run.matcher.learn_targets), "unroll": run.unroll_mode,
        },
    }
    if run.matcher.learn_targets:
        record["targets"] = targets
    record.update(run.matcher.extra_state())
    return record


def save_run(run: Run, seconds: float) -> None:
    out = run.out_dir
    record = synthetic_record(run, seconds)
    save_tensors(out / "synthetic.pt", record)
    save_image_grid(out / "synthetic.png", record["images"], record["labels"], run.info)
    write_json(out / "metrics.json", {
        "meta": record["meta"], "args": {k: v for k, v in vars(run.args).items() if not callable(v)},
        "final_lr": record["lr"].item(), "seconds_per_iteration": seconds / max(run.args.iterations, 1),
        "history": run.history,
    })
