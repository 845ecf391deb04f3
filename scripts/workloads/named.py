"""contended.py with the thread names given on the command line: one CPU-bound thread and I/O
threads that sleep ~1 ms, so the I/O threads wait for the GIL and the CPU thread holds it.

The names are whatever the test wants a report to show (markup, quotes, non-ASCII), to check
that every renderer treats them as text.
Usage: named.py SECONDS CPU_NAME IO_NAME [IO_NAME...]
"""
import sys
import threading
import time

seconds = float(sys.argv[1])
cpu_name = sys.argv[2]
io_names = sys.argv[3:]
deadline = time.monotonic() + seconds


def cpu_hog():
    x = 0
    while time.monotonic() < deadline:
        for i in range(10000):
            x += i * i


def io_worker():
    while time.monotonic() < deadline:
        time.sleep(0.001)


threads = [threading.Thread(target=cpu_hog, name=cpu_name)]
threads += [threading.Thread(target=io_worker, name=n) for n in io_names]
for t in threads:
    t.start()
print("ready", flush=True)
for t in threads:
    t.join()
