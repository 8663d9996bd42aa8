"""The Dask graph of one image, built on the driver: ingest -> MAP (one task per block) ->
REDUCE (one per output chunk) -> write.

Tasks exchange data through the Zarr working store and return only small metadata, so
nothing image-sized passes through Dask's memory or the driver. With stride = tile and
blocks a multiple of it there is no REDUCE; for a TIFF output (blocks of whole TIFF tiles)
a chunk its own block finishes has no blend task, and for a TIFF input no ingest task.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tilecolor.core.planes import takes_hint
from tilecolor.core.tiling import (
    contributions,
)
from tilecolor.engine.blend import compose_chunk, finished_by_map, reduce_chunk
from tilecolor.engine.colorize import map_block
from tilecolor.engine.feeder import Feeder
from tilecolor.engine.hints import ContextPass, HintField, run_context, run_reference
from tilecolor.engine.ingest import ingest_region
from tilecolor.engine.settings import Hint, Settings
from tilecolor.engine.store import STAGES, WorkStore
from tilecolor.engine.tiles import Predict
from tilecolor.engine.write import PendingRows, write_output
from tilecolor.io.read import ImageInfo


@dataclass
class ImageGraph:
    """The futures of one image (only the stages not already done). ``reduces`` ends with
    the compose tasks when chroma is rendered at reduced scale: waiting on all of it means
    the output array is complete.

    Submitted with ``defer=True``, the generator tasks go to the scheduler only as
    :meth:`feed` releases them, in block order, each with the tasks that depend on it
    alone; ``maps`` and ``reduces`` grow as they are submitted, and :attr:`held` says how
    many generator tasks are still to come.
    """

    ingests: list
    maps: list
    reduces: list
    final: object
    variables: list = field(default_factory=list)  #: what the writer waits on
    feeder: Feeder | None = field(default=None, repr=False)

    @property
    def futures(self) -> list:
        return [*self.ingests, *self.maps, *self.reduces,
                *([self.final] if self.final is not None else [])]

    @property
    def held(self) -> int:
        """Generator tasks not yet submitted (:meth:`feed` submits them)."""
        return len(self.feeder.maps) if self.feeder is not None else 0

    @property
    def unsubmitted(self) -> int:
        """Tasks not yet submitted: the held generator tasks and those waiting for them."""
        return len(self.feeder.specs) if self.feeder is not None else 0

    def feed(self, n: int | None = None) -> list:
        """Submit the next ``n`` generator tasks (all of them when None) and the tasks that
        were waiting only for them; returns the new futures."""
        if self.feeder is None:
            return []
        new = self.feeder.release(n)
        self.maps += [f for f, is_map in new if is_map]
        self.reduces += [f for f, is_map in new if not is_map]
        return [f for f, _ in new]

    def release(self, client) -> None:
        """Drop the scheduler's Variables for this image (call once it is finished)."""
        from distributed import Variable

        self.feeder = None  # a failed image submits nothing more
        for name in self.variables:
            Variable(name, client=client).delete()
        self.variables = []


def _submit_hint(feeder: Feeder, store: WorkStore, settings: Settings, predict: Predict,
                 hint: Hint | None, ingests: list, token: str, options: dict
                 ) -> tuple[tuple | None, HintField | None]:
    """Submit the task that makes the image's hint field, unless the store has it; returns
    its key (None when there is none to wait for) and the field."""
    if hint is None or isinstance(hint, HintField):
        return None, hint
    if store.blocks_done("hint").all():  # a finished context pass is never recomputed
        return None, hint.field
    if isinstance(hint, ContextPass):  # after every ingest, on a generator worker
        key = (f"context-{token}",)
        feeder.add(key, run_context, (store, hint, settings.tile, settings.stride,
                                      settings.blend, settings.batch_size, settings.planes,
                                      predict), ingests,
                   dict(options, resources=settings.resources))
    else:
        key = (f"hint-{token}",)
        feeder.add(key, run_reference, (store, hint), [], options)
    return key, hint.field


