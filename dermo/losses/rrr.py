""""Right for the right reasons" (RRR; Ross, Hughes & Doshi-Velez 2017, eq. 1): penalise the input gradient of the
summed log-probabilities where the annotation says the evidence must not be (docs/method.md §5; off unless
--lambda-rrr > 0).

    L_rrr = Σ_i valid_i · Σ_d ((1 − m_id) · ∂(Σ_k log p_ik)/∂x̂_id)² / max(Σ_i valid_i, 1)

with d running over the pixels and colour channels of image i, m the lesion mask (A = 1 − m: the outside is the
"irrelevant" region of the paper's annotation matrix) and x̂ = x/255 the image in [0, 1] units (the network is fed
0..255, so ∂/∂x̂ = 255·∂/∂x). Images without a lesion (empty masks) are left out. The paper sums over images
and chooses λ so that the term is of the order of the cross-entropy; the mean over images keeps λ independent of the
batch size. Training differentiates L_rrr with respect to the weights: a gradient of a gradient (double
backpropagation), which the TensorFlow step gets from nested GradientTapes and the JAX step from jax.grad inside
jax.value_and_grad (dermo.model.cam_model, dermo.model.jax_step).
"""

from keras import ops

from dermo.losses.occlusion import lesion_valid

PIXEL_SCALE = 255.0      # model inputs are 0..255; the penalty is on gradients with respect to x/255


def log_prob_sum(logits):
    """Σ_i Σ_k log softmax(logits)_ik: the quantity whose input gradient RRR penalises. logits (B,K) -> scalar."""
    return ops.sum(ops.log_softmax(ops.cast(logits, "float32"), axis=-1))


def rrr_loss(input_grads, masks, scale=PIXEL_SCALE, min_lesion=1e-6):
    """Mean over images with a lesion of the squared input gradient outside it (module docstring).

    Args:
        input_grads: (B, S, S, C) ∂(Σ_k log p_k)/∂x of each image, x as the network is fed (0..255).
        masks: (B, S, S, 1) or (B, S, S) lesion masks in [0, 1] at the image size (no gradient).
        scale: input units per [0, 1] unit: the gradient is multiplied by it (∂/∂(x/scale) = scale·∂/∂x).
        min_lesion: images whose mask mean is at or below this (no lesion) are left out.

    Returns:
        scalar float32 tensor ≥ 0; 0 when no image has a lesion.
    """
    g = ops.cast(input_grads, "float32") * scale                                    # (B,S,S,C)
    m = ops.cast(ops.convert_to_tensor(masks), "float32")
    if len(m.shape) == 3:
        m = m[..., None]
    outside = ops.sum(ops.square((1.0 - m) * g), axis=(1, 2, 3))                      # (B,)
    valid = lesion_valid(m, min_lesion)                                             # (B,)
    return ops.sum(outside * valid) / ops.maximum(ops.sum(valid), 1.0)
