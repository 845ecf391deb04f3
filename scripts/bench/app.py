"""A small Flask app, as an I/O-heavy web service looks to the GIL: a bit of Python work per
request (JSON encoding of a small dict) and a short blocking call that releases the GIL.

Run by the bench harness under gunicorn with threaded workers: gunicorn -w 1 --threads 8 app:app
"""
import time

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def index():
    # Stands in for a database or cache round-trip: releases the GIL for ~0.2 ms.
    time.sleep(0.0002)
    items = [{"id": i, "name": "item-%d" % i, "price": i * 1.5} for i in range(20)]
    return jsonify(items=items, total=sum(i["price"] for i in items))
