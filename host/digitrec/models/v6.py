"""v6: Conv24-Pool-Conv36-Conv48, GAP, Dense64 (the earlier project's wider 100-class variant)."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v6", "Conv24-Pool-Conv36-Conv48, GAP, Dense64")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.pool(b.conv_bn(inp, 24))
    x = b.conv_bn(x, 36)
    x = b.conv_bn(x, 48)
    return b.model(inp, b.gap_head(x, classes, hidden=(64,), dropout=0.2), "v6")
