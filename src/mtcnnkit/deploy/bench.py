"""Runtime benchmark: per-net latency at fixed input sizes and whole-pipeline latency, for
several backends and thread counts in one run, torch as the baseline.

Runs are interleaved (every configuration once per round) so that machine noise hits all
configurations alike; figures are min / mean / max (and median) over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..detect.detector import Detector

# Inputs the cascade sends on a 640x480 photo at min face 20: PNet's largest pyramid level,
# and one RNet / ONet call at the cascade's default batch sizes.
NET_INPUTS = {"pnet": (1, 3, 289, 385), "rnet": (128, 3, 24, 24), "onet": (32, 3, 48, 48)}


@dataclass(frozen=True)
class Timing:
    min: float
    mean: float
    median: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        ms = [s * 1000 for s in seconds]
        return cls(min(ms), statistics.fmean(ms), statistics.median(ms), max(ms))


@dataclass(frozen=True)
class BenchRow:
    backend: str
    threads: int
    what: str  # "pnet", "rnet", "onet" or "pipeline"
    timing: Timing


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_benchmark(backends: Sequence[str], threads: Sequence[int], image: np.ndarray,
                  weights: str = "default", min_face_size: float = 20.0, repeats: int = 30,
                  warmup: int = 3, progress: Callable[[int, int], None] | None = None
                  ) -> list[BenchRow]:
    """Benchmark every (backend, threads) pair; returns one row per net and pipeline."""
    configs = [(b, t) for t in threads for b in backends]
    detectors = {c: Detector(weights=weights, backend=c[0], num_threads=c[1],
                             min_face_size=min_face_size) for c in configs}
    inputs = {name: torch.randn(shape, generator=torch.Generator().manual_seed(0))
              for name, shape in NET_INPUTS.items()}
    jobs: dict[tuple[str, int, str], Callable[[], object]] = {}
    for (backend, n), detector in detectors.items():
        for name, x in inputs.items():
            net = getattr(detector.nets, name)
            jobs[(backend, n, name)] = (lambda net=net, x=x: net(x))
        jobs[(backend, n, "pipeline")] = (lambda d=detector: d.detect(image))
    samples: dict[tuple[str, int, str], list[float]] = {k: [] for k in jobs}
    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            for round_ in range(warmup + repeats):
                for key, job in jobs.items():
                    torch.set_num_threads(key[1])
                    seconds = _timed(job)
                    if round_ >= warmup:
                        samples[key].append(seconds)
                if progress is not None:
                    progress(round_ + 1, warmup + repeats)
    finally:
        torch.set_num_threads(before)
    return [BenchRow(b, n, what, Timing.of(s)) for (b, n, what), s in samples.items()]


def markdown(rows: Sequence[BenchRow], baseline: str = "torch") -> str:
    """Tables per thread count: per-net min/avg/max and pipeline latency, ratio to torch."""
    lines = []
    for n in sorted({r.threads for r in rows}):
        subset = [r for r in rows if r.threads == n]
        base = {r.what: r.timing.mean for r in subset if r.backend == baseline}
        lines += [f"### {n} thread{'s' if n > 1 else ''}", "",
                  "| backend | stage | input | min ms | avg ms | max ms | speed vs "
                  f"{baseline} (avg) |", "|---|---|---|---:|---:|---:|---:|"]
        for r in sorted(subset, key=lambda r: (_order(r.what), r.backend)):
            shape = ("640×480 photo" if r.what == "pipeline"
                     else "×".join(str(v) for v in NET_INPUTS[r.what]))
            ratio = base.get(r.what, float("nan")) / r.timing.mean
            lines.append(f"| {r.backend} | {r.what} | {shape} | {r.timing.min:.2f} | "
                         f"{r.timing.mean:.2f} | {r.timing.max:.2f} | {ratio:.2f}× |")
        lines.append("")
    return "\n".join(lines)


def _order(what: str) -> int:
    return ["pnet", "rnet", "onet", "pipeline"].index(what)
