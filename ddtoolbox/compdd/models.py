"""The network whose Grad-CAM maps are measured, and which of its outputs each class is.

Three sources, because users hold weights in three forms:

* a torchvision classifier (``--model resnet18 --weights FILE``): the paper's choice, an ImageNet
  ResNet-18; the state dict is the user's (nothing is downloaded);
* a ddtoolbox network by its registered name (``--model ConvNet --weights FILE``), built for the
  dataset's shape;
* an expert of a ``ddtool buffer`` folder (``--buffer DIR``): the final snapshot, i.e. a network
  trained on the real data, which is what the activation statistics of a dataset need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ddtoolbox import gradcam as G
from ddtoolbox.data import DatasetInfo
from ddtoolbox.errors import UsageError, brief, warn


@dataclass
class CamModel:
    model: nn.Module          #: prepared for Grad-CAM (eval, frozen, on the device)
    owner: nn.Module          #: the module whose named_modules() --layer names refer to
    layer_names: list[str]
    layers: list[nn.Module]
    num_outputs: int
    description: str          #: one line for reports and CSV headers



def build(info: DatasetInfo, *, model: str | None, weights=None, buffer=None, expert: int = 0,
          model_options: dict | None = None, layers: list[str] | None = None,
          device: torch.device | str = "cpu") -> CamModel:
    """Build the Grad-CAM network for images described by ``info`` (see the module docstring)."""
    # building a network draws its initialisation from the global RNG; keep the caller's stream
    with torch.random.fork_rng(devices=[]):
        if buffer:
            net, what = _from_buffer(info, buffer, expert, model, weights)
        elif not model:
            raise UsageError("give --model NAME with --weights FILE, or --buffer DIR (a 'ddtool buffer' folder)")
        elif G.is_torchvision_model(model):
            net = G.load_torchvision_model(model, weights, "--model", "--weights")
            what = f"torchvision {model} ({weights})"
            if G.needs_adapter(info.mean, info.std, info.channels):
                net = G.InputAdapter(net, info.mean, info.std)
        else:
            from ddtoolbox.models import create_model

            if not weights:
                raise UsageError(f"--model {model} needs --weights FILE (its state dict) or use --buffer DIR: "
                                 f"the Grad-CAM maps of an untrained network say nothing about the data")
            net = create_model(model, info.channels, info.num_classes, info.image_size, **(model_options or {}))
            G.load_state_dict_file(net, weights, model)
            what = f"{model} ({weights})"
    net = G.prepare_model(net).to(device)
    owner = net.model if isinstance(net, G.InputAdapter) else net
    names, mods = G.resolve_layers(owner, layers)
    probe = torch.zeros(1, info.channels, *info.image_size, device=device)
    with torch.no_grad():
        try:
            out = net(probe)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"the model cannot process {info.name}'s {info.channels}x{info.image_size[0]}x"
                             f"{info.image_size[1]} images ({brief(exc)}); choose a model "
                             f"built for them") from exc
    if out.dim() != 2:
        raise UsageError(f"the model does not output (N, classes) logits (got shape {tuple(out.shape)})")
    return CamModel(net, owner, names, mods, out.shape[1], f"{what}, Grad-CAM layer {'+'.join(names)}")


def _from_buffer(info, path, expert, model, weights):
    from ddtoolbox.buffer import Buffer

    if weights:
        raise UsageError("--weights and --buffer both name the model's weights; give one of them")
    buf = Buffer.open(path)
    if model and model != buf.meta["model"]:
        raise UsageError(f"buffer {path} holds {buf.meta['model']} experts, not {model}; drop --model")
    if not 0 <= expert < buf.num_experts:
        raise UsageError(f"--expert must be in [0, {buf.num_experts}) for buffer {path} (got {expert})")
    if buf.meta.get("zca"):
        raise UsageError(f"buffer {path} was trained on ZCA-whitened images, which compdd does not make; use a buffer "
                         f"made without --zca")
    if buf.meta["dataset"] != info.name:
        warn(f"buffer {path} was trained on {buf.meta['dataset']}, not {info.name}; its maps describe how a "
             f"{buf.meta['dataset']} network sees {info.name}")
    net = buf.expert_model(expert)
    return net, f"{buf.meta['model']} expert {expert} of {path} (final epoch)"


def class_targets(info: DatasetInfo, num_outputs: int, class_map: str | None = None) -> torch.Tensor:
    """The model output index of each class of ``info``, as a LongTensor.

    Explicit ``--class-map`` first; then, when the model has one output per class, the identity;
    then, for a 1000-way model, the ImageNet indices of a registered subset or of classes named by
    wnid (an ImageFolder-layout ImageNet tree). Grad-CAM of the wrong output would be a map of the
    wrong object, so anything else is an error rather than a guess.
    """
    from ddtoolbox.data.imagenet_subsets import SUBSETS, wnid_to_index

    if class_map:
        return G.parse_class_map(class_map, info.num_classes, num_outputs, option="--class-map")
    if num_outputs == info.num_classes:
        return torch.arange(info.num_classes)
    if num_outputs == 1000:
        if info.name in SUBSETS:
            return torch.tensor(SUBSETS[info.name].distinct_indices)
        idx = [wnid_to_index(c) for c in info.class_names]
        if all(i is not None for i in idx):
            return torch.tensor(idx)
    raise UsageError(f"the model has {num_outputs} outputs but {info.name} has {info.num_classes} classes that are "
                     f"not ImageNet wnids; give --class-map with each class's output index (e.g. '0,217,...')")
