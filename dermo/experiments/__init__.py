"""Side experiments of the deck: the cumulative loss-term ablation (ablation) and the classical-ML baseline
with hand-crafted features (ml, features).

May import dermo.training and below.
"""
