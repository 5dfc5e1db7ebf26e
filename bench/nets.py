"""Per-net CPU timings behind the claims in ``mtcnnkit.detect.cpu_runtime``.

What is measured
----------------
Everything runs at ``--threads`` torch threads (default 1, ``torch.set_num_threads``) under
``torch.inference_mode()``, with the original MTCNN weights (``load_weights("reference")``) and
seeded random-normal inputs (``--seed``). Workloads are sized like the whole pipeline on the
640x480 six-face photo used by ``bench/latency.py`` (~515 crops into RNet, ~59 into ONet).

* **RNet / ONet batch size and layout**: RNet on 515 crops of 24x24 and ONet on 59 crops of
  48x48, fed in chunks of ``b`` crops for b in 8, 16, 32, 64, 128, all, plus the cascade's
  default batch (``CascadeConfig.rnet_batch`` / ``onet_batch``, marked), for two variants:
  the plain modules in
  channels-last (``net.to(memory_format=torch.channels_last)``, channels-last input) and
  ``cpu_runtime.for_cpu(net)`` (channels-last input, as the cascade's crop sampler produces).
  Also shown: each call's largest activation (what the batch size bounds).
* **PNet layout**: on 1x3x289x385 (the largest pyramid level of a 640x480 image at min face
  20) and on the full pyramid (the 10 levels ``int(480*s+1) x int(640*s+1)`` for
  ``s = 0.6 * 0.709**k`` while ``480*s >= 12``, one call per level): plain NCHW (NCHW input),
  plain channels-last (channels-last input) and ``for_cpu`` (channels-last input, as the
  cascade's pyramid sampler produces). A small extra table times PNet's two 1x1 heads alone
  on the level-0 feature map (plain NCHW, plain channels-last, ``for_cpu``'s matmul heads).
* **Max-pool**: ``F.max_pool2d(..., ceil_mode=True)`` vs ``cpu_runtime.max_pool_separable``
  on the channels-last maps the nets pool (PNet level 0, RNet at its preferred batch of 66,
  ONet at 13). Their outputs must be exactly equal (``torch.equal``); otherwise the script
  exits with status 1 before timing anything.
* ``for_cpu`` outputs are compared with the plain NCHW modules' (largest absolute difference).

Method: ``--warmup`` untimed rounds, then ``--repeats`` rounds; within each round every variant
and batch size of a table runs once, interleaved (A, B, A, B, ...), so that noise on a shared
machine hits all of them alike. Reported: median, p10 and p90 in ms.

How to run
----------
    python bench/nets.py --repeats 30 --markdown /tmp/nets.md

The Markdown report goes to stdout (and to ``--markdown FILE``), progress to stderr. About a
minute at the defaults on one thread; use ``--repeats 3`` for a quick check.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common import cpu_model, positive
from mtcnnkit.detect import cpu_runtime
from mtcnnkit.detect.cascade import CascadeConfig
from mtcnnkit.detect.cpu_runtime import for_cpu, max_pool_separable
from mtcnnkit.weights import load_weights

RNET_CROPS = 515  # crops entering RNet on the 640x480 six-face photo
ONET_CROPS = 59  # crops entering ONet
BATCHES = (8, 16, 32, 64, 128)
IMAGE_HW = (480, 640)
MIN_FACE = 20
SCALE_FACTOR = 0.709
PNET_WINDOW = 12
CL = torch.channels_last

# (label, shape N x C x H x W, kernel, stride): the maps the nets max-pool
POOL_CASES: tuple[tuple[str, tuple[int, int, int, int], int, int], ...] = (
    ("PNet pool 1, level 0", (1, 10, 287, 383), 2, 2),
    ("RNet pool 1", (66, 28, 22, 22), 3, 2),
    ("RNet pool 2", (66, 48, 9, 9), 3, 2),
    ("ONet pool 1", (13, 32, 46, 46), 3, 2),
    ("ONet pool 2", (13, 64, 21, 21), 3, 2),
    ("ONet pool 3", (13, 64, 8, 8), 2, 2),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing


@dataclass
class Case:
    """One timed variant: a callable and its run times (seconds)."""

    key: str
    fn: Callable[[], object]
    seconds: list[float] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        ms = np.asarray(self.seconds) * 1e3
        return {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)),
                "p90": float(np.percentile(ms, 90))}


def run_interleaved(cases: Sequence[Case], repeats: int, warmup: int, label: str
                    ) -> dict[str, dict[str, float]]:
    """Time every case once per round, in order, for ``repeats`` rounds after ``warmup``."""
    log(f"[{label}] {len(cases)} variants: {warmup} warm-up + {repeats} interleaved rounds")
    for _ in range(warmup):
        for case in cases:
            case.fn()
    for _ in range(repeats):
        for case in cases:
            t = time.perf_counter()
            case.fn()
            case.seconds.append(time.perf_counter() - t)
    return {case.key: case.stats() for case in cases}


# --------------------------------------------------------------------------- workloads


def pyramid_sizes(height: int = IMAGE_HW[0], width: int = IMAGE_HW[1],
                  min_face: float = MIN_FACE, factor: float = SCALE_FACTOR
                  ) -> list[tuple[int, int]]:
    """Level sizes (h, w) of the PNet pyramid: s = 12/min_face * factor**k while the short
    side * s >= 12."""
    sizes = []
    scale = PNET_WINDOW / min_face
    while min(height, width) * scale >= PNET_WINDOW:
        sizes.append((int(height * scale + 1), int(width * scale + 1)))
        scale *= factor
    return sizes


def largest_activation(net: nn.Module, input_size: int) -> int:
    """Floats in the largest activation of ``net.body`` for one crop."""
    largest = 0
    x = torch.zeros(1, 3, input_size, input_size)
    for layer in net.body:
        x = layer(x)
        largest = max(largest, x.numel())
    return largest


def chunked(net: nn.Module, x: Tensor, batch: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(x), batch):
            net(x[i:i + batch])
    return run


def each(net: nn.Module, inputs: list[Tensor]) -> Callable[[], None]:
    def run() -> None:
        for x in inputs:
            net(x)
    return run


def max_abs_diff(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def channels_last_copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).to(memory_format=CL)


def bench_crops(name: str, net: nn.Module, crops: int, size: int, args: argparse.Namespace,
                gen: torch.Generator) -> dict:
    x = torch.randn(crops, 3, size, size, generator=gen).contiguous(memory_format=CL)
    plain, fast = channels_last_copy(net), for_cpu(net)
    picked = getattr(CascadeConfig(), f"{name.lower()}_batch")
    batches = sorted({b for b in (*BATCHES, picked) if b < crops} | {crops})
    diff = max_abs_diff(net(x.contiguous()), fast(x))
    cases = []
    for b in batches:
        cases += [Case(f"cl/{b}", chunked(plain, x, b)), Case(f"fast/{b}", chunked(fast, x, b))]
    stats = run_interleaved(cases, args.repeats, args.warmup, name)
    return {"name": name, "crops": crops, "size": size, "picked": picked, "batches": batches,
            "largest": largest_activation(net, size), "stats": stats, "diff": diff}


def bench_pnet(net: nn.Module, args: argparse.Namespace, gen: torch.Generator) -> dict:
    sizes = pyramid_sizes()
    levels = [torch.randn(1, 3, h, w, generator=gen) for h, w in sizes]
    levels_cl = [x.contiguous(memory_format=CL) for x in levels]
    plain_cl, fast = channels_last_copy(net), for_cpu(net)
    diff = max_abs_diff(net(levels[0]), fast(levels_cl[0]))
    cases = [Case("level0/nchw", each(net, levels[:1])),
             Case("level0/cl", each(plain_cl, levels_cl[:1])),
             Case("level0/fast", each(fast, levels_cl[:1])),
             Case("pyramid/nchw", each(net, levels)),
             Case("pyramid/cl", each(plain_cl, levels_cl)),
             Case("pyramid/fast", each(fast, levels_cl))]
    stats = run_interleaved(cases, args.repeats, args.warmup, "PNet")

    # the two 1x1 heads alone, on level 0's feature map
    features = net.body(levels[0])
    features_cl = features.contiguous(memory_format=CL)

    def heads(module: nn.Module, f: Tensor) -> Callable[[], None]:
        return lambda: (module.cls(f), module.box(f))

    head_cases = [Case("nchw", heads(net, features)), Case("cl", heads(plain_cl, features_cl)),
                  Case("fast", heads(fast, features_cl))]
    head_diff = max_abs_diff((net.cls(features), net.box(features)),
                             (fast.cls(features_cl), fast.box(features_cl)))
    head_stats = run_interleaved(head_cases, args.repeats, args.warmup, "PNet heads")
    return {"sizes": sizes, "stats": stats, "diff": diff, "heads": head_stats,
            "head_shape": tuple(features.shape), "head_diff": head_diff}


def bench_pool(args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    rows, cases = [], []
    for label, shape, k, s in POOL_CASES:
        x = torch.randn(*shape, generator=gen).contiguous(memory_format=CL)
        ref = F.max_pool2d(x, k, s, ceil_mode=True)
        sep = max_pool_separable(x, k, s)
        if not torch.equal(ref, sep):
            raise SystemExit(f"{label} {shape} k{k} s{s}: max_pool_separable differs from "
                             f"F.max_pool2d(ceil_mode=True) (shapes {tuple(sep.shape)} vs "
                             f"{tuple(ref.shape)}); not timing")
        rows.append({"label": label, "shape": shape, "k": k, "s": s, "numel": x.numel(),
                     "out": tuple(ref.shape)})
        cases += [Case(f"{label}/f", lambda x=x, k=k, s=s: F.max_pool2d(x, k, s, ceil_mode=True)),
                  Case(f"{label}/sep", lambda x=x, k=k, s=s: max_pool_separable(x, k, s))]
    log("[max-pool] all outputs exactly equal (torch.equal)")
    stats = run_interleaved(cases, args.repeats, args.warmup, "max-pool")
    for row in rows:
        row["f"], row["sep"] = stats[f"{row['label']}/f"], stats[f"{row['label']}/sep"]
    return rows


# --------------------------------------------------------------------------- report


def ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(s: dict[str, float]) -> str:
    return f"{ms(s['median'])} ({ms(s['p10'])}–{ms(s['p90'])})"


def crops_table(r: dict) -> list[str]:
    st, picked, crops = r["stats"], r["picked"], r["crops"]
    ref = st[f"fast/{picked}"]["median"]
    out = [f"### {r['name']}: {crops} crops of {r['size']}×{r['size']}", "",
           f"the cascade's default batch is **{picked}** (largest activation "
           f"{r['largest']:,} floats per crop). "
           f"Total ms for all {crops} crops, median (p10–p90). Batch sizes of {crops} or more "
           f"are one call, the *all* row. `for_cpu` vs plain NCHW outputs: max |Δ| "
           f"{r['diff']:.1e}.", "",
           "| batch | calls | largest activation MB | channels-last ms | for_cpu ms "
           f"| channels-last ÷ for_cpu | for_cpu ÷ for_cpu at {picked} |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for b in r["batches"]:
        cl, fast = st[f"cl/{b}"], st[f"fast/{b}"]
        label = f"all ({b})" if b == crops else str(b)
        if b == picked:
            label = f"**{b}** ← cascade default"
        calls = -(-crops // b)
        mb = r["largest"] * b * 4 / 1e6
        out.append(f"| {label} | {calls} | {mb:.1f} | {cell(cl)} | {cell(fast)} "
                   f"| {cl['median'] / fast['median']:.2f}× | {fast['median'] / ref:.2f}× |")
    return out


def pnet_tables(p: dict) -> list[str]:
    st = p["stats"]
    sizes = ", ".join(f"{h}×{w}" for h, w in p["sizes"])
    out = ["### PNet: layouts", "",
           f"Full pyramid: {len(p['sizes'])} levels of a 640×480 image at min face {MIN_FACE}, "
           f"factor {SCALE_FACTOR} ({sizes}), one call each. ms median (p10–p90). `for_cpu` "
           f"gets channels-last input, as the cascade's sampler produces it, so its time "
           f"includes the conversion to NCHW for the thin first layer. `for_cpu` vs plain NCHW "
           f"outputs (level 0): max |Δ| {p['diff']:.1e}.", "",
           "| input | plain NCHW ms | plain channels-last ms | for_cpu ms "
           "| NCHW ÷ for_cpu | channels-last ÷ for_cpu |", "|---|---:|---:|---:|---:|---:|"]
    h0, w0 = p["sizes"][0]
    for key, label in (("level0", f"level 0, 1×3×{h0}×{w0}"), ("pyramid", "full pyramid")):
        nchw, cl, fast = st[f"{key}/nchw"], st[f"{key}/cl"], st[f"{key}/fast"]
        out.append(f"| {label} | {cell(nchw)} | {cell(cl)} | {cell(fast)} "
                   f"| {nchw['median'] / fast['median']:.2f}× "
                   f"| {cl['median'] / fast['median']:.2f}× |")
    hs = p["heads"]
    shape = "×".join(map(str, p["head_shape"]))
    out += ["", f"PNet's two 1×1 heads (`cls`, `box`) alone on level 0's feature map {shape}; "
            f"`for_cpu` runs them as one matrix product each over the channels-last pixels "
            f"(max |Δ| {p['head_diff']:.1e}):", "",
            "| plain NCHW ms | plain channels-last ms | for_cpu ms | NCHW ÷ for_cpu "
            "| channels-last ÷ for_cpu |", "|---:|---:|---:|---:|---:|",
            f"| {cell(hs['nchw'])} | {cell(hs['cl'])} | {cell(hs['fast'])} "
            f"| {hs['nchw']['median'] / hs['fast']['median']:.2f}× "
            f"| {hs['cl']['median'] / hs['fast']['median']:.2f}× |"]
    return out


def pool_table(rows: list[dict]) -> list[str]:
    limit = cpu_runtime.SEPARABLE_POOL_MAX_ELEMENTS
    out = ["### Max-pool (ceil mode), channels-last input", "",
           "`F.max_pool2d(x, k, s, ceil_mode=True)` vs `cpu_runtime.max_pool_separable(x, k, s)`"
           f"; outputs checked exactly equal (`torch.equal`) for every shape. `for_cpu` uses the "
           f"separable pool up to {limit:,} input elements. ms median (p10–p90).", "",
           "| map | input N×C×H×W | k / s | input MB | for_cpu uses | max_pool2d ms "
           "| separable ms | speed-up | equal |", "|---|---|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        uses = "separable" if r["numel"] <= limit else "max_pool2d"
        out.append(f"| {r['label']} | {'×'.join(map(str, r['shape']))} | {r['k']} / {r['s']} "
                   f"| {r['numel'] * 4 / 1e6:.2f} | {uses} | {cell(r['f'])} | {cell(r['sep'])} "
                   f"| {r['f']['median'] / r['sep']['median']:.2f}× | yes |")
    return out


def markdown(meta: dict, crops: list[dict], pnet: dict, pool: list[dict]) -> str:
    threads = meta["threads"]
    out = ["## CPU nets: layouts, batch sizes, max-pool (`bench/nets.py`)", "",
           f"- Machine: {meta['cpu']}, {meta['cores']} logical cores (`os.cpu_count()`), load "
           f"average at start {meta['loadavg']}; torch {meta['torch']}, Python {meta['python']}",
           f"- Date: {meta['date']}; {threads} torch thread{'s' if threads > 1 else ''}; "
           f"total run {meta['elapsed']:.0f} s",
           f"- Command: `{meta['command']}`",
           "- Weights: original MTCNN (`load_weights(\"reference\")`); inputs random normal "
           f"(seed {meta['seed']}); everything under `torch.inference_mode()`",
           f"- Method: {meta['warmup']} warm-up rounds, then {meta['repeats']} rounds; in each "
           "round every variant of a table runs once, interleaved (A, B, A, B, …); median, p10 "
           "and p90 in ms", ""]
    for r in crops:
        out += crops_table(r) + [""]
    out += pnet_tables(pnet) + [""]
    out += pool_table(pool)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CPU timings of the MTCNN nets behind mtcnnkit.detect.cpu_runtime: RNet/ONet "
                    "batch sizes and layouts, PNet layouts, separable vs torch max-pool.",
        epilog="example: python bench/nets.py --repeats 30 --markdown /tmp/nets.md")
    p.add_argument("--threads", type=positive, default=1,
                   help="torch thread count (default: 1)")
    p.add_argument("--repeats", type=positive, default=30,
                   help="timed interleaved rounds per table (default: 30)")
    p.add_argument("--warmup", type=non_negative, default=3,
                   help="untimed rounds per table before timing (default: 3)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the random inputs (default: 0)")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="also write the Markdown report to FILE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    meta = {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "loadavg": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
        "seed": args.seed,
    }
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    nets = load_weights("reference")
    with torch.inference_mode():
        pool = bench_pool(args, gen)  # first: it exits early if the pools disagree
        crops = [bench_crops("RNet", nets.rnet, RNET_CROPS, 24, args, gen),
                 bench_crops("ONet", nets.onet, ONET_CROPS, 48, args, gen)]
        pnet = bench_pnet(nets.pnet, args, gen)
    meta["elapsed"] = time.perf_counter() - start
    report = markdown(meta, crops, pnet, pool)
    print(report, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
