"""The contended mix: one CPU-bound thread and N I/O threads (sleep 1 ms in a loop).

Prints "ready", waits for a line on stdin, runs SECONDS, prints one JSON line with the throughput
of each: the CPU thread's loop iterations per second and each I/O thread's sleeps per second.
Usage: mix.py SECONDS [N_IO_THREADS]
"""
import json
import sys
import threading
import time

seconds = float(sys.argv[1])
n_io = int(sys.argv[2]) if len(sys.argv) > 2 else 2
go = threading.Event()
counts = {}


def cpu(name):
    go.wait()
    deadline = time.monotonic() + seconds
    n = 0
    x = 0
    while time.monotonic() < deadline:
        for i in range(1000):
            x += i * i
        n += 1
    counts[name] = n / seconds


def io(name):
    go.wait()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        time.sleep(0.001)
        n += 1
    counts[name] = n / seconds


threads = [threading.Thread(target=cpu, args=("cpu",), name="cpu")]
threads += [threading.Thread(target=io, args=("io-%d" % i,), name="io-%d" % i) for i in range(1, n_io + 1)]
for t in threads:
    t.start()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for t in threads:
    t.join()
io_rates = [v for k, v in counts.items() if k.startswith("io-")]
print(json.dumps({"cpu_kloops_per_s": counts["cpu"], "io_per_s": sum(io_rates) / len(io_rates)}), flush=True)
