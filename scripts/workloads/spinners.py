"""N CPU-bound threads and nothing else: they must share the GIL.

Usage: spinners.py [SECONDS] [N_THREADS]
"""
import sys
import threading
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
deadline = time.monotonic() + seconds


def spin():
    x = 0
    while time.monotonic() < deadline:
        for i in range(10000):
            x += i * i


threads = [threading.Thread(target=spin, name="spinner-%d" % (i + 1)) for i in range(n)]
for t in threads:
    t.start()
print("ready", flush=True)
for t in threads:
    t.join()
