"""Model zoo: one registry, one file per family (timm style).

``create_model(name, classes, color)`` returns an uncompiled ``tf_keras`` (Keras 2) model
that takes float32 32x20xC input in [0, 1] (``preprocess.to_float``) and ends in a
softmax over ``classes``. Family modules are imported lazily so that ``digitrec --help``
never loads TensorFlow; each family module registers itself with ``@register``.

Every layer maps to an op in ``firmware/core/dr_ops.def`` after int8 conversion and is
quantization-aware-trainable with tfmot (see ``digitrec.models.qat``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# name -> module; a family's name is its module's name.
FAMILY_MODULES: dict[str, str] = {
    "original_haverland": "original_haverland",
    "mnist_quantization": "mnist_quantization",
    "v3": "v3",
    "v4": "v4",
    "v6": "v6",
    "v7": "v7",
    "v9": "v9",
    "v12": "v12",
    "v15": "v15",
    "v16": "v16",
    "v17": "v17",
    "dr": "dr",
    "dr_teacher": "dr_teacher",
}
MODEL_NAMES: tuple[str, ...] = tuple(FAMILY_MODULES)
# PC-only models (distillation teachers): never exported for the firmware.
PC_ONLY: frozenset[str] = frozenset({"dr_teacher"})
COLORS = {"gray": 1, "rgb": 3}


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., object]  # build(classes: int, channels: int) -> tf_keras.Model
    description: str
    pc_only: bool = False


_REGISTRY: dict[str, Family] = {}


def register(name: str, description: str = "", pc_only: bool = False) -> Callable:
    """Decorator: ``@register("v4")`` on ``def build(classes, channels) -> tf_keras.Model``."""

    def wrap(fn: Callable) -> Callable:
        _REGISTRY[name] = Family(name, fn, description or (fn.__doc__ or "").strip(), pc_only)
        return fn

    return wrap


def get_family(name: str) -> Family:
    if name not in _REGISTRY:
        if name not in FAMILY_MODULES:
            raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
        importlib.import_module(f"digitrec.models.{FAMILY_MODULES[name]}")
    return _REGISTRY[name]


def channels_of(color: str) -> int:
    try:
        return COLORS[color.lower()]
    except KeyError:
        raise ValueError(f"color must be 'gray' or 'rgb', not {color!r}") from None


def create_model(name: str, classes: int, color: str):  # -> tf_keras.Model
    """Build family ``name`` for ``classes`` (10 or 100) and ``color`` ('gray'/'rgb')."""
    if classes not in (10, 100):
        raise ValueError(f"classes must be 10 or 100, not {classes}")
    model = get_family(name).build(classes, channels_of(color))
    model._name = name  # noqa: SLF001 - Keras has no public setter in Keras 2
    return model


def weight_count(model) -> int:
    """Weights only (trainable + non-trainable variables, e.g. BatchNorm statistics)."""
    return int(sum(int(v.shape.num_elements()) for v in model.weights))
