"""A program that says which stop signal it got and exits with 40 + its number (SIGINT → 42,
SIGTERM → 55), while a worker thread keeps the GIL busy. With `ignore`, it ignores SIGTERM.

Usage: signalled.py [ignore]
"""
import signal
import sys
import threading
import time


def on_signal(signo, _frame):
    print("got %d" % signo, flush=True)
    sys.exit(40 + signo)


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, signal.SIG_IGN if "ignore" in sys.argv[1:] else on_signal)


def worker():
    while True:
        time.sleep(0.001)


threading.Thread(target=worker, name="worker", daemon=True).start()
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.01)
