"""Layer names of the flat classifier graph: the one definition that training, CAM extraction, prediction and
export rely on (no keras import, so light modules can use them).

    image (B,S,S,3) -> backbone -> FEATURE_LAYER F (B,h,w,C) -> GAP_LAYER g (B,C) -> DROPOUT_LAYER
        -> CLASSIFIER_LAYER logits (B,K) -> PROBS_LAYER p (B,K)        [+ SEG_LAYER mask (B,S,S,1)]
"""
FEATURE_LAYER = "top_activation"      # Keras EfficientNet's last conv activation: the CAM features
INPUT_NAME = "image"
GAP_LAYER = "gap"
DROPOUT_LAYER = "head_dropout"
CLASSIFIER_LAYER = "classifier"
PROBS_LAYER = "probs"
SEG_LAYER = "seg_mask"
