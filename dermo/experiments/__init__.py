"""Side experiments of the deck: the cumulative loss-term ablation (the grid and running one configuration:
grid; the single-seed table: ablation, ablation_report; several seeds and held-out test sets, e.g. the
shortcut check: replicates) and the classical-ML baseline with hand-crafted features (ml, features).

May import dermo.training and below.
"""
