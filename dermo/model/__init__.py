"""The model: EfficientNet B0–B7 registry and weights (backbones), the flat classifier graph (network), its
layer names (names), class activation maps (cam) and CAMModel with the CAM-regularised train_step
(cam_model). No builder here compiles anything.

May import dermo.losses and dermo.errors.
"""
