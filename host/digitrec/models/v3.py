"""v3: Conv16/32/48/64 with BN, two pools, GAP, Dense64, Dense32."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v3", "Conv16/32/48/64 with BN, two pools, GAP, Dense64, Dense32")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 16)
    x = b.pool(b.conv_bn(x, 32))
    x = b.pool(b.conv_bn(x, 48))
    x = b.conv_bn(x, 64)
    return b.model(inp, b.gap_head(x, classes, hidden=(64, 32), dropout=0.2), "v3")
