"""Submitting tasks as their dependencies are: the generator tasks in order, as they are
released, and every other task once the last of its dependencies was submitted."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Feeder:
    """Tasks submitted once the tasks they depend on are: the generator tasks in the order
    they were added, as :meth:`release` lets them go, and every other task as soon as the
    last of its dependencies was submitted (or at once, where it has none left to wait
    for). ``then(future)`` runs as each task is submitted (the writer's Variables)."""

    def __init__(self, client) -> None:
        self.client = client
        self.futures: dict = {}  #: key -> future, every task submitted so far
        self.maps: deque = deque()  #: generator tasks' keys, not submitted yet
        self.specs: dict = {}  #: key -> (fn, args, deps, kwargs, then, is_map)
        self.waiting: dict = {}  #: key of a task that waits -> dependencies not submitted
        self.dependents: dict = {}  #: key -> keys of the tasks waiting for it

    def add(self, key, fn, args: tuple, deps: list, kwargs: dict, *, is_map: bool = False,
            then: Callable | None = None) -> list:
        """Add a task that depends on the tasks ``deps`` (keys; their futures are passed
        after ``args``); returns what was submitted right away ((future, is_map) pairs)."""
        self.specs[key] = (fn, args, deps, kwargs, then, is_map)
        missing = {d for d in deps if d not in self.futures}
        if is_map:
            self.maps.append(key)
            if missing:  # the engine's maps depend on ingests only, submitted at once
                raise ValueError(f"generator task {key} depends on {sorted(missing)}, "
                                 f"not submitted")
            return []
        if not missing:
            return self._submit(key)
        self.waiting[key] = missing
        for d in missing:
            self.dependents.setdefault(d, []).append(key)
        return []

    def release(self, n: int | None = None) -> list:
        new = []
        while self.maps and (n is None or n > 0):
            new += self._submit(self.maps.popleft())
            n = None if n is None else n - 1
        return new

    def _submit(self, key) -> list:
        fn, args, deps, kwargs, then, is_map = self.specs.pop(key)
        future = self.client.submit(fn, *args, *(self.futures[d] for d in deps), key=key,
                                    **kwargs)
        self.futures[key] = future
        if then is not None:
            then(future)
        new = [(future, is_map)]
        for waiter in self.dependents.pop(key, ()):
            missing = self.waiting[waiter]
            missing.discard(key)
            if not missing:
                del self.waiting[waiter]
                new += self._submit(waiter)
        return new
