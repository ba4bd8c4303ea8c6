"""Training: seeds, strategy, model and optimizer (setup), extra Keras callbacks (callbacks), crash-safe
checkpoints for --resume (checkpoint) and one whole run writing the run folder (trainer).

May import dermo.evaluation and below.
"""
