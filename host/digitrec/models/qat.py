"""Quantization-aware training wrappers (tfmot 0.8.1, Keras 2).

``quantize(model)`` first turns the model into its inference graph (``inference_graph``):
* every BatchNorm that follows a Conv2D / DepthwiseConv2D / Dense is folded into that layer's
  kernel and bias: tfmot 0.8.1 with TF 2.21 otherwise leaves a per-channel int8 MUL after each
  conv (worse accuracy, bigger file);
* a stand-alone BatchNorm (``original_haverland``'s input BN) becomes the exactly equivalent
  1x1 depthwise conv with bias: quantized as a BN, the converter left the model's input
  quantizer in float;
* Dropout layers are left out: kept during QAT, they scale the activations the moving-average
  quantizers record by up to 1 / (1 - rate), and the int8 ranges come out too wide
  (docs/experiments.md, "Dropout during QAT"; ``keep_dropout`` keeps them, as runs of training
  code version 1 did).

It then annotates every layer: layers that tfmot's default 8-bit registry supports get its
config; the digit-sum layer gets a fixed [0, 1] output range; ``Multiply``
(squeeze-excitation) gets ``OutputQuantizeConfig``, which fake-quantizes only the layer's
output, exactly what the int8 converter does for MUL. Any other failure propagates: there is
no float fallback.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from digitrec.models._blocks import DIGIT_SUM_LAYER  # noqa: E402

_q = tfmot.quantization.keras
_Registry = _q.default_8bit.Default8BitQuantizeRegistry


class OutputQuantizeConfig(_q.QuantizeConfig):
    """Quantize the output of a weight-less layer (MUL, stand-alone BN -> MUL/ADD)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


class ProbabilitySumQuantizeConfig(OutputQuantizeConfig):
    """The digit-sum layer (``_blocks.digit_sum_head``): its 0/1 kernel is quantized exactly
    (symmetric, per tensor) and its output, a probability, gets the fixed range [0, 1] as the
    converter gives SOFTMAX, instead of a moving-average range that starts at [-6, 6] and
    shrinks over thousands of steps (too coarse an output scale for short QAT)."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, _q.quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                                                 narrow_range=True))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def get_output_quantizers(self, layer):
        return [_q.quantizers.FixedQuantizer(num_bits=8, init_min=0.0, init_max=1.0, narrow_range=False)]


def custom_objects() -> dict[str, object]:
    return {"OutputQuantizeConfig": OutputQuantizeConfig, "ProbabilitySumQuantizeConfig": ProbabilitySumQuantizeConfig}


def scope() -> contextlib.AbstractContextManager:
    """Context needed to load a saved QAT Keras model."""
    return _q.quantize_scope(custom_objects())


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.InputLayer):
        return layer.__class__.from_config(layer.get_config())
    clone = layer.__class__.from_config(layer.get_config())
    if layer.name == DIGIT_SUM_LAYER:
        return _q.quantize_annotate_layer(clone, ProbabilitySumQuantizeConfig())
    if isinstance(layer, keras.layers.Multiply) or (
        isinstance(layer, keras.layers.BatchNormalization) and not _Registry().supports(layer)
    ):
        return _q.quantize_annotate_layer(clone, OutputQuantizeConfig())
    return _q.quantize_annotate_layer(clone)


_FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _inbound(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    node = layer._inbound_nodes[0]  # noqa: SLF001 - functional graph walk
    inbound = node.inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _fold_pairs(model: keras.Model) -> dict[str, str]:
    """conv name -> BN name for every BN whose only input is a foldable layer used once."""
    consumers: dict[str, int] = {}
    for layer in model.layers:
        for src in _inbound(layer) if layer._inbound_nodes else []:  # noqa: SLF001
            consumers[src.name] = consumers.get(src.name, 0) + 1
    pairs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and not isinstance(layer, keras.layers.InputLayer):
            src = _inbound(layer)
            if len(src) == 1 and isinstance(src[0], _FOLDABLE) and consumers[src[0].name] == 1:
                pairs[src[0].name] = layer.name
    return pairs


def _folded_weights(conv: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> list:
    import numpy as np

    w = conv.get_weights()
    kernel = w[0]
    is_dw = isinstance(conv, keras.layers.DepthwiseConv2D)
    out_ch = kernel.shape[2] * kernel.shape[3] if is_dw else kernel.shape[-1]
    bias = w[1] if len(w) > 1 else np.zeros(out_ch, np.float32)
    gamma, beta, mean, var = _bn_full(bn)
    s = gamma / np.sqrt(var + bn.epsilon)
    if is_dw:
        kernel = kernel * s.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * s
    return [kernel.astype(np.float32), ((bias - mean) * s + beta).astype(np.float32)]


def _bn_full(bn: keras.layers.BatchNormalization) -> list:
    import numpy as np

    w = list(bn.get_weights())
    ch = w[-1].shape[0]
    gamma = w.pop(0) if bn.scale else np.ones(ch, np.float32)
    beta = w.pop(0) if bn.center else np.zeros(ch, np.float32)
    return [gamma, beta, w[0], w[1]]


def _bn_as_depthwise(bn: keras.layers.BatchNormalization) -> tuple[keras.layers.Layer, list]:
    """A 1x1 DepthwiseConv2D (with bias) computing ``bn``'s inference affine map exactly."""
    import numpy as np

    gamma, beta, mean, var = _bn_full(bn)
    s = gamma / np.sqrt(var + bn.epsilon)
    layer = keras.layers.DepthwiseConv2D(1, use_bias=True, name=bn.name + "_affine")
    return layer, [s.reshape(1, 1, -1, 1).astype(np.float32), (beta - mean * s).astype(np.float32)]


