"""Layer names of the flat classifier graph: the one definition that training, CAM extraction, prediction and
export rely on (no keras import, so light modules can use them).

    image (B,S,S,3) -> backbone -> FEATURE_LAYER F (B,h,w,C) -> GAP_LAYER g (B,C) -> DROPOUT_LAYER
        -> CLASSIFIER_LAYER logits (B,K) -> PROBS_LAYER p (B,K)        [+ SEG_LAYER mask (B,S,S,1)]
    with metadata: META_INPUT m (B,M) -> META_DENSE (B,16) relu; FUSED_LAYER = concat(g, META_DENSE) (B,C+16)
        -> DROPOUT_LAYER -> CLASSIFIER_LAYER, whose kernel rows [:C] belong to g (the CAM) and [C:] to m.
The batch dicts of dermo.pipeline.batches use the same keys ("image", "meta").

With --cam-stride 16 the map that GAP_LAYER pools (and the CAMs are computed on) is FEATURE16_LAYER (stride 16)
instead; CAM_FEATURE_LAYERS maps the stride to that name.
"""
FEATURE_LAYER = "top_activation"      # Keras EfficientNet's last conv activation: the CAM features
FEATURE16_LAYER = "cam16_features"    # --cam-stride 16: stride-16 map fused with the upsampled last map
CAM_FEATURE_LAYERS = {32: FEATURE_LAYER, 16: FEATURE16_LAYER}
INPUT_NAME = "image"
META_INPUT = "meta"                   # the metadata input (B,M) of a model trained with --meta-columns
META_DENSE_LAYER = "meta_dense"
FUSED_LAYER = "fused"
GAP_LAYER = "gap"
DROPOUT_LAYER = "head_dropout"
CLASSIFIER_LAYER = "classifier"
PROBS_LAYER = "probs"
SEG_LAYER = "seg_mask"
