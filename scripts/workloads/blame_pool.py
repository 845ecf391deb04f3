"""Known culprits for gilwatch's blame: code that keeps the GIL about 30 ms among short tasks.

pool (default): a ThreadPoolExecutor of identical workers runs many short tasks (a little
  arithmetic, then a 0.5 ms sleep that releases the GIL) and, every 100 ms, one
  `serialize_report` task whose `json.dumps` of a large object keeps the GIL for about 30 ms
  (a C encoder: no bytecode runs, so no forced switch can interrupt it).
metrics: the EuroPython 2019 case: a `metrics` thread serializes a large snapshot every 40 ms
  next to four request threads doing short work and sleeping 1 ms.

The big object is sized at start by timing, so the call lasts about DUMPS_MS on this machine.
The workload times its own json.dumps calls, on the wall clock (time.perf_counter_ns: the GIL is
held for the whole call, also while the kernel has the thread off the CPU on a busy machine) and
in CPU time (time.thread_time_ns), and at exit prints one JSON line: the culprit's function,
code object address, file and the line of its json.dumps call, the calls made and their total
ns (dumps_ns wall, dumps_cpu_ns CPU).

With `gated` as the fourth argument it prints `ready` and starts only at SIGUSR1 (a test
starts it once gilwatch is attached, so that gilwatch sees every call the workload times). A
fifth argument is a file to write the JSON line to instead of stdout (a test's pipe is closed
after `ready`).

Usage: blame_pool.py [pool|metrics] [SECONDS] [DUMPS_MS] [gated|-] [OUT]
"""
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

mode = sys.argv[1] if len(sys.argv) > 1 else "pool"
run_s = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
dumps_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
own = {"calls": 0, "ns": 0, "cpu_ns": 0}
own_lock = threading.Lock()


def make_big(n):
    return [{"id": i, "name": "item-%d" % i, "tags": ["a", "b", "c"], "v": i * 0.5} for i in range(n)]


def sized_big():
    """A list whose json.dumps takes about dumps_ms of this thread's CPU time."""
    n = 2000
    while True:
        big = make_big(n)
        t0 = time.thread_time_ns()
        json.dumps(big)
        took = time.thread_time_ns() - t0
        if took >= 2_000_000:
            return make_big(max(1, int(n * dumps_ms * 1e6 / took)))
        n *= 4


BIG = sized_big()


def serialize_report():
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    text = json.dumps(BIG)  # blame: culprit
    took, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
    with own_lock:
        own["calls"] += 1
        own["ns"] += took
        own["cpu_ns"] += cpu
    return len(text)


def short_task():
    s = 0
    for i in range(300):
        s += i
    time.sleep(0.0005)
    return s


def pool():
    deadline = time.monotonic() + run_s
    next_slow = time.monotonic() + 0.1
    with ThreadPoolExecutor(max_workers=4) as ex:
        pending = []
        while time.monotonic() < deadline:
            pending = [f for f in pending if not f.done()]
            while len(pending) < 16:
                pending.append(ex.submit(short_task))
            if time.monotonic() >= next_slow:
                pending.append(ex.submit(serialize_report))
                next_slow += 0.1
            time.sleep(0.001)


def metrics():
    stop = threading.Event()

    def metrics_loop():
        while not stop.is_set():
            serialize_report()
            time.sleep(0.04)

    def request():
        while not stop.is_set():
            short_task()
            time.sleep(0.001)

    threads = [threading.Thread(target=metrics_loop, name="metrics")]
    threads += [threading.Thread(target=request, name="request-%d" % i) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(run_s)
    stop.set()
    for t in threads:
        t.join()


def culprit_line():
    with open(__file__) as f:
        for n, text in enumerate(f, 1):
            if "# blame: culprit" in text and "json.dumps" in text:
                return n
    return None


if len(sys.argv) > 4 and sys.argv[4] == "gated":
    # Blocked before any thread starts, so every thread inherits the mask and only sigwait
    # takes the signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    print("ready", flush=True)
    signal.sigwait({signal.SIGUSR1})
{"pool": pool, "metrics": metrics}[mode]()
result = json.dumps({
    "mode": mode,
    "function": "serialize_report",
    "code": id(serialize_report.__code__),
    "file": os.path.abspath(__file__),
    "line": culprit_line(),
    "calls": own["calls"],
    "dumps_ns": own["ns"],
    "dumps_cpu_ns": own["cpu_ns"],
})
if len(sys.argv) > 5:
    with open(sys.argv[5], "w") as f:
        f.write(result + "\n")
else:
    print(result, flush=True)