def submit_image(client, info: ImageInfo, store: WorkStore, settings: Settings,
                 predict: Predict, *, dest: Path | None = None, fmt: str | None = None,
                 retries: int = 1, rank: int = 0, defer: bool = False,
                 hint: Hint | None = None) -> ImageGraph:
    """Submit ingest, map, reduce and (if ``dest``) write tasks for one image.

    ``hint`` (for a generator whose ``settings.planes`` take one): a :class:`ContextPass`
    (ingest also builds the context copy; one ``context`` task after ingest makes the field),
    a :class:`Reference` (one ``hint`` task stores its chroma) or a :class:`HintField`
    already in the store. Every map task waits for the field; a field already made (the
    store's ``hint_done``) is not made again. None: hint planes 0.

    Returns the futures; the caller waits on them. Keys carry readable prefixes
    (``ingest``, ``colorize_block``, ``blend_chunk``, ``write_output``) so the dashboard's
    task stream shows what runs. Blocks run in row-major order (the streaming writer
    follows them row by row), and the images of a batch in ``rank`` order.

    ``defer=True`` submits no generator task yet: :meth:`ImageGraph.feed` does, a few at a
    time (:func:`tilecolor.batch.run.run_jobs` keeps each worker's generator slot and the
    next task busy). Dask hands a task that needs a resource to a worker the moment it is
    submitted, and moves it later only from a worker running more tasks than it has
    threads: submitted all at once, the blocks would be dealt out evenly, and the worker
    that also runs the writer, or sits on the slower core, would still have blocks to go
    when the others ran out.
    """
    plan = settings.plan(info.height, info.width)
    small, k = settings.render_plan(info.height, info.width), settings.factor
    ny, nx = plan.grid
    first = -rank * (ny * nx + 1)

    def order(r: int, c: int) -> int:  # Dask runs higher priorities first
        return first - (r * nx + c)

    token = uuid.uuid4().hex[:12]
    blend = settings.blend
    ingested, done, reduced, composed = (store.blocks_done(stage) for stage in STAGES)
    # chunks their own block finishes (and encodes) in its map task: no blend task, and
    # for a TIFF input no ingest task either (the map task reads its region itself)
    by_map = {(r, c) for r in range(ny) for c in range(nx)
              if finished_by_map(store.modes, small, r, c)}
    feeder = Feeder(client)
    variables: dict[tuple[int, int], str] = {}  # chunk -> the writer's Variable for it
    if dest is not None:
        from distributed import Variable

    def then(r: int, c: int) -> Callable | None:
        """What to do once the task that completes chunk (r, c) is submitted."""
        if dest is None:
            return None
        variables[(r, c)] = f"tilecolor-{token}-{r}-{c}"
        return lambda future: Variable(variables[(r, c)], client=client).set(future)

    if not takes_hint(settings.planes):
        hint = None
    context = hint if isinstance(hint, ContextPass) else None
    if context is not None:  # every block adds to the context copy: all are ingested
        by_map_read = set()
    else:
        by_map_read = by_map
    ingest: dict[tuple[int, int], tuple] = {}  # block -> its ingest task's key
    ingest_futures = []
    if info.format == "tiff":  # read by region, block by block, in parallel
        for r, c in np.argwhere(~ingested).tolist():
            if (r, c) in by_map_read:
                continue
            ingest[(r, c)] = key = (f"ingest-{token}", r, c)
            ingest_futures += [f for f, _ in feeder.add(
                key, ingest_region, (info, store, plan, r, c, context), [],
                dict(retries=retries, priority=order(r, c)))]
    elif not ingested.all():
        key = (f"ingest-{token}", 0, 0)
        ingest_futures += [f for f, _ in feeder.add(
            key, ingest_region, (info, store, plan, None, None, context), [],
            dict(retries=retries, priority=first))]
        ingest = {(r, c): key for r in range(ny) for c in range(nx)}
    hint_key, field = _submit_hint(feeder, store, settings, predict, hint,
                                   list(dict.fromkeys(ingest.values())), token,
                                   dict(retries=retries, priority=first + 1))
    if hint_key is not None:
        ingest_futures.append(feeder.futures[hint_key])
    maps = {}
    for r in range(ny):
        for c in range(nx):
            if done[r, c]:
                continue  # a finished block is a durable fact: never recomputed
            # the footprint may reach into the next chunk row/column (< tile pixels)
            down = (r, r + 1) if small.rows[r].fp_stop > small.rows[r].stop else (r,)
            right = (c, c + 1) if small.cols[c].fp_stop > small.cols[c].stop else (c,)
            deps = list(dict.fromkeys(ingest[(rr, cc)] for rr in down for cc in right
                                      if (rr, cc) in ingest))
            if hint_key is not None:
                deps.append(hint_key)
            direct = info.format == "tiff" and (r, c) in by_map_read and not ingested[r, c]
            maps[(r, c)] = key = (f"colorize_block-{token}", r, c)
            feeder.add(key, map_block, (store, small, blend, r, c, settings.batch_size,
                                        predict), deps,
                       dict(source=info if direct else None, resources=settings.resources,
                            retries=retries, priority=order(r, c), planes=settings.planes,
                            hint=None if field is None else field.on_grid(k)),
                       is_map=True, then=then(r, c) if (r, c) in by_map else None)
    reduces = {}
    submitted = []
    for r in range(ny):
        for c in range(nx):
            if reduced[r, c] or (r, c) in by_map:
                continue
            deps = [maps[(cy.block, cx.block)] for cy in contributions(small.rows, r)
                    for cx in contributions(small.cols, c) if (cy.block, cx.block) in maps]
            if (r, c) in maps:  # also a block that owns no tile: the image ends after it
                deps.append(maps[(r, c)])
            if k == 1 and (r, c) in ingest:  # composes RGB from L
                deps.append(ingest[(r, c)])
            reduces[(r, c)] = key = (f"blend_chunk-{token}", r, c)
            submitted += feeder.add(key, reduce_chunk, (store, small, blend, r, c), deps,
                                    dict(retries=retries, priority=order(r, c)),
                                    then=then(r, c) if k == 1 else None)
    if k > 1:  # upsample the reduced chroma under the full-resolution L, chunk by chunk
        for r in range(ny):
            for c in range(nx):
                if composed[r, c]:
                    continue
                deps = [reduces[(rr, cc)] for rr in (r - 1, r, r + 1) for cc in (c - 1, c, c + 1)
                        if (rr, cc) in reduces]
                if (r, c) in ingest:
                    deps.append(ingest[(r, c)])
                submitted += feeder.add((f"compose_chunk-{token}", r, c), compose_chunk,
                                        (store, plan, small, k, r, c), deps,
                                        dict(retries=retries, priority=order(r, c)),
                                        then=then(r, c))
    final = None
    if dest is not None:
        # no dependencies: the writer starts now and waits row by row (see write_output)
        pending = PendingRows({})
        for (r, _), name in sorted(variables.items()):
            pending.rows.setdefault(r, []).append(name)
        final = client.submit(write_output, store, dest, fmt, pending, settings.block,
                              key=f"write_output-{token}", retries=retries,
                              priority=first + 1)
    graph = ImageGraph(ingest_futures, [], [f for f, _ in submitted], final,
                       list(variables.values()), feeder)
    if not defer:
        graph.feed()
    return graph
