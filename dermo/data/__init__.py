"""Data: reading images and masks (imageio), finding a dataset's images, labels and splits (datasets, the CSV
reader manifest), augmentation (augment) and generated data: the demo sets (synthetic, synthetic_draw), the
shortcut check with class-correlated artefacts (shortcut, artefacts), and writing such folders (generated).

Bottom stage: imports only dermo.errors.
"""
