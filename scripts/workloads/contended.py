"""A GIL-contended program: one CPU-bound thread and I/O threads that sleep ~1 ms.

Each I/O thread, coming back from its sleep, must wait for the CPU thread to give the GIL up:
with the default switch interval (5 ms) that wait is about 5 ms, every time.
Usage: contended.py [SECONDS] [N_IO_THREADS] [SWITCH_INTERVAL_S]
"""
import sys
import threading
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
n_io = int(sys.argv[2]) if len(sys.argv) > 2 else 2
if len(sys.argv) > 3:
    sys.setswitchinterval(float(sys.argv[3]))
deadline = time.monotonic() + seconds


def cpu_hog():
    x = 0
    while time.monotonic() < deadline:
        for i in range(10000):
            x += i * i


def io_worker():
    while time.monotonic() < deadline:
        time.sleep(0.001)


threads = [threading.Thread(target=cpu_hog, name="cpu-hog")]
threads += [threading.Thread(target=io_worker, name="io-%d" % (i + 1)) for i in range(n_io)]
for t in threads:
    t.start()
print("ready", flush=True)
for t in threads:
    t.join()
