"""v7: Conv28-Pool, depthwise 3x3 + 1x1 Conv48, Pool, Conv64, GAP, Dense72."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v7", "Conv28-Pool, DW3x3 + 1x1 Conv48, Pool, Conv64, GAP, Dense72")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.pool(b.conv_bn(inp, 28))
    x = b.dw_bn(x, 3)
    x = b.pool(b.conv_bn(x, 48, 1))
    x = b.conv_bn(x, 64)
    return b.model(inp, b.gap_head(x, classes, hidden=(72,), dropout=0.2), "v7")
