"""Trained networks on disk: the teachers of the ``kd`` and ``soft-no-teacher`` protocols, and DAE's
activation model G.

``ddtool train-full --save-model FILE`` writes one; ``ddtool eval --teacher FILE`` and ``ddtool distill
--plugin dae --dae-model FILE`` read it. The file
is a dict of tensors and plain values (``torch.load(weights_only=True)``): the ``state_dict`` plus
what the network is (model name and options) and what it was trained on (dataset, shapes,
normalisation), so a teacher for another dataset or a broken file is refused with one clear line
instead of silently teaching nonsense.
"""

from __future__ import annotations

import torch

from . import __version__
from .data import check_same_images, image_record
from .errors import UsageError, brief
from .io import load_tensors, save_tensors
from .models import create_model

FORMAT = "ddtoolbox-model"
FORMAT_VERSION = 1


def save_model(path, net: torch.nn.Module, *, model: str, model_options: dict, info, extra: dict | None = None):
    """Write ``net`` with everything :func:`load_teacher` checks."""
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ddtoolbox_version": __version__,
        "model": model, "model_options": dict(model_options), "dataset": info.name,
        "channels": info.channels, "image_size": list(info.image_size), "num_classes": info.num_classes,
        "mean": list(info.mean), "std": list(info.std), **image_record(info),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        **(extra or {}),
    }
    return save_tensors(path, record)


def load_teacher(path, info, device, *, role: str = "teacher", option: str = "--teacher") -> tuple[torch.nn.Module, dict]:
    """Load a saved network for dataset ``info``, frozen (eval mode, no gradients). ``role`` and
    ``option`` name it in errors (a KD teacher, DAE's activation model)."""
    fix = f"point {option} at a file written by 'ddtool train-full --save-model' for this dataset"
    record = load_tensors(path, f"{role} network", fix)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UsageError(f"{path} is not a ddtoolbox network file; {fix}")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise UsageError(f"{role} {path} was written by a newer ddtoolbox; upgrade ddtoolbox")
    missing = [k for k in ("model", "model_options", "dataset", "state_dict") if k not in record]
    if missing:
        raise UsageError(f"{role} {path} lacks {', '.join(missing)}; {fix}")
    if record["dataset"] != info.name:
        raise UsageError(f"{role} {path} was trained on '{record['dataset']}', not '{info.name}'; "
                         f"train one with 'ddtool train-full --dataset {info.name} --save-model FILE' and give {option} FILE")
    expect = {"channels": info.channels, "image_size": list(info.image_size), "num_classes": info.num_classes,
              "mean": list(info.mean), "std": list(info.std)}
    wrong = [k for k, v in expect.items() if k in record and _plain(record[k]) != _plain(v)]
    if wrong:
        raise UsageError(f"{role} {path} was trained on {info.name} data of another shape or normalisation "
                         f"({', '.join(wrong)} differ); {fix}")
    check_same_images(info, record, f"{role} {path}", f"train one on these images with 'ddtool train-full "
                      f"--dataset {info.name}{' --zca' if info.zca else ''} --save-model FILE'")
    net = create_model(record["model"], info.channels, info.num_classes, info.image_size, **record["model_options"])
    try:
        net.load_state_dict(record["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{role} {path} does not fit a {record['model']} with options {record['model_options']} "
                         f"({brief(first)}); {fix}") from exc
    net.to(device).eval()
    net.requires_grad_(False)
    return net, {k: v for k, v in record.items() if k != "state_dict"}


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [round(float(v), 6) if isinstance(v, float) else v for v in value]
    return value
