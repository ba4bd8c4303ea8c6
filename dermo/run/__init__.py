"""A training run as data: its options (config: TrainConfig and the dermo train options), its folder (folder:
file names, atomic writes, reading a finished run back) and its recorded train/val split (splits: split.csv).
Written by training, read by prediction and evaluation, so it sits below both.

May import dermo.data and dermo.errors.
"""
