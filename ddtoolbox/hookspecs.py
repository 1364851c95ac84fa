"""The plugin contract: every hook ddtoolbox calls, and what a plugin may do in it.

This module is the plugin author's manual. Implement any subset of these functions in a module
(or on an object), mark each with :data:`ddtoolbox.hookimpl`, and make the module known through an
entry point in the group ``ddtoolbox`` or pass it as ``--plugin dotted.module.path``. Hook
implementations may accept fewer arguments than the spec lists (pluggy passes only the ones named).

Two kinds of hooks:

* **Set-up hooks** (:func:`register_matchers`, :func:`register_trainers`,
  :func:`register_presets`, :func:`add_options`) are
  called on every installed plugin, so ``ddtool plugins`` and ``--help`` can show everything that
  is available.
* **Run hooks** (:func:`on_run_start`, :func:`on_loss_vector`, :func:`on_pixel_grad`,
  :func:`on_iteration`, :func:`on_run_end`) are called only on the plugins that are *active* in a
  run: those named with ``--plugin`` and the plugin that provides the chosen matcher. Installing a
  plugin therefore never changes a result by itself.

The order of one distillation iteration::

    matcher picks a segment (theta_0, theta_star) of an expert trajectory
    -> the student is unrolled on augmented synthetic batches -> theta_N
    -> matcher returns per-element losses (num_i, den_i)
    -> on_loss_vector        (each plugin may return weights; the core multiplies them)
    -> L = sum(w * num) / sum(w * den); L.backward()
    -> on_pixel_grad         (plugins may rescale the image gradient in place)
    -> optimiser steps for images, learned lr (and any matcher-owned tensors)
    -> on_iteration          (logging, map refreshes, EMA, ...)

Set ``DDTOOL_TRACE_HOOKS=1`` to print every hook call and its result to stderr.

Everything a plugin needs arrives as an argument; a plugin never reaches into the core's private
state. The ``run`` argument is a :class:`ddtoolbox.distill.Run`; treat its tensors as read-only
unless a hook says otherwise.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ddtoolbox")


# --------------------------------------------------------------------------- set-up hooks


@hookspec
def register_matchers(register):
    """Register trajectory matchers.

    :param register: call ``register(matcher_class)`` once per matcher. The class must have a
        ``name`` (what users pass to ``--matcher``) and a one-line ``description``, and follow
        :class:`ddtoolbox.matchers.base.Matcher`.

    Called once on every installed plugin when the plugin manager is built, so a plugin may
    register several matchers. Two matchers with the same name are an error that names both
    plugins.

    Example::

        @hookimpl
        def register_matchers(register):
            register(MyMatcher)
    """


@hookspec
def register_trainers(register):
    """Register expert trainers for ``ddtool buffer --trainer NAME``.

    :param register: call ``register(name, step_factory, description)``. ``step_factory(args)``
        returns a callable ``step(model, optimizer, images, labels, loss_fn) -> loss`` that performs
        one optimisation step of the expert on an (already augmented) batch and returns the batch
        loss as a float. The built-in ``sgd`` trainer is registered the same way.
    """


@hookspec
def register_presets(register):
    """Register named sets of option values for ``ddtool distill --preset NAME``.

    :param register: call ``register(name, values, description)`` where ``values`` maps a
        subcommand (``"distill"``, ``"buffer"``, ``"eval"``) to a dict of option destinations
        (``syn_steps``, not ``--syn-steps``) and their values. Options given on the command line
        override a preset's values. Names are conventionally ``plugin/dataset/ipcN``.

    Most plugins ship presets as TOML files and call
    :func:`ddtoolbox.presets.register_folder` ``(register, folder, prefix)``. Every preset is
    checked against the options that exist, so a preset naming an unknown option fails loudly.
    """


@hookspec
def add_options(command, parser):
    """Add command-line options for a subcommand.

    :param str command: the subcommand whose parser is being built: ``"distill"``, ``"buffer"``
        or ``"eval"``.
    :param argparse._ArgumentGroup parser: an argument group titled after your plugin; call
        ``parser.add_argument(...)`` on it. Prefix option names with your plugin's name
        (``--cpd-alpha``) so they cannot collide with the core's or another plugin's.

    Called on every installed plugin, so the options of an installed plugin are accepted (and
    shown by ``--help`` and ``ddtool plugins``) even when the plugin is not active; they are only
    read when it is. Give every option a default and a help text.
    """


# --------------------------------------------------------------------------- run hooks


@hookspec
def on_run_start(run):
    """The distillation run is about to start its first iteration.

    :param ddtoolbox.distill.Run run: the run; ``run.args`` holds every parsed option,
        ``run.images`` the initial synthetic images, ``run.buffer`` the expert trajectories.

    Validate your options here and raise :class:`ddtoolbox.errors.UsageError` with a message that
    names the option and a valid value; the run then stops before any work is done.
    """


@hookspec
def on_loss_vector(run, num, den):
    """See the per-parameter terms of the matching loss before they are reduced.

    :param ddtoolbox.distill.Run run: the run (``run.iteration`` is the outer iteration).
    :param torch.Tensor num: 1-D, one entry per scalar network parameter:
        ``(theta_N,i - theta_star,i) ** 2``. Part of the autograd graph: do not modify it.
    :param torch.Tensor den: 1-D, same shape: ``(theta_0,i - theta_star,i) ** 2``.
    :return: ``None`` to leave the loss alone, or a tensor of non-negative weights with the shape
        of ``num`` (a 0/1 keep-mask is a weight). It should not require grad; it is detached.

    pluggy does not chain return values, so the core multiplies the weights of all plugins that
    return some, and reduces ``L = sum(w * num) / sum(w * den)``. With no weights this is exactly
    Eq. 1 of MTT. A weight vector whose kept denominator is zero is an error that names the plugin.
    """


@hookspec
def on_pixel_grad(run, grad, images):
    """Change the gradient of the matching loss with respect to the synthetic images.

    :param ddtoolbox.distill.Run run: the run.
    :param torch.Tensor grad: shape ``(N, C, H, W)``, the gradient after ``backward()``, before the
        optimiser step. **Modify it in place** (``grad.mul_(w)``); a returned value is ignored.
    :param torch.Tensor images: the synthetic images the gradient belongs to (read-only).

    Called once per iteration, also on iterations whose update the matcher skips. Plugins are
    called in pluggy's order (last registered first); multiplicative changes commute.
    """


@hookspec
def on_iteration(run):
    """An outer iteration has finished (after the optimiser steps).

    :param ddtoolbox.distill.Run run: ``run.iteration`` is the iteration that just finished
        (0-based), ``run.loss`` its matching loss, ``run.images`` the updated synthetic images.
        Call ``run.log(name=value)`` to add numbers to the run's metrics JSON, and write files
        under ``run.out_dir``.
    """


@hookspec
def on_run_end(run):
    """The run has finished and its final synthetic set has been saved.

    :param ddtoolbox.distill.Run run: the run; ``run.out_dir`` holds ``synthetic.pt``.
    """
