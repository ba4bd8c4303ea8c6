"""What evaluation measures: pure numpy / scikit-learn functions of labels, probabilities, CAMs and masks
(no TensorFlow), so every number can be recomputed from a predictions.csv. A leaf: imports nothing of dermo.

    classification.py  accuracy, balanced accuracy, kappa, AUC, F1, confusion matrix, the text report
    lesion_focus.py    lesion focus (overall, per image, per class), CAM-mask Pearson r, max |CAM|
    calibration.py     ECE, Brier score, reliability bins, temperature scaling
    dermo ensemble        soft vote, geometric mean, rank averaging
"""
from dermo.metrics.classification import (auc_score, classification_metrics, confusion_text, fmt, outside_greyed,
                                          report_text)
from dermo.metrics.calibration import (apply_temperature, brier_score, calibration_metrics,
                                       expected_calibration_error, fit_temperature, reliability_bins)
from dermo.metrics.ensemble import combine, soft_vote
from dermo.metrics.lesion_focus import (cam_mask_pearson, focus_by_class, lesion_focus, max_abs_cam,
                                       per_image_lesion_focus)

__all__ = ["apply_temperature", "auc_score", "brier_score", "calibration_metrics", "cam_mask_pearson",
           "classification_metrics", "combine", "confusion_text", "expected_calibration_error", "fit_temperature",
           "fmt", "focus_by_class", "lesion_focus", "max_abs_cam", "outside_greyed", "per_image_lesion_focus",
           "reliability_bins",
           "report_text", "soft_vote"]
