"""EfficientNet-Lite0/1/2 (tensorflow/tpu `efficientnet/lite`) built from Keras layers, with Keras' EfficientNet
layer names, so every name dermo relies on (`top_activation`, `block6a_expand_activation`, …) means the same
thing for B0–B7 and Lite.

Lite is B0's block table with three changes for phones: no squeeze-excitation, ReLU6 instead of swish (none
after the projection conv), and the stem (32) and head (1280) channels and the first and last stage's repeats
not scaled. Padding is TensorFlow's "same" (the extra row/column at the bottom/right), BatchNorm ε 1e-3, and the
input normalisation (RGB − 127) / 128 — inside the graph, so images are fed as 0–255 floats:

    image (B,S,S,3) 0..255 -> Rescaling "lite_input_scaling" -> stem_conv 3x3/2 -> stem_bn -> relu6
        -> 7 stages of MBConv blocks "block{stage}{a,b,…}_" -> top_conv 1x1 (1280) -> top_bn -> relu6
        = "top_activation" F (B,⌈S/32⌉,⌈S/32⌉,1280)
        [include_top: -> GAP "avg_pool" -> Dropout "top_dropout" -> Dense(1000) "predictions": ImageNet logits]

MBConv "block{n}{x}_": [expand_conv 1x1 -> expand_bn -> relu6] (expand ratio 6 only) -> dwconv k×k/s -> bn
    -> relu6 "activation" -> project_conv 1x1 -> project_bn [-> drop (drop-connect) -> add, when the shape stays].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# B0's stages, no SE: (repeats, kernel, stride, expand ratio, filters in, filters out)
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM_FILTERS, HEAD_FILTERS = 32, 1280          # not width-scaled in Lite (fix_head_stem)
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99
DROP_CONNECT_RATE = 0.2
INPUT_MEAN, INPUT_STD = 127.0, 128.0           # tensorflow/tpu efficientnet_lite_builder.py MEAN_RGB / STDDEV_RGB
INPUT_LAYER = "lite_input_scaling"
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class LiteVariant:
    name: str            # "lite0"
    width: float         # width coefficient (channels of every stage but the stem and head)
    depth: float         # depth coefficient (repeats of every stage but the first and last)
    resolution: int      # native input size
    dropout: float       # dropout before the ImageNet classifier


# tensorflow/tpu efficientnet_lite_builder.py efficientnet_lite_params (Lite3/4 have no weight package)
VARIANTS = {v.name: v for v in (LiteVariant("lite0", 1.0, 1.0, 224, 0.2), LiteVariant("lite1", 1.0, 1.1, 240, 0.2),
                                LiteVariant("lite2", 1.1, 1.2, 260, 0.3))}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, rounded to a multiple of `divisor`, never more than 10 % below (TF's rule)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


@dataclass(frozen=True)
class Block:
    prefix: str          # "block2a_"
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def blocks(variant: LiteVariant) -> list[Block]:
    """Every MBConv block in order (the order of the weight files' `_blocks.N`)."""
    out = []
    last = len(STAGES) - 1
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        if 0 < stage < last:
            repeats = int(math.ceil(variant.depth * repeats))
        f_in, f_out = round_filters(f_in, variant.width), round_filters(f_out, variant.width)
        for j in range(repeats):
            out.append(Block(f"block{stage + 1}{chr(97 + j)}_", kernel, stride if j == 0 else 1, expand,
                             f_in if j == 0 else f_out, f_out))
    return out


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, conv: str, bn: str, act: str | None):
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=conv)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=bn)(x)
    return layers.ReLU(6.0, name=act)(x) if act else x


def _mbconv(x, block: Block, drop_rate: float):
    from keras import layers

    p = block.prefix
    inputs = x
    width = block.filters_in * block.expand
    if block.expand != 1:
        x = _conv_bn_relu6(x, width, 1, 1, p + "expand_conv", p + "expand_bn", p + "expand_activation")
    x = layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding="same", use_bias=False,
                               name=p + "dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=p + "bn")(x)
    x = layers.ReLU(6.0, name=p + "activation")(x)
    x = _conv_bn_relu6(x, block.filters_out, 1, 1, p + "project_conv", p + "project_bn", None)
    if block.residual:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
        x = layers.Add(name=p + "add")([x, inputs])
    return x


def build_lite(variant: LiteVariant, inputs, include_top: bool = False, classes: int = IMAGENET_CLASSES,
               drop_connect_rate: float = DROP_CONNECT_RATE):
    """The Lite network on `inputs` (B,S,S,3 floats 0..255) as a functional keras.Model whose layers join the
    caller's graph (as keras.applications' input_tensor=); random weights. include_top adds the ImageNet head
    (logits)."""
    import keras
    from keras import layers

    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name=INPUT_LAYER)(inputs)
    x = _conv_bn_relu6(x, STEM_FILTERS, 3, 2, "stem_conv", "stem_bn", "stem_activation")
    chain = blocks(variant)
    for i, block in enumerate(chain):
        x = _mbconv(x, block, drop_connect_rate * i / len(chain))
    x = _conv_bn_relu6(x, HEAD_FILTERS, 1, 1, "top_conv", "top_bn", "top_activation")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{variant.name}")
