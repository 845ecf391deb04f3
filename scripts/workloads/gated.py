"""Runs another workload once it receives SIGUSR1: a test sends it when gilwatch is watching, so
a workload that ends by itself is observed from its first GIL switch to its last. Until then the
main thread blocks in one call (no GIL traffic at all while gilwatch takes its first reading).

Usage: gated.py SCRIPT [ARGS...]
"""
import os
import runpy
import signal
import sys

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
print("ready", flush=True)
signal.sigwait({signal.SIGUSR1})
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
# The test stopped reading our stdout after `ready`: the workload's own prints go nowhere.
sys.stdout = open(os.devnull, "w")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
