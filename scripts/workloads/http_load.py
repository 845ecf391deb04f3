"""Drives an HTTP server with N threads of GET requests until killed; prints `ready` once the
first request succeeded. Usage: http_load.py PORT [THREADS].

One connection per request: a pre-fork server's workers share the listening socket, so new
connections spread over every worker, a replaced one included (keep-alive would leave the
connections where they first landed)."""
import http.client
import sys
import threading
import time

port = int(sys.argv[1])
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ready = threading.Event()


def loop():
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            conn.getresponse().read()
            ready.set()
        except (OSError, http.client.HTTPException):
            # A worker that was killed or recycled drops its connection: try again.
            time.sleep(0.01)
        finally:
            conn.close()


for _ in range(threads):
    threading.Thread(target=loop, daemon=True).start()
ready.wait()
print("ready", flush=True)
while True:
    time.sleep(3600)
