"""Python-level locks with their own clocks, for `--py-locks` (observer/tests/locks.rs).

usage: py_locks.py lock ROUNDS    four threads take one threading.Lock in turn, ROUNDS each, and
                                  hold it 2 ms (time.sleep inside: the GIL is released meanwhile)
       py_locks.py rlock N        one thread takes an RLock N times, re-entering it once each time
       py_locks.py queue N        a producer puts N items on a queue.Queue, 2 ms apart; a consumer
                                  gets them (it waits in get(), on the queue's Condition)
Prints "ready", starts on a line on stdin, and prints per thread
`tid=… acq=… hold_ns=… wait_ns=…` (perf_counter_ns around acquire() and from its return to
release(); for the queue consumer, wait_ns is its time inside get()).
"""
import queue
import sys
import threading
import time

clock = time.perf_counter_ns
# Printed by the main thread at the end: two threads printing at once can mix their lines.
results = []


def report(acq, hold, wait):
    results.append(f"tid={threading.get_native_id()} acq={acq} hold_ns={hold} wait_ns={wait}")


def lock_case(rounds):
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker():
        hold = wait = 0
        start.wait()
        for _ in range(rounds):
            t0 = clock()
            lock.acquire()
            t1 = clock()
            time.sleep(0.002)
            t2 = clock()
            lock.release()
            wait += t1 - t0
            hold += t2 - t1
            # Let another thread in: without a pause the releaser can take it again at once.
            time.sleep(0.0002)
        report(rounds, hold, wait)

    threads = [threading.Thread(target=worker, name=f"locker-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def rlock_case(n):
    r = threading.RLock()
    hold = wait = 0
    for _ in range(n):
        t0 = clock()
        r.acquire()
        t1 = clock()
        with r:  # re-entry: no new acquisition of the underlying lock
            pass
        t2 = clock()
        r.release()
        wait += t1 - t0
        hold += t2 - t1
    report(n, hold, wait)


def queue_case(n):
    q = queue.Queue()

    def producer():
        for i in range(n):
            time.sleep(0.002)
            q.put(i)
        report(n, 0, 0)

    def consumer():
        waited = 0
        for _ in range(n):
            t0 = clock()
            q.get()
            waited += clock() - t0
        report(n, 0, waited)

    threads = [threading.Thread(target=producer, name="producer"),
               threading.Thread(target=consumer, name="consumer")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    case, n = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()
    {"lock": lock_case, "rlock": rlock_case, "queue": queue_case}[case](n)
    for line in results:
        print(line, flush=True)


main()
