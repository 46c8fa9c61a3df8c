"""original_haverland: the upstream notebook's CNN (input BatchNorm, 3 conv blocks, Dense256)."""

from digitrec.models import _blocks as b
from digitrec.models import register

L = b.layers


@register("original_haverland", "input BN; Conv32/64/64 with BN, pools, dropout; Flatten; Dense256")
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = L.BatchNormalization()(inp)
    x = L.Dropout(0.2)(b.pool(b.conv_bn(x, 32)))
    x = L.Dropout(0.2)(b.pool(b.conv_bn(x, 64)))
    x = b.pool(b.conv_bn(x, 64))
    x = L.Flatten()(x)
    return b.model(inp, b.dense_head(x, classes, hidden=(256,), dropout=0.4), "original_haverland")
