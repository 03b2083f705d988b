"""The shared model zoo: image classifiers by name, rebuilt from JSON specs.

Every model takes images in [0, 1] and normalises them itself::

    model = build_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    same_arch = build_from_spec(json.loads(json.dumps(model.spec)))

``arch_names()`` and ``describe_archs()`` list what is registered; a new
architecture joins with ``@register_arch``.
"""

from __future__ import annotations

# Imported for their @register_arch side effect: the built-in architectures.
from mltk.nn.classifiers import convnet, mobilenet, resnet_cifar, resnet_option_a  # noqa: F401
from mltk.nn.classifiers.architectures import (
    UnknownArchError,
    arch_names,
    build_from_spec,
    build_model,
    describe_archs,
    register_arch,
)
from mltk.nn.classifiers.classifier import ImageClassifier
from mltk.nn.encoders import vit  # noqa: F401

__all__ = [
    "ImageClassifier",
    "UnknownArchError",
    "arch_names",
    "build_from_spec",
    "build_model",
    "describe_archs",
    "register_arch",
]
