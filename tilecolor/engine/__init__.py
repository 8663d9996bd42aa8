"""The engine: one image colorized on Dask, tile by tile, through the working store.

settings (how an image is tiled and run), store (the working store), tiles (the generator
over batches of tiles), hints (the hint field: context pass or reference), the tasks
(ingest, colorize = MAP, blend = REDUCE and compose, write) and the driver side (feeder,
graph). It takes ``predict`` as a callable; imports only core, io and model.
"""
