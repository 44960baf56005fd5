"""What a checkpoint is, and how users select steps from a suite.

A `CheckpointRef` names one set of weights: which family and model it belongs
to, its optimizer step and the tokens it had seen, and where to load it from
(a hub repo id + revision, or a local folder). Everything downstream keys its
records by `family, model, params, step, tokens_seen, flops`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

KEY_FIELDS = ("family", "model", "params", "step", "tokens_seen", "flops")


class CheckpointUnavailableError(RuntimeError):
    """A checkpoint cannot be loaded (missing folder, unreachable hub, unsafe weights)."""


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of one model.

    Attributes:
        family: model family, e.g. "pythia", "pythia-deduped", "opt", "toy".
        model: model name, unique within the family, e.g. "pythia-70m".
        params: total parameter count (embeddings included).
        step: optimizer step of this checkpoint.
        tokens_seen: training tokens consumed up to this step.
        flops: training compute; 6 * params * tokens_seen unless the suite says otherwise.
        source: hub repo id ("EleutherAI/pythia-70m") or a local folder path.
        revision: hub revision ("step1000"); None for local folders.
        is_local: whether `source` is a local folder.
    """

    family: str
    model: str
    params: int
    step: int
    tokens_seen: int
    source: str
    revision: str | None = None
    flops: float = field(default=-1.0)
    is_local: bool = False

    def __post_init__(self) -> None:
        if self.flops < 0:
            object.__setattr__(self, "flops", 6.0 * self.params * self.tokens_seen)

    @property
    def key(self) -> dict:
        """The checkpoint key columns, as a dict (the first columns of every record)."""
        return {k: getattr(self, k) for k in KEY_FIELDS}

    @property
    def label(self) -> str:
        return f"{self.family}/{self.model}@step{self.step}"


def log_spaced(available: list[int], n: int) -> list[int]:
    """Pick about `n` of the available steps, spaced evenly in log(step + 1).

    Always keeps the first and last available step; targets that land on the
    same available step are merged, so fewer than `n` may come back when the
    schedule is sparse.

    Example: available = [0, 1, 2, 4, ..., 512, 1000, 2000, ..., 143000] and
    n = 5 gives targets exp(linspace(log 1, log 143001, 5)) - 1 =
    [0, 18.4, 377, 7347, 143000] -> nearest available [0, 16, 512, 7000, 143000].
    """
    if n < 1:
        raise ValueError(f"log-spaced count must be >= 1, got {n}")
    steps = sorted(set(available))
    if n >= len(steps):
        return steps
    if n == 1:
        return [steps[-1]]
    lo, hi = math.log(steps[0] + 1), math.log(steps[-1] + 1)
    picked = []
    for i in range(n):
        target = math.exp(lo + (hi - lo) * i / (n - 1)) - 1
        nearest = min(steps, key=lambda s: (abs(math.log(s + 1) - math.log(target + 1)), s))
        if nearest not in picked:
            picked.append(nearest)
    return sorted(picked)


_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*(?:every\s+(\d+))?\s*$")
_EVERY = re.compile(r"^\s*every\s+(\d+)\s*$")
_LOG = re.compile(r"^\s*log(?:-spaced)?\s+(\d+)\s*$")

STEP_SELECTION_HELP = (
    'steps may be a list of ints, "all", "final", "log-spaced N", "every K", '
    '"A..B" or "A..B every K" (A, B inclusive), or a union of these joined by "+" '
    '("0..512 + every 5000 + final")'
)


def select_steps(available: list[int], selection: object) -> list[int]:
    """Resolve a step selection against the steps a model actually has.

    Args:
        available: the model's steps.
        selection: one of
            - a list of ints: exactly those steps (each must exist);
            - "all"; "final" (the last step);
            - "log-spaced N" (see `log_spaced`);
            - "every K": steps divisible by K (step 0 included);
            - "A..B": available steps with A <= step <= B; "A..B every K" keeps
              those divisible by K;
            - a union of string selections joined by "+": e.g. on Pythia
              "0..512 + every 5000 + final" = the 11 log-spaced early steps 0, 1,
              2, 4, ..., 512, then 5000, 10000, ..., 140000 (28 evenly spaced),
              then 143000: 40 steps.

    Raises:
        ValueError: naming the bad selection or the missing steps, and what is allowed.
    """
    steps = sorted(set(available))
    if isinstance(selection, (list, tuple)):
        bad = [s for s in selection if not isinstance(s, int) or isinstance(s, bool)]
        if bad:
            raise ValueError(f"steps list must hold ints, got {bad!r}; {STEP_SELECTION_HELP}")
        missing = sorted(set(selection) - set(steps))
        if missing:
            raise ValueError(
                f"steps {missing} are not in this model's schedule "
                f"(it has {len(steps)} steps from {steps[0]} to {steps[-1]})"
            )
        return sorted(set(selection))
    if not isinstance(selection, str):
        raise ValueError(f"bad steps selection {selection!r}; {STEP_SELECTION_HELP}")
    if "+" in selection:
        parts = selection.split("+")
        if any(not p.strip() for p in parts):
            raise ValueError(f"bad steps selection {selection!r}: empty part; "
                             f"{STEP_SELECTION_HELP}")
        return sorted(set().union(*(select_steps(steps, p) for p in parts)))
    text = selection.strip().lower()
    if text == "all":
        return steps
    if text in ("final", "last"):
        return steps[-1:]
    if m := _LOG.match(text):
        return log_spaced(steps, int(m.group(1)))
    if m := _EVERY.match(text):
        k = int(m.group(1))
        if k < 1:
            raise ValueError(f"'every K' needs K >= 1, got {k}")
        return [s for s in steps if s % k == 0]
    if m := _RANGE.match(text):
        a, b, k = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if a > b or k < 1:
            raise ValueError(f"bad range {selection!r}: need A <= B and K >= 1")
        return [s for s in steps if a <= s <= b and s % k == 0]
    raise ValueError(f"bad steps selection {selection!r}; {STEP_SELECTION_HELP}")
