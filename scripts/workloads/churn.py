"""Short-lived threads, one after another: what a service that starts a thread per task does to
an observer running for days.

Waits until GO_FILE exists (so the observer sees every thread), then runs N_THREADS threads, two
at a time, each sleeping 1 ms SLEEPS times (each sleep gives the GIL up and takes it back), then
idles until killed.
Usage: churn.py GO_FILE [N_THREADS] [SLEEPS]
"""
import os
import sys
import threading
import time

go = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
sleeps = int(sys.argv[3]) if len(sys.argv) > 3 else 5


def work():
    for _ in range(sleeps):
        time.sleep(0.001)


print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
for _ in range(n // 2):
    pair = [threading.Thread(target=work) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
while True:
    time.sleep(1)
