"""dermo: CAM-regularised EfficientNet classifiers for dermoscopic images.

Data flows one way: scripts (train.py, evaluate.py, ensemble.py) -> training / evaluation ->
pipeline -> data (datasets, preprocess, augment) and model (backbones, network, losses) -> leaves
(imageio, lesion, cam).
"""

__version__ = "0.1.0"
