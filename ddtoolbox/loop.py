"""The iterations of a distillation run, with their guards: checkpoints, signals and divergence.

One iteration: ``on_iteration_start`` -> ``on_inner_loss`` -> the matcher's loss terms ->
``on_loss_vector`` -> Eq. 1 -> backward -> ``on_pixel_grad`` -> optimiser steps (unless the matcher
skips them) -> divergence check -> the matcher's ``after_update`` -> ``on_iteration``. Around the
iterations:

* **Checkpoints** every ``--checkpoint-every`` iterations and at least every
  ``--checkpoint-minutes`` (:mod:`ddtoolbox.checkpoint`), so a killed run loses little and resumes
  bit-identically.
* **Signals.** SIGINT and SIGTERM finish the current iteration, write a checkpoint and stop with
  :class:`ddtoolbox.errors.Interrupted` (exit 130 / 143), naming the command that resumes.
* **Divergence.** After every update the images, the learned lr and the labels must be finite and
  the pixels within :data:`PIXEL_LIMIT`; a non-finite loss counts too. ``--on-divergence stop``
  undoes the update and stops with :class:`ddtoolbox.errors.Diverged` (exit 3) without writing a
  result; ``skip`` undoes it, counts it and goes on.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import signal
import time

import torch
from tqdm.auto import tqdm

from . import parallel
from .checkpoint import checkpoint_path, save_checkpoint, set_rng_state
from .errors import Diverged, Interrupted, PluginError, warn
from .losses import combine_weights, matching_loss
from .plugins import check_record
from .runtime import StopSignals
from .viz import save_image_grid, snapshot_path

#: smallest learned student lr; MTT's lr is a free parameter and can otherwise go negative and diverge
MIN_SYN_LR = 1e-8
#: normalised pixel values beyond this count as divergence (real images lie within about +-3)
PIXEL_LIMIT = 1e3
#: iterations the learned lr may sit at its floor before the run warns that the student stopped learning
FLOOR_PATIENCE = 50


class Loop:
    """Runs a prepared :class:`ddtoolbox.Run` from its first (or checkpointed) iteration to its last."""

    def __init__(self, run, hooks, manager, matcher_plugin: str, progress: bool, checkpoint: dict | None = None,
                 evaluate=None):
        self.run, self.hooks, self.pm, self.matcher_plugin = run, hooks, manager, matcher_plugin
        self.progress, self.evaluate = progress, evaluate
        self.optimisers = run.optimisers or make_optimisers(run)
        self.first, self.seconds_before = 0, 0.0
        self.at_floor = 0
        if checkpoint is not None:
            self.restore(checkpoint)

    # ------------------------------------------------------------------ checkpoints

    def restore(self, ckpt: dict) -> None:
        """Continue from ``ckpt``: called after the matcher and plugins started, so the random
        generators are set last and the next iteration draws what it would have drawn."""
        run = self.run
        for name, opt in self.optimisers.items():
            opt.load_state_dict(ckpt["optimisers"][name])
        self.pm.call_user(self.matcher_plugin, "load_state_dict", run.matcher.load_state_dict, ckpt["matcher"])
        for plugin, state in ckpt["plugin_state"].items():
            mine = run.state.setdefault(plugin, {})
            mine.clear()
            mine.update(state)
        run.history[:] = ckpt["history"]
        run.record = run.history[-1] if run.history else None
        self.first = ckpt["iteration"] + 1
        self.seconds_before = ckpt["seconds"]
        set_rng_state(ckpt["rng"])
        if "run" in ckpt["rng"] and run.generator is not None:
            run.generator.set_state(ckpt["rng"]["run"])

    def save(self, iteration: int, seconds: float) -> None:
        run = self.run
        if not parallel.is_main():
            return
        for plugin, state in run.state.items():
            check_saveable(plugin, state)
        options = {p: dataclasses.asdict(o) for p, o in run.options.items() if dataclasses.is_dataclass(o)}
        save_checkpoint(checkpoint_path(run.out_dir), iteration=iteration, config=run.config.as_dict(),
                        plugins=run.plugins, options=options, images=run.images, labels=run.labels,
                        targets=run.targets, syn_lr=run.syn_lr, optimisers=self.optimisers,
                        matcher_state=run.matcher.state_dict(), plugin_state=run.state, history=run.history,
                        seconds=seconds, device=run.device.type, generator=run.generator)

    # ------------------------------------------------------------------ the iterations

    def run_all(self) -> float:
        """Every remaining iteration; returns the run's seconds (across resumes)."""
        run, c = self.run, self.run.config
        started = last_save = time.time()
        snapshot_every = c.snapshot_interval
        if snapshot_every and self.first == 0:
            self.save_snapshot(0)
        bar = tqdm(range(self.first, c.iterations), initial=self.first, total=c.iterations,
                   desc=f"distill {c.matcher}", unit="it", disable=not self.progress)
        if self.first == 0 and c.iterations > 0:
            self.save(-1, 0.0)    # the starting state: a divergence before the first checkpoint still keeps one
        with StopSignals() as stop:
            for it in bar:
                self.step(it)
                if self.evaluate is not None and ((it + 1) % c.eval_every == 0 or it == c.iterations - 1):
                    eval_start = time.time()
                    result = self.evaluate(run)
                    run.log(**{f"eval_{k}": v for k, v in result.items()}, eval_seconds=round(time.time() - eval_start, 3))
                    run.say(f"iteration {it + 1}: accuracy {result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}%")
                if snapshot_every and (it + 1) % snapshot_every == 0 and it < c.iterations - 1:
                    self.save_snapshot(it + 1)   # the last iteration's images are synthetic.png
                self.hooks.on_iteration(run, record=run.record)
                if "lr_lr" in run.matcher.unused:
                    bar.set_postfix(loss=f"{run.loss:.4f}")
                else:
                    bar.set_postfix(loss=f"{run.loss:.4f}", lr=f"{run.syn_lr.item():.4g}")
                seconds = self.seconds_before + time.time() - started
                signum = stop.signum
                if run.parallel != "none":   # every rank stops after the same iteration
                    signum = max(s or 0 for s in parallel.gather_objects(signum)) or None
                if signum is not None:
                    self.save(it, seconds)
                    name = signal.Signals(signum).name
                    raise Interrupted(f"{name} after iteration {it} ({it + 1} of {c.iterations} done; iterations count "
                                      f"from 0, as in metrics.json); checkpoint written; "
                                      f"continue with: ddtool distill --resume --out {run.out_dir}", signum)
                due = c.checkpoint_every and ((it + 1) % c.checkpoint_every == 0
                                              or time.time() - last_save >= 60 * c.checkpoint_minutes)
                if due and it < c.iterations - 1:
                    self.save(it, seconds)
                    last_save = time.time()
        bar.close()
        return self.seconds_before + time.time() - started

    def step(self, it: int) -> None:
        run, matcher, hooks, c = self.run, self.run.matcher, self.hooks, self.run.config
        run.iteration = it
        run.segment = {}
        run.log()
        if run.parallel == "segments":   # each rank draws its own segments (and augmentations)
            torch.manual_seed(segment_seed(c.seed, parallel.rank(), it))
        hooks.on_iteration_start(run)
        run.inner_loss = matcher.inner_loss
        for plugin, fn in hooks.results("on_inner_loss", run, chain="loss_fn", loss_fn=run.inner_loss):
            if fn is not None:
                if not callable(fn):
                    raise PluginError(f"plugin '{plugin}' returned {type(fn).__name__} from on_inner_loss; return "
                                      f"a function (logits, targets) -> loss, or None", plugin, "on_inner_loss")
                run.inner_loss = fn
        num, den = self.pm.call_user(self.matcher_plugin, "loss_terms", matcher.loss_terms, run)
        results = hooks.results("on_loss_vector", run, num=num, den=den)
        weights = combine_weights(results, num)
        if weights is not None and run.parallel == "batch":
            parallel.broadcast_(weights)     # computed from identical tensors; made identical bit for bit
        if weights is not None and not (weights * den).sum() > 0:
            who = ", ".join(name for name, w in results if w is not None)
            raise PluginError(f"the loss weights of plugin(s) {who} keep no element with a non-zero denominator",
                              who, "on_loss_vector")
        loss = matching_loss(num, den, weights)
        for opt in self.optimisers.values():
            opt.zero_grad(set_to_none=False)
        run.loss = loss.item()
        if run.parallel == "segments":   # the ranks' losses differ; all decide on their mean
            run.loss = parallel.sum_(torch.tensor([run.loss], dtype=torch.float64, device=loss.device)).item() \
                / parallel.world()
        problem, skipped = None, False
        if not math.isfinite(run.loss):
            problem = f"matching loss became {run.loss}"
        else:
            loss.backward()
            if run.parallel != "none":
                self.reduce_grads()
            hooks.on_pixel_grad(run, grad=run.images.grad, images=run.images.detach())
            if run.parallel != "none":
                parallel.broadcast_(run.images.grad)   # a plugin's reweighting (DAE) alike on every rank
            skipped = bool(matcher.skip_update(run.loss))
        del num, den, loss
        if problem is None and not skipped:
            before = self.snapshot()
            for opt in self.optimisers.values():
                opt.step()
            with torch.no_grad():
                run.syn_lr.clamp_(min=MIN_SYN_LR)
            problem = self.diverged()
            if problem is not None:
                self.roll_back(before)
        if problem is not None:
            self.on_divergence(it, problem)
        self.pm.call_user(self.matcher_plugin, "after_update", matcher.after_update, run)
        run.log(loss=run.loss, syn_lr=run.syn_lr.item(), skipped=skipped or problem is not None, **run.segment)
        check_record(run.record, self.matcher_plugin, "run.segment")
        self.watch_floor(it)

    def save_snapshot(self, iterations_done: int) -> None:
        """The current images as one row per class, for the run report (no random draws: results stay the same)."""
        run = self.run
        if not run.writes:
            return
        save_image_grid(snapshot_path(run.out_dir, iterations_done), run.train_set.unwhiten(run.images.detach()),
                        run.labels, run.info)

    def reduce_grads(self) -> None:
        """Every rank applies the same update: the mean over the ranks of their outer gradients.

        In ``segments`` mode each rank's gradient is its own segment's, so this is a mean over a
        larger outer batch. In ``batch`` mode each rank back-propagates the same outer loss through
        the differentiable all-reduce of the inner gradients, whose backward sums over the ranks
        again; rank r's gradient comes out as ``world`` times its shard's share of the true one, so
        the sum over the ranks divided by ``world`` is the one-process gradient.
        """
        run = self.run
        parallel.average_grads([t for t in (run.images, run.syn_lr, run.targets) if t.requires_grad])

    # ------------------------------------------------------------------ guards

    def snapshot(self) -> dict:
        run = self.run
        return {"tensors": [t.detach().clone() for t in (run.images, run.syn_lr, run.targets)],
                "optimisers": {name: copy.deepcopy(opt.state_dict()) for name, opt in self.optimisers.items()}}

    def roll_back(self, before: dict) -> None:
        run = self.run
        with torch.no_grad():
            for live, saved in zip((run.images, run.syn_lr, run.targets), before["tensors"]):
                live.copy_(saved)
        for name, opt in self.optimisers.items():
            opt.load_state_dict(before["optimisers"][name])

    def diverged(self) -> str | None:
        """What, if anything, the last update broke."""
        run = self.run
        with torch.no_grad():
            if not torch.isfinite(run.images).all():
                return "synthetic images became non-finite"
            peak = run.images.abs().max().item()
            if peak > PIXEL_LIMIT:
                return f"pixels reached {peak:.3g} (normalised units; real images lie within about ±3)"
            if not torch.isfinite(run.syn_lr):
                return "learned lr became non-finite"
            if run.targets.is_floating_point() and not torch.isfinite(run.targets).all():
                return "learned labels became non-finite"
        return None

    def on_divergence(self, it: int, problem: str) -> None:
        run, c = self.run, self.run.config
        if c.on_divergence == "skip":
            run.log(diverged=problem)
            return
        ckpt = checkpoint_path(run.out_dir)
        kept = (f"the last good state is {ckpt}" if ckpt.exists() else
                "no checkpoint was written before it")
        raise Diverged(f"diverged at iteration {it} (counted from 0, as in metrics.json): the {problem} "
                       f"(--lr-img {c.lr_img:g}, --lr-lr {c.lr_lr:g}); "
                       f"{kept}; no result was written. Lower --lr-img / --lr-lr, or pass --on-divergence skip")

    def watch_floor(self, it: int) -> None:
        """Warn once when the learned lr has sat at its floor long enough that the student no longer learns."""
        self.at_floor = self.at_floor + 1 if self.run.syn_lr.item() <= MIN_SYN_LR * (1 + 1e-6) else 0
        if self.at_floor == FLOOR_PATIENCE:
            warn(f"the learned lr has been at its floor ({MIN_SYN_LR:g}) for {FLOOR_PATIENCE} iterations (since "
                 f"iteration {it + 2 - FLOOR_PATIENCE}): the student barely moves; lower --lr-lr or raise --lr-teacher")


