"""A progress bar on a terminal, plain log lines elsewhere (cron, CI, batch jobs)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("tilecolor")


class Progress:
    """Counts finished tasks. On a TTY draws a tqdm bar; otherwise logs every ~10 %."""

    def __init__(self, total: int = 0, *, desc: str = "tasks", enabled: bool = True) -> None:
        self.total, self.done, self.desc = total, 0, desc
        self._bar = None
        self._next_log = 0.1
        self._t0 = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)
        self._enabled = enabled

    def add_total(self, n: int) -> None:
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled and self.total and self.done / self.total >= self._next_log:
            log.info("%s: %d/%d done (%.0f%%, %.1f s)", self.desc, self.done, self.total,
                     100 * self.done / self.total, time.monotonic() - self._t0)
            self._next_log = (int(10 * self.done / self.total) + 1) / 10

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
