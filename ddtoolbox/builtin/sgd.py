"""The built-in ``sgd`` expert trainer, registered like any plugin's trainer."""

from __future__ import annotations

from .. import hookimpl


def sgd_step_factory(args):
    """Plain SGD on each augmented batch (the MTT/DATM expert)."""

    def step(model, optimizer, images, labels, loss_fn):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@hookimpl
def register_trainers(register):
    register("sgd", sgd_step_factory, "plain SGD, as MTT and DATM train their experts")
