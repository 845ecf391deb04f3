"""Threads parked at known lines of known functions, and where every frame of their stacks is
as the interpreter itself says it: the truth the code symbolizer (observer/src/python/code.rs)
is checked against.

A line ending in a PARK comment is where a thread waits; the comment names the function
(qualname). Two more functions are compiled from generated source under a non-ASCII file name,
waiting 300 and 5000 lines below their `def`, so line tables need long jumps.

Prints one line per frame of each parked thread:
  F id(f_code) f_lasti f_lineno(-1 if None) co_firstlineno hex(qualname) hex(filename)
(qualname is co_qualname on 3.11+, co_name before); then, for each of their code objects, every
line range its table holds, from `co_lines()` (3.10+) or `dis.findlinestarts` (3.8–3.9):
  L id(code) start end line(-1 if None)          (start, end in bytes of bytecode)
then
  B type(code).__basicsize__   R _PyRuntime address   V sys.hexversion   READY
and waits until stdin closes.
"""
import ctypes
import dis
import sys
import threading
import time

stop = threading.Event()


class Worker:
    def park(self):
        stop.wait()  # PARK: Worker.park


def outer():
    def inner():
        stop.wait()  # PARK: outer.<locals>.inner

    inner()  # PARK: outer


def gen():
    yield stop.wait()  # PARK: gen


def drive():
    for _ in gen():  # PARK: drive
        pass


def wärme():
    stop.wait()  # PARK: wärme


GENERATED = "<generated \u2713>"
namespace = {"stop": stop}
# far300 waits 300 lines below its def, far5000 5000 lines below (after a few statements).
source = "def far300():\n    x = 1\n" + "\n" * 299 + "    stop.wait()\n"
source += "def far5000():\n" + "    y = 2\n" * 3 + "\n" * 4997 + "    return [stop.wait()][0]\n"
exec(compile(source, GENERATED, "exec"), namespace)

targets = [Worker().park, outer, drive, globals()["wärme"], namespace["far300"],
           namespace["far5000"], lambda: stop.wait()]  # PARK: <lambda>
threads = [threading.Thread(target=t, daemon=True) for t in targets]
for t in threads:
    t.start()


def snapshot():
    frames = sys._current_frames()
    out = []
    for t in threads:
        f = frames.get(t.ident)
        stack = []
        while f is not None:
            stack.append((f.f_code, f.f_lasti, f.f_lineno))
            f = f.f_back
        out.append(stack)
    return out


def parked(snap):
    # Blocked in the lock of Condition.wait, called by Event.wait.
    return all(len(s) >= 2 and s[0][0].co_name == "wait" and s[1][0].co_name == "wait"
               for s in snap)


# Parked and unmoved for 100 ms: the positions printed are the ones in memory.
stable, last = 0, None
while stable < 5:
    time.sleep(0.02)
    snap = snapshot()
    stable = stable + 1 if parked(snap) and snap == last else 0
    last = snap

for stack in last:
    for code, lasti, lineno in stack:
        qualname = getattr(code, "co_qualname", code.co_name)
        print("F %d %d %d %d %s %s" % (
            id(code), lasti, -1 if lineno is None else lineno, code.co_firstlineno,
            qualname.encode("utf-8").hex(), code.co_filename.encode("utf-8").hex()))
seen = set()
for stack in last:
    for code, _, _ in stack:
        if id(code) in seen:
            continue
        seen.add(id(code))
        if hasattr(code, "co_lines"):
            ranges = code.co_lines()
        else:
            starts = list(dis.findlinestarts(code)) + [(len(code.co_code), None)]
            ranges = [(a, b, line) for (a, line), (b, _) in zip(starts, starts[1:])]
        for start, end, line in ranges:
            print("L %d %d %d %d" % (id(code), start, end, -1 if line is None else line))
print("B %d" % type(Worker.park.__code__).__basicsize__)
print("R %d" % ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime")))
print("V %d" % sys.hexversion)
print("READY", flush=True)
sys.stdin.read()
stop.set()
