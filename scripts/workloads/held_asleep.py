"""Sleeps in C with the GIL held: ctypes calls libc's usleep through PyDLL, which (unlike CDLL)
keeps the GIL during the call, as a C extension that forgot to release it would. With TICKER 1
(the default) a ticker thread wants the GIL every millisecond and waits the whole sleep. Each
call is timed by the workload's own clock; before each, a 1 ms sleep releases and re-takes the
GIL, so every hold begins where gilwatch sees it. At the end it writes
`held_asleep_ns=TOTAL calls=N` to RESULT_FILE.

The ticker makes the holder drop the GIL (forced) right after each call, at its first check, and
wait to get it back, inside the timed span on a loaded machine: tests that compare the workload's
clock with the time held run without it (TICKER 0).

Usage: held_asleep.py CALLS USLEEP_US RESULT_FILE [TICKER]
"""
import ctypes
import sys
import threading
import time

calls = int(sys.argv[1])
usleep_us = int(sys.argv[2])
result = sys.argv[3]
with_ticker = (sys.argv[4] if len(sys.argv) > 4 else "1") == "1"
libc = ctypes.PyDLL(None)
libc.usleep.argtypes = [ctypes.c_uint]
done = threading.Event()


def ticker():
    while not done.is_set():
        time.sleep(0.001)


t = threading.Thread(target=ticker, name="ticker")
if with_ticker:
    t.start()
own = 0.0
for _ in range(calls):
    time.sleep(0.001)
    start = time.perf_counter()
    libc.usleep(usleep_us)
    own += time.perf_counter() - start
done.set()
if with_ticker:
    t.join()
with open(result, "w") as f:
    f.write("held_asleep_ns=%d calls=%d\n" % (int(own * 1e9), calls))
