"""The input pipeline: samples -> cached preprocessing (prepare) -> augmented batches for Keras (batches).

May import dermo.data, dermo.preprocessing and dermo.errors.
"""
