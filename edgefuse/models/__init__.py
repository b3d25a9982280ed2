"""A small zoo of attention-fusion classifiers behind :func:`create_model`."""

from edgefuse.models.registry import create_model, list_models, register_model

from edgefuse.models import fpn, mobilenetv3, resnet  # noqa: F401  (registers the models)

__all__ = ["create_model", "list_models", "register_model"]
