"""GIL-cycle microbenchmark: one GIL release/acquire per iteration (os.write to /dev/null).

Prints "ready", waits for a line on stdin (the harness sends it once the observer's probes are
attached), loops for SECONDS, then prints one JSON line: cycles and ns per cycle.
With RATE (cycles/s), paces itself to about that rate instead of running flat out (for the
observer-side cost at a known event rate).
Usage: gil_cycle.py SECONDS [RATE]
"""
import json
import os
import sys
import time

seconds = float(sys.argv[1])
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
fd = os.open(os.devnull, os.O_WRONLY)
print("ready", flush=True)
sys.stdin.readline()
write = os.write
n = 0
start = time.perf_counter_ns()
deadline = start + int(seconds * 1e9)
if rate > 0:
    # Bursts of 1000 cycles, then sleep until the schedule catches up (the sleep's own GIL
    # release is one more cycle per burst: negligible).
    per_burst = 1000
    while True:
        for _ in range(per_burst):
            write(fd, b"x")
        n += per_burst
        now = time.perf_counter_ns()
        if now >= deadline:
            break
        ahead = start + n * 1e9 / rate - now
        if ahead > 0:
            time.sleep(ahead / 1e9)
else:
    while True:
        for _ in range(10000):
            write(fd, b"x")
        n += 10000
        if time.perf_counter_ns() >= deadline:
            break
elapsed = time.perf_counter_ns() - start
print(json.dumps({"cycles": n, "elapsed_ns": elapsed, "ns_per_cycle": elapsed / n}), flush=True)
