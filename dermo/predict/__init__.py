"""A saved classifier applied to images: safe loading (loading), test-time augmentation (tta), class activation
maps as numpy (cams) and one-pass prediction with per-image CAM scores (predictions).

May import dermo.pipeline, dermo.model (layer names), dermo.run, dermo.metrics and below.
"""
