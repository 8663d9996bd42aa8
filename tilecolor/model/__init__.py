"""The generator: nets, checkpoints, the per-worker predictor, training photos.

Imports only :mod:`tilecolor.core`.
"""
