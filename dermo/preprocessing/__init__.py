"""Per-image preprocessing: field of view (fov), hair removal (hair), Shades-of-Gray colour constancy (color),
unsupervised lesion segmentation (segment) chained by image.preprocess_image; the on-disk cache run over all
cores (cache) and its command line (cli, `dermo preprocess`).

May import dermo.data and dermo.errors.
"""
