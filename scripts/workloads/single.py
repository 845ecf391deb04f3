"""One thread that computes a little and sleeps 1 ms, over and over: GIL traffic, no contention.

Usage: single.py [SECONDS]
"""
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
deadline = time.monotonic() + seconds
print("ready", flush=True)
x = 0
while time.monotonic() < deadline:
    for i in range(200):
        x += i
    time.sleep(0.001)
