"""Networks by name: ``create_model("ConvNetD3", channels=1, num_classes=10, image_size=28)``."""

from . import convnet  # noqa: F401  (registers the ConvNet family)
from . import alexnet, resnet, vgg  # noqa: F401  (register the cross-architecture nets)
from .flat import FlatModel, flatten_params, load_flat
from .registry import canonical_model_name, create_model, list_models, model_options, register_model

__all__ = ["canonical_model_name", "create_model", "list_models", "model_options", "register_model", "FlatModel", "flatten_params", "load_flat"]
