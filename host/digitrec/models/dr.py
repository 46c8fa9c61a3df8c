"""dr: digitrec's own compact family, sized per class count for the firmware budgets.

Design (why it should beat the earlier zoo at the same size):
* full 3x3 convs where the activations are large (cheap weights, most of the accuracy),
  depthwise-separable residual refinements where channels are wide (cheap, deeper);
* three max-pools to 4x3, then a *global depthwise conv* head (a learned 4x3 spatial
  weighting, as in MobileFaceNet) instead of global average pooling: the 100-class task
  is about *where* the roll sits vertically, which GAP throws away;
* one Dense to the classes; for 10 classes a Dense over the 100 *tenths*, whose softmax a
  fixed FULLY_CONNECTED sums into digits (``_blocks.digit_sum_head``): trained on tenths
  labels too, it learns where x.4/x.5 rounds, which rounded labels only hint at;
* every op is CONV_2D / DEPTHWISE_CONV_2D / MAX_POOL_2D / ADD / RESHAPE / FULLY_CONNECTED /
  SOFTMAX.

Budgets: 10 classes ~48k weights (.tflite <= 64 KB), 100 classes ~80k (<= 100 KB).
"""

from digitrec.models import _blocks as b
from digitrec.models import register

L = b.layers

# classes -> (stem, c1, c2, c3)
WIDTHS = {10: (16, 32, 40, 52), 100: (16, 32, 48, 80)}


def sep_residual(x):
    """Depthwise 3x3 + pointwise 1x1 (BN) added back onto its input, then ReLU."""
    y = b.dw_bn(x, 3, 1, None)
    y = b.conv_bn(y, int(x.shape[-1]), 1, 1, None)
    return L.ReLU()(L.Add()([x, y]))


def gdc_head(x, classes: int, dropout: float):
    """Global depthwise conv over the whole (H, W) map -> 1x1xC, then Dense + softmax
    (10 classes: the digit-sum head over tenths)."""
    x = b.dw_bn(x, (int(x.shape[1]), int(x.shape[2])), 1, None, padding="valid")
    x = L.Flatten()(x)
    if classes == 10:
        return b.digit_sum_head(x, dropout=dropout)
    return b.dense_head(x, classes, dropout=dropout)


@register("dr", "conv stem, conv+sep-residual stages, 3 pools to 4x3, global-depthwise head")
def build(classes: int, channels: int):
    stem, c1, c2, c3 = WIDTHS[classes]
    inp = b.inputs(channels)
    x = b.conv_bn(inp, stem)
    x = b.pool(b.conv_bn(x, c1))  # 16x10
    x = b.conv_bn(x, c2)
    x = b.pool(sep_residual(x))  # 8x5
    x = b.conv_bn(x, c3)
    x = b.pool(sep_residual(x))  # 4x3
    return b.model(inp, gdc_head(x, classes, 0.2), "dr")