def inference_graph(model: keras.Model, keep_dropout: bool = False) -> keras.Model:
    """Functional copy of ``model`` with Conv/Dense+BatchNorm pairs merged, any stand-alone
    4-D BatchNorm turned into a 1x1 depthwise conv and Dropout left out (all inference-exact;
    ``keep_dropout`` rebuilds the QAT models of runs made before Dropout was left out)."""
    pairs = _fold_pairs(model)
    folded_bn = set(pairs.values())
    tensors: dict[str, object] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            tensors[layer.name] = keras.Input(batch_shape=layer.input_shape[0] if isinstance(layer.input_shape, list)
                                              else layer.input_shape, name=layer.name)
            continue
        srcs = [tensors[s.name] for s in _inbound(layer)]
        if layer.name in folded_bn or (isinstance(layer, keras.layers.Dropout) and not keep_dropout):
            tensors[layer.name] = srcs[0]
            continue
        if isinstance(layer, keras.layers.BatchNormalization) and len(layer.input_shape) == 4:
            new, weights = _bn_as_depthwise(layer)
            tensors[layer.name] = new(srcs[0])
            new.set_weights(weights)
            continue
        cfg = layer.get_config()
        if layer.name in pairs:
            cfg["use_bias"] = True
        new = layer.__class__.from_config(cfg)
        out = new(srcs if len(srcs) > 1 else srcs[0])
        if layer.name in pairs:
            new.set_weights(_folded_weights(layer, model.get_layer(pairs[layer.name])))
        else:
            new.set_weights(layer.get_weights())
        tensors[layer.name] = out
    outs = [tensors[t._keras_history.layer.name] for t in model.outputs]  # noqa: SLF001
    return keras.Model([tensors[t._keras_history.layer.name] for t in model.inputs], outs, name=model.name)  # noqa: SLF001


def quantize(model: keras.Model, keep_dropout: bool = False) -> keras.Model:
    """Return the QAT model (fake-quant wrappers) of ``model`` (of its ``inference_graph``)."""
    base = inference_graph(model, keep_dropout)
    annotated = keras.models.clone_model(base, clone_function=_annotate)
    annotated.set_weights(base.get_weights())
    with scope():
        return _q.quantize_apply(annotated)
