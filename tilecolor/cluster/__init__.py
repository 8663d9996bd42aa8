"""The cluster layer: where the Dask graph runs (embedded LocalCluster, an address, or
dask-jobqueue) and what its workers offer.

Imports core and model.
"""
