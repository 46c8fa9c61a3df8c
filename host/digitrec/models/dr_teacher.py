"""dr_teacher: PC-only distillation teacher (residual + squeeze-excitation, 48-192 channels).

Never exported for the firmware (too big); ``digitrec train --teacher`` uses it to produce
soft targets for a small student (see docs/training.md).
"""

from digitrec.models import _blocks as b
from digitrec.models import register


@register("dr_teacher", "PC-only teacher: residual SE blocks 48/96/192, GAP", pc_only=True)
def build(classes: int, channels: int):
    inp = b.inputs(channels)
    x = b.conv_bn(inp, 48)
    x = b.pool(b.residual(x, 48))
    x = b.residual(x, 96, se=True)
    x = b.pool(b.residual(x, 96, se=True))
    x = b.residual(x, 192, se=True)
    x = b.residual(x, 192, se=True)
    return b.model(inp, b.gap_head(x, classes, dropout=0.3), "dr_teacher")
