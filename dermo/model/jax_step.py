"""CAMModel's training and validation step for the JAX backend (KERAS_BACKEND=jax), stateless.

Keras' JAX trainer hands the step all model state as values and expects it back (the Keras guide
"Customizing what happens in fit() with JAX"):

    state = (trainable, non_trainable, optimizer, metrics)  ->  train_step(model, state, data)
        -> (logs, (trainable', non_trainable', optimizer', metrics'))

The loss is dermo.model.objective.loss_terms — the very function the TensorFlow step calls — evaluated on the
outputs of `model.stateless_call`, with the classifier kernel W taken from the trainable values (so the CAM
path is differentiated, as under tf.GradientTape) and the centres from the non-trainable values.
`jax.value_and_grad` gives the gradients; `optimizer.stateless_apply` the new weights and optimizer state.
The non-trainable values that come back are those of `stateless_call` (BatchNorm moving statistics, the
Dropout seed states) with this batch's per-class feature sums and counts added to the centre accumulators;
the loss trackers and the accuracy are updated with `stateless_update_state`.

Under mixed precision the policy is mixed_bfloat16: no loss scaling (bfloat16 has float32's exponent range).
Imported only under the JAX backend (dermo.model.cam_model dispatches here); needs no TensorFlow.
"""
from __future__ import annotations

import jax
from keras import ops

from dermo.losses import center_sums, log_prob_sum
from dermo.model.names import CLASSIFIER_LAYER, INPUT_NAME
from dermo.model.objective import loss_terms, split_occluded, with_occluded


def _index(variables, target) -> int:
    return next(i for i, v in enumerate(variables) if v is target)


def _positions(model) -> dict:
    """Where the classifier kernel, the centres and the centre accumulators sit in the state lists
    (computed once per model: the variable lists do not change after compile)."""
    pos = getattr(model, "_jax_state_positions", None)
    if pos is None:
        nt = model.non_trainable_variables
        pos = {"kernel": _index(model.trainable_variables, model.get_layer(CLASSIFIER_LAYER).kernel),
               "centers": _index(nt, model.centers), "center_sum": _index(nt, model.center_sum),
               "center_count": _index(nt, model.center_count)}
        model._jax_state_positions = pos
    return pos


def _outputs(model, trainable, non_trainable, x, masks, training: bool):
    """As CAMModel._outputs, stateless: -> (outputs, non_trainable after the call)."""
    if model.loss_config.needs_occluded:            # one pass over [x, x̃]
        both, non_trainable = model.stateless_call(trainable, non_trainable,
                                                   with_occluded(x, masks, model.loss_config.outside_form),
                                                   training=training)
        return split_occluded(both, ops.shape(masks)[0]), non_trainable
    return model.stateless_call(trainable, non_trainable, x, training=training)


def _forward(model, trainable, non_trainable, x, y, masks, training: bool):
    """-> (loss, (terms, outputs, non_trainable after the call)); differentiable w.r.t. `trainable`. With RRR,
    out["input_grads"] = ∂(Σ log p)/∂image by jax.grad, itself differentiated by the step's value_and_grad."""
    pos = _positions(model)
    if model.loss_config.needs_input_gradients:
        def log_probs(image):
            inputs = {**x, INPUT_NAME: image} if isinstance(x, dict) else image
            out, nt = _outputs(model, trainable, non_trainable, inputs, masks, training)
            return log_prob_sum(out["logits"]), (out, nt)

        image = ops.cast(x[INPUT_NAME] if isinstance(x, dict) else x, "float32")
        grads, (out, non_trainable) = jax.grad(log_probs, has_aux=True)(image)
        out = {**out, "input_grads": grads}
    else:
        out, non_trainable = _outputs(model, trainable, non_trainable, x, masks, training)
    terms = loss_terms(model.loss_config, y, masks, out, trainable[pos["kernel"]],
                       non_trainable[pos["centers"]], training)
    return terms["loss"], (terms, out, non_trainable)


def _update_metrics(model, metrics_variables, terms, y, probs):
    """Stateless counterpart of CAMModel._update_trackers: trackers weighted by the batch size."""
    n = ops.cast(ops.shape(y)[0], "float32")
    logs, new, start = {}, [], 0
    for metric in model.metrics:
        values = metrics_variables[start:start + len(metric.variables)]
        start += len(metric.variables)
        if metric is model.accuracy_metric:
            values = metric.stateless_update_state(values, y, probs)
        else:
            values = metric.stateless_update_state(values, terms[metric.name], sample_weight=n)
        logs[metric.name] = metric.stateless_result(values)
        new.extend(values)
    return logs, new


def train_step(model, state, data):
    import keras

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, (y, masks), _ = keras.utils.unpack_x_y_sample_weight(data)
    grad_fn = jax.value_and_grad(lambda tv, ntv: _forward(model, tv, ntv, x, y, masks, True), has_aux=True)
    (_, (terms, out, non_trainable)), grads = grad_fn(trainable, non_trainable)
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, grads, trainable)
    pos = _positions(model)
    sums, counts = center_sums(ops.cast(out["pooled"], "float32"), ops.argmax(y, axis=-1), model.num_classes)
    non_trainable = list(non_trainable)
    non_trainable[pos["center_sum"]] = non_trainable[pos["center_sum"]] + sums
    non_trainable[pos["center_count"]] = non_trainable[pos["center_count"]] + counts
    logs, metrics_variables = _update_metrics(model, metrics_variables, terms, y, out["probs"])
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def test_step(model, state, data):
    import keras

    trainable, non_trainable, metrics_variables = state
    x, (y, masks), _ = keras.utils.unpack_x_y_sample_weight(data)
    _, (terms, out, non_trainable) = _forward(model, trainable, non_trainable, x, y, masks, False)
    logs, metrics_variables = _update_metrics(model, metrics_variables, terms, y, out["probs"])
    return logs, (trainable, non_trainable, metrics_variables)
