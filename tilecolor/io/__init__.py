"""Files: the formats table, header checks, readers, atomic writers (TIFF pyramid, PNG, JPEG,
OME-Zarr).

Imports only :mod:`tilecolor.core`.
"""
