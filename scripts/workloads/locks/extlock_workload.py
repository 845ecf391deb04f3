"""Two threads take a C extension's mutex ITER times (extlock.hold releases the GIL and holds
ext_lock 2 ms), while a third burns CPU in Python (so the GIL report has something to show).
Starts on a line on stdin; each locker prints its own hold total; exits when they are done.
usage: extlock_workload.py DIR_WITH_EXTLOCK_SO ITER"""
import sys
import threading

sys.path.insert(0, sys.argv[1])
import extlock  # noqa: E402

ITER = int(sys.argv[2])
done = threading.Event()


def locker():
    held = sum(extlock.hold(2.0) for _ in range(ITER))
    print(f"{threading.current_thread().name} acq={ITER} hold_ns={held}", flush=True)


def spinner():
    x = 0
    while not done.is_set():
        x += 1


print("ready", flush=True)
sys.stdin.readline()
lockers = [threading.Thread(target=locker, name=n) for n in ("locker-1", "locker-2")]
cpu = threading.Thread(target=spinner, name="cpu")
for t in lockers + [cpu]:
    t.start()
for t in lockers:
    t.join()
done.set()
cpu.join()
