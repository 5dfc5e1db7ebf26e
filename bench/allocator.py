"""Training steps with and without `keep_freed_memory` (glibc malloc setting), same run.

What is measured
----------------
For each net, a child process runs ``--steps`` training steps (forward, squared error to
fixed random targets, backward, Adam step) on a fixed random batch of the pipeline's training
batch size (PNet 384 at 12 px, RNet 256 at 24 px, ONet 256 at 48 px) at ``--threads`` torch
threads, after 3 untimed steps. Only the allocator setting differs between the two children:
``keep`` calls ``mtcnnkit.allocator.keep_freed_memory()`` first (what the ``mtcnnkit``
command does at start-up), ``glibc`` leaves glibc's defaults. The children alternate
(keep, glibc, keep, glibc, ...) ``--repeats`` times per net, so that a change of machine
load hits both; the report gives the medians of samples/s, minor page faults per step and
kernel (system) CPU seconds per step, and the ratio keep / glibc.

Data loading is not part of the step (see bench/training.py for the trainer's own
throughput, which takes ``--malloc keep|glibc`` too).

How to run
----------
    python bench/allocator.py --out /tmp/allocator.md
    python bench/allocator.py --nets onet --steps 5 --repeats 1    # quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from common import machine_meta, positive
from mtcnnkit import nets
from mtcnnkit.allocator import keep_freed_memory

BATCHES = {"pnet": (384, 12), "rnet": (256, 24), "onet": (256, 48)}
MODES = ("keep", "glibc")


def child(net_name: str, mode: str, threads: int, steps: int) -> dict[str, float]:
    """Run in a fresh process: time ``steps`` training steps; return rates and counters."""
    applied = keep_freed_memory() if mode == "keep" else False
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = nets.create(net_name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch, size = BATCHES[net_name]
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():  # fixed random targets: the loss cannot collapse to denormals
        targets = [torch.randn_like(out) for out in net(x)]

    def step() -> None:
        loss = sum((out - t).pow(2).mean() for out, t in zip(net(x), targets, strict=True))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"applied": applied, "samples_per_s": steps * batch / seconds,
            "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "sys_s_per_step": (after.ru_stime - before.ru_stime) / steps,
            "user_s_per_step": (after.ru_utime - before.ru_utime) / steps}


def run_child(net_name: str, mode: str, threads: int, steps: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", net_name, mode, str(threads), str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def markdown(meta: dict, results: dict[str, dict[str, list[dict[str, float]]]],
             args: argparse.Namespace) -> str:
    out = ["## Allocator: training steps with and without `keep_freed_memory`", "",
           f"- Machine: {meta['cpu']}, {meta['cores']} logical cores, load average at start "
           f"{meta['loadavg']}; torch {meta['torch']}, Python {meta['python']}",
           f"- Date: {meta['date']}; mtcnnkit revision {meta['revision']}",
           f"- Command: `{meta['command']}`",
           f"- {args.threads} torch thread(s), {args.steps} timed steps per child, "
           f"{args.repeats} child(ren) per setting and net, alternating; medians", "",
           "| net | batch | setting | samples/s | page faults / step | system CPU s / step "
           "| user CPU s / step |",
           "|---|---|---|---:|---:|---:|---:|"]
    ratios = []
    for name, by_mode in results.items():
        batch, size = BATCHES[name]
        for mode in MODES:
            rows = by_mode[mode]
            out.append(f"| {name} | {batch} × {size}² | {mode} | "
                       f"{median(rows, 'samples_per_s'):,.0f} | "
                       f"{median(rows, 'faults_per_step'):,.0f} | "
                       f"{median(rows, 'sys_s_per_step'):.3f} | "
                       f"{median(rows, 'user_s_per_step'):.3f} |")
        ratio = (median(by_mode["keep"], "samples_per_s")
                 / median(by_mode["glibc"], "samples_per_s"))
        ratios.append(f"{name} {ratio:.2f}×")
    out += ["", f"Speed ratio keep / glibc: {', '.join(ratios)}.", ""]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", default="pnet,rnet,onet",
                   help="comma-separated nets (default: pnet,rnet,onet)")
    p.add_argument("--threads", type=positive, default=2,
                   help="torch threads (default: 2)")
    p.add_argument("--steps", type=positive, default=20,
                   help="timed training steps per child (default: 20)")
    p.add_argument("--repeats", type=positive, default=3,
                   help="children per setting and net (default: 3)")
    p.add_argument("--out", metavar="FILE", help="also write the Markdown report to FILE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        net_name, mode, threads, steps = argv[1:5]
        print(json.dumps(child(net_name, mode, int(threads), int(steps))))
        return 0
    args = parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BATCHES))
    if unknown:
        raise SystemExit(f"unknown net(s): {', '.join(unknown)}; choose from pnet, rnet, onet")
    meta = machine_meta()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in names:
        results[name] = {mode: [] for mode in MODES}
        for i in range(args.repeats):
            for mode in MODES:
                row = run_child(name, mode, args.threads, args.steps)
                results[name][mode].append(row)
                print(f"[{name} {mode} {i + 1}/{args.repeats}] "
                      f"{row['samples_per_s']:,.0f} samples/s, "
                      f"{row['faults_per_step']:,.0f} faults/step", file=sys.stderr)
    report = markdown(meta, results, args)
    print(report, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