def make_optimisers(run) -> dict:
    """The run's optimisers, plain SGD as MTT's: images (``--lr-img``, momentum 0.5), the learned lr
    (``--lr-lr``, momentum 0.5) and, for a matcher that learns its targets, the labels (``--lr-y``,
    momentum 0.9). Plugins see them as ``run.optimisers`` (docs/plugins.md says what is safe)."""
    c = run.config
    optimisers = {"images": torch.optim.SGD([run.images], lr=c.lr_img, momentum=0.5),
                  "lr": torch.optim.SGD([run.syn_lr], lr=c.lr_lr, momentum=0.5)}
    if run.matcher.learn_targets:
        optimisers["targets"] = torch.optim.SGD([run.targets], lr=c.lr_y, momentum=0.9)
    return optimisers


def run_generator(seed: int) -> torch.Generator:
    """``run.generator``: a CPU generator of the run's own, seeded from ``--seed`` but apart from the
    global streams, so drawing from it changes no other draw of the run."""
    return torch.Generator().manual_seed((seed * 1_000_003 + 0x5EED) % 2**63)


def segment_seed(seed: int, rank: int, iteration: int) -> int:
    """``--parallel segments``: the seed of rank ``rank``'s draws at ``iteration`` (so a resumed run
    draws what it would have drawn, whatever the world size was before)."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + iteration) % 2**63


def check_saveable(plugin: str, state, where: str = "") -> None:
    """A plugin's ``run.state`` must hold only what a checkpoint can save and load back safely."""
    if isinstance(state, (torch.Tensor, int, float, str, bool, type(None))):
        return
    if isinstance(state, dict):
        for k, v in state.items():
            if not isinstance(k, (str, int)):
                raise PluginError(f"plugin '{plugin}' keeps a key of type {type(k).__name__} in run.state"
                                  f"{where}; use str or int keys", plugin, "run.state")
            check_saveable(plugin, v, f"{where}[{k!r}]")
        return
    if isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            check_saveable(plugin, v, f"{where}[{i}]")
        return
    raise PluginError(f"plugin '{plugin}' keeps a {type(state).__name__} in run.state{where}, which a checkpoint "
                      f"cannot hold; keep tensors, numbers, strings, lists and dicts there, and rebuildable objects "
                      f"in run.cache", plugin, "run.state")
