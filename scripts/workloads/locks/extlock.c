/* A CPython C extension with its own global mutex: extlock.hold(ms) releases the GIL, takes
 * ext_lock, spins `ms` milliseconds, lets go, takes the GIL back, and returns how long it held
 * ext_lock by its own clock (ns). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <time.h>

pthread_mutex_t ext_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static PyObject *hold(PyObject *self, PyObject *args) {
    double ms;
    (void)self;
    if (!PyArg_ParseTuple(args, "d", &ms)) return NULL;
    unsigned long long held;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&ext_lock);
    unsigned long long start = mono_ns(), end = start + (unsigned long long)(ms * 1e6), now;
    while ((now = mono_ns()) < end) {
    }
    held = now - start;
    pthread_mutex_unlock(&ext_lock);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(held);
}

static PyMethodDef methods[] = {{"hold", hold, METH_VARARGS, "hold ext_lock for ms"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "extlock", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_extlock(void) { return PyModule_Create(&module); }
