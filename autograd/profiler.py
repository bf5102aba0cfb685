"""Where a step's time goes: each kernel's forward and backward, timed while ``profiling()`` runs.

    from autograd import profiler
    with profiler.profiling() as prof:
        _, loss = model(x, y); loss.backward()
        with profiler.section("AdamW"):
            opt.step()
    print(prof.table(steps=1, step_seconds=...))

``Function.apply`` times each forward body and ``Tensor.backward`` each backward body,
by the Function's name, when a profile is active (otherwise each costs one check of a
module variable). On a GPU every timing waits for the device first (backend.synchronize),
so the times are the kernels' own, and the profiled step runs slower than an unprofiled one.
What no kernel accounts for (the tape's walk, adding gradients, Python, batches) is the
difference between the step's wall time and the sum: ``table`` shows it as the rest.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from . import backend

__all__ = ["profiling", "section", "current", "Profile"]

_active = {"profile": None}


def current():
    """The active Profile, or None."""
    return _active["profile"]


def clock() -> float:
    backend.synchronize()
    return time.perf_counter()


class Profile:
    def __init__(self):
        self.seconds = {}      # (name, "forward" | "backward" | "") -> seconds
        self.order = []        # names in the order first seen

    def add(self, name: str, phase: str, seconds: float) -> None:
        if name not in self.order:
            self.order.append(name)
        self.seconds[(name, phase)] = self.seconds.get((name, phase), 0.0) + seconds

    def table(self, steps: int, step_seconds: float, title: str = "") -> str:
        """One row per kernel (forward, backward, total milliseconds per step and share of the
        step), one per section, the rest, and the step; ``step_seconds`` is the wall time of
        all ``steps`` steps."""
        per = 1e3 / steps
        step_ms = step_seconds * per
        rows, accounted = [], 0.0
        kernels = [n for n in self.order if (n, "") not in self.seconds]
        kernels.sort(key=lambda n: -(self.seconds.get((n, "forward"), 0) + self.seconds.get((n, "backward"), 0)))
        for name in kernels:
            fwd, bwd = self.seconds.get((name, "forward"), 0) * per, self.seconds.get((name, "backward"), 0) * per
            rows.append((name, f"{fwd:9.2f}", f"{bwd:9.2f}" if (name, "backward") in self.seconds else "", fwd + bwd))
            accounted += fwd + bwd
        for name in (n for n in self.order if (n, "") in self.seconds):
            ms = self.seconds[(name, "")] * per
            rows.append((name, "", "", ms))
            accounted += ms
        rows.append(("the rest: the tape, Python, batches", "", "", step_ms - accounted))
        lines = [title] if title else []
        lines.append(f"  {'':38} {'forward':>9} {'backward':>9} {'ms/step':>9} {'share':>7}")
        for name, fwd, bwd, total in rows:
            lines.append(f"  {name:38} {fwd:>9} {bwd:>9} {total:9.2f} {total / step_ms:7.1%}")
        lines.append(f"  {'one step':38} {'':>9} {'':>9} {step_ms:9.2f} {1:7.1%}")
        return "\n".join(lines)


@contextmanager
def profiling():
    """Time every kernel until the block ends; yields the Profile."""
    previous, _active["profile"] = _active["profile"], Profile()
    try:
        yield _active["profile"]
    finally:
        _active["profile"] = previous


@contextmanager
def section(name: str):
    """Time a block (the optimizer, clipping) as one row of the active profile, if any."""
    prof = _active["profile"]
    if prof is None:
        yield
        return
    start = clock()
    try:
        yield
    finally:
        prof.add(name, "", clock() - start)
