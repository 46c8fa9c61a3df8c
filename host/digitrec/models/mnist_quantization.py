"""mnist_quantization: the TFLite MNIST QAT example CNN adapted to 32x20 input."""

from digitrec.models import _blocks as b
from digitrec.models import register

L = b.layers


@register("mnist_quantization", "Conv32-ReLU-Pool, Conv64-ReLU-Pool, Conv64-ReLU, GAP")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.pool(L.Conv2D(32, 3, padding="same", activation="relu")(inp))
    x = b.pool(L.Conv2D(64, 3, padding="same", activation="relu")(x))
    x = L.Conv2D(64, 3, padding="same", activation="relu")(x)
    return b.model(inp, b.gap_head(x, classes), "mnist_quantization")
