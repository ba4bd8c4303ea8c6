"""Evaluation: what to evaluate (sources: a run folder or a model file), writing the eval folder (report),
figures (plots) and the segmentation head's Dice (segmentation). The numbers themselves are dermo.metrics.

May import dermo.predict and below.
"""
