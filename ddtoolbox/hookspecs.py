"""The plugin contract: every hook ddtoolbox calls, and what a plugin may do in it.

This module is the plugin author's manual. Implement any subset of these functions in a module
(or on an object), mark each with :data:`ddtoolbox.hookimpl`, and make the module known through an
entry point in the group ``ddtoolbox`` or pass it as ``--plugin dotted.module.path``. Hook
implementations may accept fewer arguments than the spec lists: each gets only the ones it names.

Two kinds of hooks:

* **Set-up hooks** (:func:`register_matchers`, :func:`register_trainers`,
  :func:`register_presets`, :func:`register_commands`, :func:`add_options`) are called on every
  installed plugin, so ``ddtool plugins`` and ``--help`` can show everything that is available.
* **Run hooks** (:func:`on_run_start`, :func:`on_iteration_start`, :func:`on_inner_loss`,
  :func:`on_loss_vector`, :func:`on_pixel_grad`, :func:`on_iteration`, :func:`on_run_end`) are
  called only on the plugins that are *active* in a run: those named with ``--plugin`` and the
  plugin that provides the chosen matcher. Installing a plugin therefore never changes a result by
  itself.

Every run hook may also name three arguments that are the calling plugin's own:

* ``options``: the plugin's options object for ``distill`` (an instance of the class its
  :func:`add_options` returned; ``None`` if it declares none);
* ``state``: the plugin's ``run.state[plugin]`` dict, the place for anything the plugin keeps between
  iterations (never a module global: several runs may share a process). Keep it to what
  ``torch.save`` stores and ``torch.load(weights_only=True)`` reads back (tensors, numbers,
  strings, lists and dicts of them), so a checkpoint can hold it;
* ``cache``: the plugin's ``run.cache[plugin]`` dict, for objects rebuilt from the options in
  :func:`on_run_start` (a network, a hook handle); it is never saved.

The order of one distillation iteration::

    on_iteration_start       (before anything is drawn: schedules, per-iteration settings)
    on_inner_loss            (plugins may wrap the student's inner loss: label smoothing, ...)
    matcher.loss_terms(run)  -> per-element terms (num_i, den_i); a trajectory matcher samples a
                                segment of an expert and unrolls the student on the synthetic set
    -> on_loss_vector        (each plugin may return weights; the core multiplies them)
    -> L = sum(w * num) / sum(w * den); L.backward()
    -> on_pixel_grad         (plugins may rescale the image gradient in place)
    -> optimiser steps for images, learned lr (and learned labels), unless the matcher skips them
    -> matcher.after_update(run)  (a matcher's own inner step, e.g. DC training its network)
    -> on_iteration          (the iteration's metrics record: logging, map refreshes, EMA, ...)

and around the iterations: the matcher's ``start(run)``, then :func:`on_run_start`; after the last
iteration the outputs are written, then :func:`on_run_end`, which also runs when the run fails.

Set ``DDTOOL_TRACE_HOOKS=1`` to print every hook call (hook, plugin, argument shapes and types, time)
to stderr, and ``DDTOOL_DEBUG=1`` to see a failing plugin's full traceback instead of one line.

Everything a plugin needs arrives as an argument; a plugin never reaches into the core's private
state. ``run`` is a :class:`ddtoolbox.Run`; treat its tensors as read-only unless a hook says
otherwise. Three handles on it are for plugins and matchers: ``run.optimisers`` (read-write: param
groups' hyper-parameters and gradients in place; docs/plugins.md says what is safe),
``run.generator`` (the run's own generator, seeded by ``--seed`` and checkpointed: draw from it,
not from torch's global one, to leave the run's other draws alone) and ``run.augment_pair(real,
syn)`` (one DSA draw applied to a real and a synthetic batch, replayable).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ddtoolbox")


# --------------------------------------------------------------------------- set-up hooks


@hookspec
def register_matchers(register):
    """Register matchers for ``--matcher NAME``.

    :param register: call ``register(matcher_class)`` once per matcher. The class subclasses
        :class:`ddtoolbox.Matcher` (or :class:`ddtoolbox.TrajectoryMatcher` to match expert
        trajectories as MTT does), has a ``name`` (what users pass to ``--matcher``) and a one-line
        ``description``.

    Called once on every installed plugin when the plugin manager is built, so a plugin may
    register several matchers. Two matchers with the same name are an error that names both
    plugins. The plugin that registers the chosen matcher is active in the run, and the matcher
    receives that plugin's options as ``ctx.options``.

    Example::

        @hookimpl
        def register_matchers(register):
            register(MyMatcher)
    """


@hookspec
def register_trainers(register):
    """Register expert trainers for ``ddtool buffer --trainer NAME``.

    :param register: call ``register(name, step_factory, description)``. ``step_factory(options)``
        receives the plugin's ``buffer`` options object (or ``None``) and returns a callable
        ``step(model, optimizer, images, labels, loss_fn) -> loss`` that performs one optimisation
        step of the expert on an (already augmented) batch and returns the batch loss. The built-in
        ``sgd`` trainer is registered the same way.
    """


@hookspec
def register_presets(register):
    """Register named sets of option values for ``--preset NAME``.

    :param register: call ``register(name, values, description)`` where ``values`` maps a
        subcommand (``"distill"``, ``"buffer"``, ``"eval"``) to a dict of option fields
        (``syn_steps``, not ``--syn-steps``) and their values; ``plugins`` lists plugins to
        activate. Options given on the command line override a preset's values. Names are
        conventionally ``plugin/dataset/ipcN``.

    Most plugins ship presets as TOML files and call
    :func:`ddtoolbox.presets.register_folder` ``(register, folder, prefix)``. Every preset is
    checked against the options that exist, so a preset naming an unknown option fails loudly.
    """


@hookspec
def register_commands(register):
    """Add subcommands to ``ddtool``.

    :param register: call ``register(name, setup=..., run=..., help=...)``. ``setup(parser,
        manager)`` adds the command's arguments to its ``argparse`` parser; ``run(args, manager)``
        does the work with the parsed arguments and the :class:`ddtoolbox.plugins.PluginManager`.
        ``help`` is the one line ``ddtool --help`` shows.

    ddtool's own commands (``distill``, ``eval``, ``bench``, ...) are registered this way, so a
    plugin's command is a peer of theirs. Raise :class:`ddtoolbox.UsageError` for bad input: the
    user sees one line and exit status 2.
    """


@hookspec
def add_options(command):
    """Declare this plugin's options for a subcommand.

    :param str command: ``"distill"`` (options of the run's plugins) or ``"buffer"`` (options of an
        expert trainer).
    :return: ``None``, or a dataclass whose fields are declared with
        :func:`ddtoolbox.options.option` (name, type, default, help), usually a subclass of
        :class:`ddtoolbox.options.Settings` so its values are checked when it is made.

    The command line is generated from the fields (``alpha_x`` becomes ``--alpha-x``); prefix
    field names with your plugin's name (``cpd_alpha``) so they cannot collide with the core's or
    another plugin's. Called on every installed plugin, so an installed plugin's options are
    accepted and shown by ``--help`` and ``ddtool plugins`` even when it is not active; an active
    plugin receives an instance, made from the values given, as the ``options`` argument of its run
    hooks (matchers: ``ctx.options``; trainers: ``step_factory(options)``). Presets and
    ``distill(config, options={...})`` fill the same fields.

    Example::

        @dataclass(kw_only=True)
        class CPDOptions(Settings):
            cpd_alpha: float = option(0.0, "share of the lowest terms to drop (default 0)")

        @hookimpl
        def add_options(command):
            return CPDOptions if command == "distill" else None
    """


# --------------------------------------------------------------------------- run hooks


@hookspec
def on_run_start(run, options, state, cache):
    """The distillation run is about to start its first iteration.

    :param ddtoolbox.Run run: the run: ``run.config`` holds the core settings, ``run.images`` the
        initial synthetic images, ``run.buffer`` the expert trajectories (``None`` for a matcher
        without), ``run.matcher`` the started matcher.
    :param options: this plugin's options object (``None`` if it declares none).
    :param dict state: this plugin's ``run.state[plugin]``; empty at the start of a run.
    :param dict cache: this plugin's ``run.cache[plugin]``, for objects rebuilt here (never saved).

    Check your options against the run here (the dataset, the matcher) and raise
    :class:`ddtoolbox.UsageError` with a message that names the option and a valid value; the
    run then stops before any iteration. Build what :func:`on_run_end` releases here.
    """


@hookspec
def on_iteration_start(run, options, state, cache):
    """An outer iteration is about to begin: nothing of it has been drawn or computed yet.

    :param ddtoolbox.Run run: ``run.iteration`` is the iteration about to run (0-based);
        ``run.images`` are the images the previous update left; ``run.record`` is this iteration's
        (empty) history entry, so ``run.log(...)`` already lands in it. ``run.optimisers`` may be
        changed here (a learning-rate schedule: set ``param_groups[i]["lr"]``).
    :param options: this plugin's options object.
    :param dict state: this plugin's saved state.
    :param dict cache: this plugin's objects that are never saved.

    Draw random numbers only from ``run.generator`` (or not at all): a draw from torch's global
    generator here changes what the matcher draws next, and so the result.
    """


@hookspec
def on_inner_loss(run, loss_fn, options, state, cache):
    """Change the loss the student minimises on the synthetic set in this iteration's unroll.

    :param ddtoolbox.Run run: the run, at the start of an iteration (after
        :func:`on_iteration_start`, before ``matcher.loss_terms``).
    :param loss_fn: ``loss_fn(logits, targets) -> 0-d tensor``, the inner loss so far: the
        matcher's ``inner_loss`` (cross-entropy; DATM's soft cross-entropy), or what a plugin called
        before this one returned. ``targets`` is the batch's slice of ``run.targets``: class ids, or
        soft labels ``(B, K)`` under a matcher that learns them.
    :param options: this plugin's options object.
    :param dict state: this plugin's saved state.
    :param dict cache: this plugin's objects that are never saved.
    :return: ``None`` to leave it, or a callable of the same signature that replaces it, e.g.
        ``lambda logits, targets: F.cross_entropy(logits, targets, label_smoothing=0.1)``.
        Several plugins chain: each receives the previous one's function. It must be
        differentiable (the unroll back-propagates through it) and a mean over the batch.

    The result is ``run.inner_loss`` for the iteration; matchers that unroll a student
    (``TrajectoryMatcher``, the DC example) use it. A matcher that trains no student ignores it.
    """


@hookspec
def on_loss_vector(run, num, den, options, state, cache):
    """See the per-element terms of the matching loss before they are reduced.

    :param ddtoolbox.Run run: the run (``run.iteration`` is the outer iteration).
    :param torch.Tensor num: 1-D, one entry per matched element; for trajectory matchers one per
        scalar network parameter, ``(theta_N,i - theta_star,i) ** 2``. Part of the autograd graph:
        do not modify it.
    :param torch.Tensor den: 1-D, same shape: ``(theta_0,i - theta_star,i) ** 2`` for trajectory
        matchers.
    :param options: this plugin's options object.
    :param dict state: this plugin's saved state.
    :param dict cache: this plugin's objects that are never saved.
    :return: ``None`` to leave the loss alone, or a tensor of non-negative weights with the shape
        of ``num`` (a 0/1 keep-mask is a weight). It is detached.

    The core multiplies the weights of all plugins that return some and reduces
    ``L = sum(w * num) / sum(w * den)``. With no weights this is exactly Eq. 1 of MTT. A weight
    vector whose kept denominator is zero is an error that names the plugin(s).
    """


@hookspec
def on_pixel_grad(run, grad, images, options, state, cache):
    """Change the gradient of the matching loss with respect to the synthetic images.

    :param ddtoolbox.Run run: the run.
    :param torch.Tensor grad: shape ``(N, C, H, W)``, the gradient after ``backward()``, before the
        optimiser step. **Modify it in place** (``grad.mul_(w)``); a returned value is ignored.
    :param torch.Tensor images: the synthetic images the gradient belongs to (read-only).
    :param options: this plugin's options object.
    :param dict state: this plugin's saved state.
    :param dict cache: this plugin's objects that are never saved.

    Called once per iteration, also on iterations whose update the matcher skips. Plugins are
    called in pluggy's order (last registered first); multiplicative changes commute.
    """


@hookspec
def on_iteration(run, record, options, state, cache):
    """An outer iteration has finished (after the optimiser steps).

    :param ddtoolbox.Run run: ``run.iteration`` is the iteration that just finished (0-based),
        ``run.loss`` its matching loss, ``run.images`` the updated synthetic images.
    :param dict record: this iteration's entry of ``metrics.json``'s history, already holding
        ``iteration``, ``loss``, ``syn_lr``, ``skipped``, the segment and any evaluation. Add plain
        numbers to it (``record["my_value"] = 0.5``; ``run.log(my_value=0.5)`` does the same).
    :param options: this plugin's options object.
    :param dict state: this plugin's saved state.
    :param dict cache: this plugin's objects that are never saved.

    Write files under ``run.out_dir`` (only when ``run.writes``: under torchrun only rank 0 writes).
    """


@hookspec
def on_run_end(run, exception, options, state, cache):
    """The run has ended: always called once the run exists, whether it finished or failed.

    :param ddtoolbox.Run run: the run. After success ``run.out_dir`` holds ``synthetic.pt``.
    :param exception: ``None`` when the run finished; else the exception that is ending it
        (a :class:`ddtoolbox.UsageError`, ``KeyboardInterrupt``, a plugin's error, ...). It is
        re-raised after this hook; do not raise it yourself.
    :param options: this plugin's options object.
    :param dict state: this plugin's saved state.
    :param dict cache: this plugin's objects that are never saved.

    Release what :func:`on_run_start` built and write extra outputs (only when ``exception`` is
    ``None``). An error raised here while the run is already failing is reported as a warning,
    so it never hides the original error.
    """
