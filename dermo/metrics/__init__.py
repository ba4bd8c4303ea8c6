"""What evaluation measures: pure numpy / scikit-learn functions of labels, probabilities, CAMs and masks
(no TensorFlow), so every number can be recomputed from a predictions.csv. A leaf: imports nothing of dermo.

    classification.py  accuracy, balanced accuracy, kappa, AUC, F1, confusion matrix, the text report
    lesion_focus.py    lesion focus (overall, per image, per class), CAM-mask Pearson r, max |CAM|
    ensemble.py        soft voting
"""
from dermo.metrics.classification import auc_score, classification_metrics, confusion_text, fmt, report_text
from dermo.metrics.ensemble import soft_vote
from dermo.metrics.lesion_focus import (cam_mask_pearson, focus_by_class, lesion_focus, max_abs_cam,
                                       per_image_lesion_focus)

__all__ = ["auc_score", "cam_mask_pearson", "classification_metrics", "confusion_text", "focus_by_class", "fmt",
           "lesion_focus", "max_abs_cam", "per_image_lesion_focus", "report_text", "soft_vote"]
