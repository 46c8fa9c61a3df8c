"""v16: MobileNetV2 inverted residuals (24, 40, 56 channels), 1x1 head."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v16", "MobileNetV2 inverted residuals 24/40/56, 1x1 conv head 128, GAP")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 24, 3, 1, "relu6")
    x = b.inverted_residual(x, 24, 1, 1)
    x = b.inverted_residual(x, 40, 4, 2)  # 16x10
    x = b.inverted_residual(x, 40, 4, 1)
    x = b.inverted_residual(x, 56, 4, 2)  # 8x5
    x = b.inverted_residual(x, 56, 4, 1)
    x = b.conv_bn(x, 128, 1, 1, "relu6")
    return b.model(inp, b.gap_head(x, classes, dropout=0.2), "v16")
