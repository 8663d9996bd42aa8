"""The pure layer: geometry, blending weights, color, resampling, input planes, errors.

No files, Dask or torch here; every layer above may import it.
"""
