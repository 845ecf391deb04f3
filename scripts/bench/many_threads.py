"""N threads (default 1000), each sleeping 10 ms in a loop: many threads cycling the GIL, for the
observer's own CPU and memory with a large thread table.

Prints "ready" once all threads run, then runs SECONDS (no stdin gate: the harness measures the
observer, not this program).
Usage: many_threads.py SECONDS [N]
"""
import sys
import threading
import time

seconds = float(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
threading.stack_size(256 * 1024)
deadline = time.monotonic() + seconds


def worker():
    while time.monotonic() < deadline:
        time.sleep(0.01)


threads = [threading.Thread(target=worker, name="w-%d" % i) for i in range(n)]
for t in threads:
    t.start()
print("ready", flush=True)
for t in threads:
    t.join()
