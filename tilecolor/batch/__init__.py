"""The batch layer: a folder planned (inputs, safety, fingerprints, resume), run a few images
at a time, and reported.

Imports core, io, model and engine.
"""
