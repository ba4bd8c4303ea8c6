"""Data: reading images and masks (imageio), finding a dataset's images, labels and splits (datasets, the CSV
reader manifest), augmentation (augment) and generated demo data (synthetic, synthetic_draw).

Bottom stage: imports only dermo.errors.
"""
