"""v4: Conv20-Pool-Conv36-Pool-Conv48-Conv56, GAP, Dense64 (about 51k weights for 10 classes)."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v4", "Conv20-Pool-Conv36-Pool-Conv48-Conv56, GAP, Dense64")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.pool(b.conv_bn(inp, 20))
    x = b.pool(b.conv_bn(x, 36))
    x = b.conv_bn(x, 48)
    x = b.conv_bn(x, 56)
    return b.model(inp, b.gap_head(x, classes, hidden=(64,), dropout=0.2), "v4")
