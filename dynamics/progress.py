"""Progress bars that do not flood a log file.

On a terminal, a tqdm bar. When stderr is not a terminal (a log file, a CI
pipe), tqdm's carriage-return redraws would pile up as one huge line, so we
print plain lines instead: one at the start, one each time another `every`
fraction of the total is done, and one at the end. Example: total=51,
every=0.1 -> lines at 0, 6, 11, 16, ..., 51 done (11 lines, not 51 redraws).
"""

from __future__ import annotations

import math
import sys
import time


class LineProgress:
    """A tqdm-like progress reporter (update / set_postfix_str / close) printing plain lines."""

    def __init__(self, total: int, desc: str, unit: str, every: float = 0.1, stream=None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.step = max(1, math.ceil(total * every))
        self.postfix, self.t0, self._next = "", time.perf_counter(), self.step
        self._print()

    def _print(self) -> None:
        pct = 100 * self.n / self.total if self.total else 100.0
        extra = f" [{self.postfix}]" if self.postfix else ""
        elapsed = time.perf_counter() - self.t0
        print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%, {elapsed:.0f} s)"
              f"{extra}", file=self.stream, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or self.n == self.total:
            self._print()
            self._next = (self.n // self.step + 1) * self.step

    def close(self) -> None:
        pass


class _Silent:
    def set_postfix_str(self, text: str) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True,
                 stream=None, leave: bool = True):
    """A tqdm bar on a terminal, `LineProgress` elsewhere, nothing when disabled."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _Silent()
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return LineProgress(total, desc, unit, stream=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=stream, leave=leave)

