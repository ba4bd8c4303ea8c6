"""A saved classifier applied to images: the Predictor API (predictor), safe loading (loading), test-time
augmentation (tta), class activation maps as numpy (cams) and one-pass prediction with per-image CAM scores
(predictions).

    from dermo.predict import Predictor

May import dermo.pipeline, dermo.preprocessing, dermo.model (layer names), dermo.run, dermo.metrics and below.
"""


def __getattr__(name):
    # `from dermo.predict import Predictor` without importing Keras for the package's light modules
    if name in ("Predictor", "Prediction"):
        from dermo.predict import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'dermo.predict' has no attribute {name!r}")
