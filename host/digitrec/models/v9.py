"""v9: EfficientNet-style MBConv blocks with squeeze-excitation (ReLU6 instead of swish)."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v9", "EfficientNet-style MBConv + SE: stem 24, MBConv 24/32/48/64, 1x1 head 128")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 24, 3, 1, "relu6")
    x = b.inverted_residual(x, 24, 1, 1, se=True)
    x = b.inverted_residual(x, 32, 4, 2, se=True)  # 16x10
    x = b.inverted_residual(x, 32, 4, 1, se=True)
    x = b.inverted_residual(x, 48, 4, 2, se=True)  # 8x5
    x = b.inverted_residual(x, 64, 4, 1, se=True)
    x = b.conv_bn(x, 128, 1, 1, "relu6")
    return b.model(inp, b.gap_head(x, classes, dropout=0.2), "v9")
