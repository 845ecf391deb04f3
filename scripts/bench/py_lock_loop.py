"""Tight Python-lock microbenchmark: uncontended `with lock:` on one threading.Lock, flat out, on
one thread: what `--py-locks`' probes cost per acquire/release pair.

Prints "ready", waits for a line on stdin, loops for SECONDS, then prints one JSON line: pairs
and ns per pair. The line "armed" (instead of "go") first waits until an observer has put its
breakpoints (int3, 0xCC) into both sem_trywait and sem_post (the calls behind threading.Lock on
CPython 3.6–3.12), as this process sees its own copy of libc's text, and reports how long that
took (attach_ms).
Usage: py_lock_loop.py SECONDS
"""
import ctypes
import json
import sys
import threading
import time

seconds = float(sys.argv[1])
libc = ctypes.CDLL(None)
functions = [ctypes.cast(f, ctypes.c_void_p).value for f in (libc.sem_trywait, libc.sem_post)]


def original():
    with open("/proc/self/mem", "rb") as mem:
        out = []
        for f in functions:
            mem.seek(f)
            out.append(mem.read(16))
        return out


def armed(orig):
    # A probe site is an instruction start in the first bytes: a byte that became 0xCC.
    for now, was in zip(original(), orig):
        if not any(n == 0xCC and w != 0xCC for n, w in zip(now, was)):
            return False
    return True


orig = original()
print("ready", flush=True)
line = sys.stdin.readline().strip()
attach_ms = None
if line == "armed":
    t0 = time.perf_counter()
    while not armed(orig):
        if time.perf_counter() - t0 > 30:
            sys.exit("py_lock_loop: no breakpoints in sem_trywait and sem_post within 30 s")
        time.sleep(0.001)
    attach_ms = (time.perf_counter() - t0) * 1e3
lock = threading.Lock()
n = 0
start = time.perf_counter_ns()
deadline = start + int(seconds * 1e9)
while True:
    for _ in range(1000):
        with lock:
            pass
    n += 1000
    now = time.perf_counter_ns()
    if now >= deadline:
        break
out = {"pairs": n, "ns_per_pair": (now - start) / n}
if attach_ms is not None:
    out["attach_ms"] = attach_ms
print(json.dumps(out), flush=True)
