"""v17: GhostNet-style ghost modules (24-48 channels)."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v17", "GhostNet ghost modules 24/32/48 with pools, GAP, Dense64")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 16)
    x = b.pool(b.ghost(x, 24))
    x = b.ghost(x, 32)
    x = b.pool(b.ghost(x, 32))
    x = b.ghost(x, 48)
    x = b.ghost(x, 48)
    return b.model(inp, b.gap_head(x, classes, hidden=(64,), dropout=0.2), "v17")
