"""Workers that time their own GIL holds: the oracle for gilwatch's hold numbers.

Each worker spins for SPIN_MS (holding the GIL: pure Python) then sleeps (releasing it), CYCLES
times, and measures each spin with its own clock, from just after its sleep returns (it has the
GIL) to just before its next sleep (it is about to release it). Two sleeper threads wake every
1 ms to add GIL traffic. Spins are shorter than the 5 ms switch interval, so no forced switch
interrupts them. At exit each worker prints `NAME hold_ns=TOTAL cycles=N`.

Usage: self_timed.py [CYCLES] [SPIN_MS] [SLEEP_MS]
"""
import sys
import threading
import time

cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 150
spin_s = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.003
sleep_s = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.007
clock = time.perf_counter
results = {}
done = threading.Event()


def worker(name):
    own = 0.0
    for _ in range(cycles):
        start = clock()
        while clock() - start < spin_s:
            pass
        own += clock() - start
        time.sleep(sleep_s)
    results[name] = own


def sleeper():
    while not done.is_set():
        time.sleep(0.001)


workers = [threading.Thread(target=worker, args=("worker-%d" % i,), name="worker-%d" % i) for i in (1, 2)]
sleepers = [threading.Thread(target=sleeper, name="sleeper-%d" % i) for i in (1, 2)]
for t in workers + sleepers:
    t.start()
for t in workers:
    t.join()
done.set()
for t in sleepers:
    t.join()
for name in sorted(results):
    print("%s hold_ns=%d cycles=%d" % (name, int(results[name] * 1e9), cycles), flush=True)
