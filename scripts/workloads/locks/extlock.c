/* A CPython C extension with its own global mutex: extlock.hold(ms) releases the GIL, takes
 * ext_lock, spins `ms` milliseconds, lets go, and takes the GIL back. */
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
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&ext_lock);
    unsigned long long end = mono_ns() + (unsigned long long)(ms * 1e6);
    while (mono_ns() < end) {
    }
    pthread_mutex_unlock(&ext_lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"hold", hold, METH_VARARGS, "hold ext_lock for ms"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "extlock", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_extlock(void) { return PyModule_Create(&module); }
