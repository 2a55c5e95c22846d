#!/usr/bin/env python3
"""CPU time per completed task of a benchmark run, by process, over its steady part.

    cpu-per-task.py [--interval S] (--records DIR | --times FILE) -- COMMAND...

Runs COMMAND and reads every process's CPU time (user + system, all threads, from /proc) every
S seconds (default 0.5). When it ends, the task completion times say which part of the run was
steady: from the first snapshot at least one interval after the first completion to the last
snapshot before the last one. Over that window it prints one line,

    cpu: tasks N window W s busy C cores us/task total T driver D bridge B engine E kernel K outside O

the CPU time per task completed in the window (µs) of: the taps driver (`taps`), the engines'
bridge (`python -m taps_bridge`) or the plain engine client (`taps_bridge.native_bench`), every
other process started by COMMAND or after it (the engine: schedulers, workers, raylet...; a
process that left its parent, as Parsl's worker pools do, is known by its start time), the kernel's
threads (writeback, interrupts' work), and for scale the rest of the machine ("outside", not in the
total). On a machine whose cores the run keeps busy, the total is what decides its rate.

Completion times: `--records DIR`, the `received_time` of every non-warm-up record of the newest
run under DIR/runs (a taps run); `--times FILE`, one epoch time per line (native_bench writes
them when TAPS_BENCH_TIMES names a file). Linux only. A process that ends inside the window loses
its CPU time since the last snapshot; a short window (under about 2 s) reads coarse.
"""

import glob
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def snapshot():
    """pid -> (parent pid, CPU seconds, start time, whether a kernel thread). Reads the command
    line of each process the first time it is seen (:func:`cmdline`), while it runs."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1 : s.rindex(")")]
        f = s[s.rindex(")") + 2 :].split()
        ppid, flags = int(f[1]), int(f[6])
        # comm is not an identity: Ray renames its workers with each task (ray::IDLE, ray::taps_task).
        pid, start = int(p), int(f[19])
        out[pid] = (ppid, (int(f[11]) + int(f[12])) / TICK, start, bool(flags & 0x00200000))  # PF_KTHREAD
        cmdline(pid, start, comm)
    return out


def cmdline(pid, start, comm, cache={}):
    """(comm when first seen, command line) of the process ``pid`` started at ``start``."""
    if (pid, start) not in cache:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cache[(pid, start)] = (comm, f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            cache[(pid, start)] = (comm, "")
    return cache[(pid, start)]


def kind(pid, info, root, snap):
    """The class of process ``pid`` in snapshot ``snap``."""
    ppid, _, start, kthread = info
    if kthread:
        return "kernel"
    p, seen = pid, 0
    while p and p != root and seen < 64:
        p, seen = snap.get(p, (0,))[0], seen + 1
    # Not below COMMAND but started after it: a process the run started that left its parent
    # (Parsl's local provider starts its worker pools through a shell that exits).
    if p != root and start < snap.get(root, (0, 0, float("inf")))[2]:
        return "outside"
    comm, line = cmdline(pid, start, None)
    if comm == "taps":
        return "driver"
    if "taps_bridge.native_bench" in line or "-m taps_bridge" in line:
        return "bridge"
    return "engine"


def main():
    args = sys.argv[1:]
    interval, records, times = 0.5, None, None
    usage = "usage: cpu-per-task.py [--interval S] (--records DIR | --times FILE) -- COMMAND..."
    while args and args[0] != "--":
        if args[0] not in ("--interval", "--records", "--times"):
            sys.exit("cpu-per-task: unknown option %s (allowed: --interval, --records, --times); %s" % (args[0], usage))
        if len(args) < 2:
            sys.exit("cpu-per-task: %s needs a value; %s" % (args[0], usage))
        opt, val, args = args[0], args[1], args[2:]
        if opt == "--interval":
            try:
                interval = float(val)
            except ValueError:
                interval = -1
            if not interval > 0:
                sys.exit("cpu-per-task: --interval %s: a number of seconds above 0" % val)
        elif opt == "--records":
            records = val
        else:
            times = val
    if not args[1:] or (records is None) == (times is None):
        sys.exit(usage)
    proc = subprocess.Popen(args[1:])
    snaps = []
    while True:
        snaps.append((time.time(), snapshot()))
        try:
            proc.wait(timeout=interval)
            break
        except subprocess.TimeoutExpired:
            pass
    if records is not None:
        runs = sorted(glob.glob(os.path.join(records, "runs", "*", "tasks.jsonl")), key=os.path.getmtime)
        if not runs:
            sys.exit("cpu-per-task: no records under %s/runs" % records)
        with open(runs[-1]) as f:
            done = sorted(r["received_time"] for r in map(json.loads, f) if r.get("name") != "warmup")
    else:
        with open(times) as f:
            done = sorted(float(x) for x in f if x.strip())
    if len(done) < 2:
        sys.exit("cpu-per-task: fewer than two completions")
    inside = [s for s in snaps if done[0] + interval <= s[0] <= done[-1]]
    if len(inside) < 2:
        print("cpu: run too short for a window (%.2f s of completions, interval %.2f s)" % (done[-1] - done[0], interval))
        return proc.returncode
    (ta, a), (tb, b) = inside[0], inside[-1]
    n = sum(1 for t in done if ta < t <= tb)
    total = dict.fromkeys(["driver", "bridge", "engine", "kernel", "outside"], 0.0)
    for pid, info in b.items():
        before = a.get(pid)
        since = before[1] if before and before[2] == info[2] else 0.0
        total[kind(pid, info, proc.pid, b)] += info[1] - since
    used = sum(v for k, v in total.items() if k != "outside")
    us = {k: v / n * 1e6 for k, v in total.items()}
    print(
        "cpu: tasks %d window %.2f s busy %.2f cores us/task total %.0f driver %.0f bridge %.0f engine %.0f kernel %.0f outside %.0f"
        % (n, tb - ta, used / (tb - ta), used / n * 1e6, us["driver"], us["bridge"], us["engine"], us["kernel"], us["outside"])
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
