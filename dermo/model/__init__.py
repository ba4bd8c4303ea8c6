"""The model: EfficientNet B0–B7 and Lite0/1/2 registry and weights (backbones; Lite: lite, lite_weights,
torch_file), the flat classifier graph (network), its layer names (names), class activation maps (cam) and
CAMModel with the CAM-regularised train_step (cam_model). No builder here compiles anything.

`efficientnet_lite("lite0", weights="imagenet", include_top=True)`: the ImageNet classifier itself (RGB 0–255 in,
1000 logits out), keras.applications-style, to check the conversion or to use the backbone elsewhere.

May import dermo.losses and dermo.errors.
"""
from dermo.model.lite_weights import efficientnet_lite

__all__ = ["efficientnet_lite"]
