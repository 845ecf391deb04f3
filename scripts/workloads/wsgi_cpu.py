"""A tiny WSGI app that does pure-Python CPU work per request (about a millisecond), for the
fleet tests: under `gunicorn -w 3 --threads 4 wsgi_cpu:app` every worker's threads take turns
on that worker's GIL. No framework, so gunicorn is the only package the test installs."""


def app(environ, start_response):
    total = 0
    for i in range(20000):
        total += i * i
    body = b"%d\n" % total
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
