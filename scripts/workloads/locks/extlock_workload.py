"""Two threads take a C extension's mutex (extlock.hold releases the GIL, holds ext_lock 2 ms),
a third burns CPU in Python (the GIL report has something to show). Runs until killed.
usage: extlock_workload.py DIR_WITH_EXTLOCK_SO"""
import sys
import threading

sys.path.insert(0, sys.argv[1])
import extlock  # noqa: E402


def locker():
    while True:
        extlock.hold(2.0)


def spinner():
    x = 0
    while True:
        x += 1


for name in ("locker-1", "locker-2"):
    threading.Thread(target=locker, name=name, daemon=True).start()
threading.Thread(target=spinner, name="cpu", daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
