"""Shared building blocks for the model families (all tfmot-QAT-able, all firmware ops)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402

from digitrec import labels  # noqa: E402

layers = keras.layers
HEIGHT, WIDTH = 32, 20


def inputs(channels: int) -> keras.layers.Layer:
    return keras.Input(shape=(HEIGHT, WIDTH, channels), name="image")


def conv_bn(x, filters: int, kernel=3, strides=1, act: str | None = "relu", name: str | None = None):
    """Conv (no bias) + BatchNorm (folded by the converter) + optional ReLU/ReLU6."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization()(x)
    return activation(x, act)


def dw_bn(x, kernel=3, strides=1, act: str | None = "relu", padding: str = "same"):
    x = layers.DepthwiseConv2D(kernel, strides=strides, padding=padding, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return activation(x, act)


def activation(x, act: str | None):
    if act is None:
        return x
    if act == "relu":
        return layers.ReLU()(x)
    if act == "relu6":
        return layers.ReLU(max_value=6.0)(x)
    raise ValueError(f"unsupported activation {act!r}")


def pool(x, size: int = 2):
    return layers.MaxPooling2D(size, padding="same")(x)


def squeeze_excite(x, ratio: float = 0.25, min_ch: int = 8):
    """SE: GAP -> 1x1 reduce (ReLU) -> 1x1 expand (sigmoid) -> scale (MEAN, CONV, LOGISTIC, MUL)."""
    ch = int(x.shape[-1])
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Conv2D(max(min_ch, int(ch * ratio)), 1, activation="relu")(s)
    s = layers.Conv2D(ch, 1, activation="sigmoid")(s)
    return layers.Multiply()([x, s])


def residual(x, filters: int, strides: int = 1, act: str = "relu", se: bool = False):
    """Basic residual block: two 3x3 conv-BN, projection shortcut when the shape changes."""
    shortcut = x
    y = conv_bn(x, filters, 3, strides, act)
    y = conv_bn(y, filters, 3, 1, None)
    if se:
        y = squeeze_excite(y)
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn(x, filters, 1, strides, None)
    y = layers.Add()([y, shortcut])
    return activation(y, act)


def inverted_residual(x, filters: int, expand: int, strides: int = 1, se: bool = False, kernel=3):
    """MobileNetV2 / MBConv block (ReLU6; optional squeeze-excitation)."""
    in_ch = int(x.shape[-1])
    y = x
    if expand != 1:
        y = conv_bn(y, in_ch * expand, 1, 1, "relu6")
    y = dw_bn(y, kernel, strides, "relu6")
    if se:
        y = squeeze_excite(y)
    y = conv_bn(y, filters, 1, 1, None)
    if strides == 1 and in_ch == filters:
        y = layers.Add()([y, x])
    return y


def ghost(x, filters: int, act: str | None = "relu"):
    """GhostNet module: 1x1 primary conv for half the channels, cheap 3x3 depthwise for the rest."""
    primary = conv_bn(x, filters // 2, 1, 1, act)
    cheap = dw_bn(primary, 3, 1, act)
    return layers.Concatenate()([primary, cheap])


def gap_head(x, classes: int, hidden: tuple[int, ...] = (), dropout: float = 0.0, name: str = ""):
    """GAP (MEAN) -> optional hidden Dense(ReLU) layers -> Dense -> softmax."""
    x = layers.GlobalAveragePooling2D()(x)
    return dense_head(x, classes, hidden, dropout)


def dense_head(x, classes: int, hidden: tuple[int, ...] = (), dropout: float = 0.0):
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(classes)(x)
    return layers.Softmax()(x)


TENTHS_LAYER = "tenths"  # the softmax over tenths inside a digit-sum head (training reads it too)
DIGIT_SUM_LAYER = "digit_sum"  # its fixed tenths -> digits sum (QAT gives it a fixed output range)


def digit_sum_head(x, dropout: float = 0.0):
    """A 10-class output read through tenths: Dense(100) + softmax, then a fixed, bias-free
    FULLY_CONNECTED that sums the probabilities of each digit's tenths (x.5 .. (x+1).4).

    Training can supervise the tenths softmax (layer ``TENTHS_LAYER``) with 100-class labels, so
    the network learns where the x.4/x.5 rounding boundary lies instead of guessing it from
    rounded labels. The exported model still outputs 10 digit probabilities (summing to 1).
    """
    if dropout:
        x = layers.Dropout(dropout)(x)
    tenths = layers.Softmax(name=TENTHS_LAYER)(layers.Dense(100)(x))
    total = keras.initializers.Constant(labels.tenths_to_digits())
    return layers.Dense(10, use_bias=False, trainable=False, kernel_initializer=total, name=DIGIT_SUM_LAYER)(tenths)


def model(inp, out, name: str) -> keras.Model:
    return keras.Model(inp, out, name=name)
