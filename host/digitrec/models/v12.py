"""v12: residual CNN, two blocks at 48 and two at 96 channels."""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("v12", "residual CNN: stem 48, 2 blocks @48, pool, 2 blocks @96, GAP")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 48)
    x = b.residual(x, 48)
    x = b.pool(b.residual(x, 48))
    x = b.residual(x, 96)
    x = b.pool(b.residual(x, 96))
    return b.model(inp, b.gap_head(x, classes, dropout=0.3), "v12")
