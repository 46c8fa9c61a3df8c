"""v15: small residual CNN (16, 32, 56 channels), Dense48."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v15", "small residual CNN 16/32/56, GAP, Dense48")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 16)
    x = b.pool(b.residual(x, 16))
    x = b.pool(b.residual(x, 32))
    x = b.residual(x, 56)
    return b.model(inp, b.gap_head(x, classes, hidden=(48,), dropout=0.2), "v15")
