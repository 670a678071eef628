/* The Marlin stream's steady state, compiled: the machine thread's turn for plain moves (issue 22).
 *
 * While a job streams plain moves and nothing else is going on, the machine thread hands a batch of
 * lines the Python core has framed to `exchange()`. It writes them as the window allows, waits for
 * whole answers and reads `ok N<n> P<p> B<b>` by the core's rule, all without the interpreter lock.
 * It returns when the batch is out, its time is up, another thread wakes it or any other line comes,
 * with the answers it read in order and what they leave (the highest line answered, the highest out of
 * the RX ring: the core's `_on_advanced_ok` rule, taken as they come); the core replays them (marlin.py
 * `express_done`), so the Python core stays the one owner of the protocol's state and this code only
 * decides when to write.
 *
 * The port waits in canonical mode meanwhile: the kernel wakes the thread when an answer's last byte
 * has come, not at its first few (editing characters, signals, echo and CR/NL mapping off; the
 * port's own settings are put back before returning). `WriteLock` is the port's write lock, taken
 * here around each write and by writers in other threads (an e-stop) through Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define RX_BYTES 4096 /* an answer longer than this is the Python core's to read */
#define MAX_DIGITS 9  /* a number longer than this in an ok: the Python core reads the line */

enum { DONE = 0, TIME = 1, WOKEN = 2, OTHER = 3, LOST = 4 };

/* ---- the write lock ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
} WriteLock;

static int lock_init(WriteLock *self, PyObject *args, PyObject *kw) {
    (void)args; (void)kw;
    return pthread_mutex_init(&self->mu, NULL) ? -1 : 0;
}

static void lock_dealloc(WriteLock *self) {
    pthread_mutex_destroy(&self->mu);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *lock_acquire(WriteLock *self, PyObject *unused) {
    (void)unused;
    if (pthread_mutex_trylock(&self->mu) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mu);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_TRUE;
}

static PyObject *lock_release(WriteLock *self, PyObject *unused) {
    (void)unused;
    pthread_mutex_unlock(&self->mu);
    Py_RETURN_NONE;
}

static PyObject *lock_exit(WriteLock *self, PyObject *args) {
    (void)args;
    pthread_mutex_unlock(&self->mu);
    Py_RETURN_FALSE;
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)lock_acquire, METH_NOARGS, "Wait for the lock (the GIL released meanwhile)."},
    {"release", (PyCFunction)lock_release, METH_NOARGS, "Let the next writer in."},
    {"__enter__", (PyCFunction)lock_acquire, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)lock_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WriteLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "afn_agent.machine._express.WriteLock",
    .tp_basicsize = sizeof(WriteLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A port's write lock, shared by Python writers and the compiled exchange.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lock_init,
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_methods = lock_methods,
};

/* ---- the exchange ---------------------------------------------------------------------------- */

typedef struct {
    long long n, p, b, sent; /* the ok's numbers, and how many batch lines were out when it came */
} Ok;

typedef struct {
    /* the window, as the Python core has it: lines [oldest, next_seq) owe an ok; of them, lines
     * [win_start, next_seq) may still be in the firmware's RX ring and count against `limit` */
    long long oldest, win_start, next_seq, base;
    long long *sizes; /* wire bytes of line `seq`, at sizes[seq - base] */
    long long bytes, limit, depth;
    long long answered, received; /* the highest line answered, and the highest out of the RX ring */
    Ok *oks;
    Py_ssize_t noks, cap;
} Window;

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* `ok N<d> P<d> B<d>` then only CR, NUL or spaces: PLAIN_OK_RE's fullmatch, as the core reads it. */
static int read_number(const char **at, const char *end, long long *out) {
    const char *s = *at;
    long long v = 0;
    int digits = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (++digits > MAX_DIGITS) return 0;
        v = v * 10 + (*s++ - '0');
    }
    *at = s;
    *out = v;
    return digits > 0;
}

static int plain_ok(const char *s, const char *end, long long *n, long long *p, long long *b) {
    if (end - s < 4 || memcmp(s, "ok N", 4) != 0) return 0;
    s += 4;
    if (!read_number(&s, end, n)) return 0;
    if (end - s < 2 || memcmp(s, " P", 2) != 0) return 0;
    s += 2;
    if (!read_number(&s, end, p)) return 0;
    if (end - s < 2 || memcmp(s, " B", 2) != 0) return 0;
    s += 2;
    if (!read_number(&s, end, b)) return 0;
    for (; s < end; s++)
        if (*s != '\r' && *s != '\0' && *s != ' ') return 0;
    return 1;
}

/* The core's `_on_advanced_ok`: the line named and all before it are done; the queue it reports
 * holds that line and the ones read after it, so those have left the RX ring. */
static int take_ok(Window *w, long long n, long long p, long long b, long long sent) {
    if (n >= w->next_seq || w->noks == w->cap) return 0;
    while (w->oldest <= n) {
        if (w->oldest >= w->win_start) {
            w->bytes -= w->sizes[w->oldest - w->base];
            w->win_start = w->oldest + 1;
        }
        w->oldest++;
    }
    long long through = n + w->depth - b - 1;
    if (n > w->answered) w->answered = n;
    long long out = through < w->next_seq - 1 ? through : w->next_seq - 1;
    if (out > w->received) w->received = out;
    while (w->win_start < w->next_seq && w->win_start <= through) {
        w->bytes -= w->sizes[w->win_start - w->base];
        w->win_start++;
    }
    w->oks[w->noks++] = (Ok){n, p, b, sent};
    return 1;
}

static int write_all(int fd, pthread_mutex_t *mu, const char *data, size_t len, double timeout,
                     long long *written) {
    double deadline = 0.0;
    int err = 0;
    pthread_mutex_lock(mu);
    while (len) {
        ssize_t k = write(fd, data, len);
        if (k > 0) {
            data += k;
            len -= (size_t)k;
            *written += k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EINTR) {
            err = errno;
            break;
        }
        if (deadline == 0.0) deadline = monotonic() + timeout;
        double left = deadline - monotonic();
        if (left <= 0) {
            err = ETIMEDOUT;
            break;
        }
        struct pollfd out = {fd, POLLOUT, 0};
        poll(&out, 1, (int)(left * 1000) + 1);
    }
    pthread_mutex_unlock(mu);
    return err;
}

static int canonical(int fd, struct termios *saved) {
    struct termios t;
    if (tcgetattr(fd, saved) != 0) return 0; /* not a terminal: woken by any bytes, still correct */
    t = *saved;
    t.c_lflag = (t.c_lflag | ICANON) & ~(tcflag_t)(ECHO | ISIG | IEXTEN);
    const int off[] = {VEOF, VEOL, VEOL2, VERASE, VKILL, VWERASE, VREPRINT, VLNEXT, VINTR, VQUIT, VSUSP};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) t.c_cc[off[i]] = 0; /* _POSIX_VDISABLE */
    return tcsetattr(fd, TCSANOW, &t) == 0;
}

typedef struct {
    int why, err;
    Py_ssize_t sent;
    long long written;
    char rx[RX_BYTES];
    size_t rxlen, rest; /* rx[rest:rxlen] goes back to the Python core */
} Outcome;

/* Read what the port has; take whole plain oks; stop at the first other line. */
static void take_answers(int fd, Window *w, Outcome *o) {
    ssize_t k = read(fd, o->rx + o->rxlen, RX_BYTES - o->rxlen);
    if (k < 0) {
        if (errno != EAGAIN && errno != EINTR) o->why = LOST, o->err = errno;
        return;
    }
    if (k == 0) {
        o->why = LOST; /* a port that select found ready and that reads nothing has hung up */
        return;
    }
    o->rxlen += (size_t)k;
    size_t start = 0;
    char *nl;
    while ((nl = memchr(o->rx + start, '\n', o->rxlen - start)) != NULL) {
        long long n, p, b;
        const char *line = o->rx + start;
        if (!plain_ok(line, nl, &n, &p, &b) || !take_ok(w, n, p, b, o->sent)) {
            o->why = OTHER;
            break;
        }
        start = (size_t)(nl - o->rx) + 1;
    }
    memmove(o->rx, o->rx + start, o->rxlen - start);
    o->rxlen -= start;
    if (o->rxlen == RX_BYTES) o->why = OTHER;
}

static void run(int fd, int wake_fd, pthread_mutex_t *mu, const char *const *wires, const Py_ssize_t *lens,
                Py_ssize_t nwires, Window *w, double seconds, double write_timeout, Outcome *o) {
    double deadline = monotonic() + seconds;
    char out[8192];
    o->why = -1;
    while (o->why < 0) {
        size_t outlen = 0;
        while (o->sent < nwires) {
            Py_ssize_t size = lens[o->sent];
            if (w->win_start != w->next_seq && w->bytes + size > w->limit) break;
            if (outlen + (size_t)size > sizeof out) break;
            memcpy(out + outlen, wires[o->sent], (size_t)size);
            outlen += (size_t)size;
            w->sizes[w->next_seq - w->base] = size;
            w->bytes += size;
            w->next_seq++;
            o->sent++;
        }
        if (outlen && (o->err = write_all(fd, mu, out, outlen, write_timeout, &o->written)) != 0) {
            o->why = LOST;
            break;
        }
        if (o->sent == nwires) {
            o->why = DONE;
            break;
        }
        double left = deadline - monotonic();
        if (left <= 0) {
            o->why = TIME;
            break;
        }
        struct pollfd fds[2] = {{fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
        int ready = poll(fds, 2, (int)(left * 1000) + 1);
        if (ready < 0 && errno != EINTR) {
            o->why = LOST, o->err = errno;
        } else if (ready > 0 && fds[1].revents) {
            char drain[4096];
            while (read(wake_fd, drain, sizeof drain) > 0) {
            }
            o->why = WOKEN;
        } else if (ready > 0 && fds[0].revents) {
            take_answers(fd, w, o);
        }
    }
}

static PyObject *exchange(PyObject *module, PyObject *args) {
    (void)module;
    int fd, wake_fd;
    WriteLock *lock;
    PyObject *wires, *sizes;
    long long oldest, win_start, next_seq, limit, depth;
    double seconds, write_timeout;
    if (!PyArg_ParseTuple(args, "iiO!O!LLLO!LLdd", &fd, &wake_fd, &WriteLockType, &lock, &PyList_Type,
                          &wires, &oldest, &win_start, &next_seq, &PyList_Type, &sizes, &limit, &depth,
                          &seconds, &write_timeout))
        return NULL;
    Py_ssize_t nwires = PyList_GET_SIZE(wires), nsizes = PyList_GET_SIZE(sizes);
    if (oldest > win_start || win_start + nsizes != next_seq) {
        PyErr_SetString(PyExc_ValueError, "the window's lines are not consecutive");
        return NULL;
    }
    const char **data = PyMem_Calloc((size_t)nwires + 1, sizeof *data);
    Py_ssize_t *lens = PyMem_Calloc((size_t)nwires + 1, sizeof *lens);
    long long *line_bytes = PyMem_Calloc((size_t)(nwires + nsizes) + 1, sizeof *line_bytes);
    Py_ssize_t cap = 2 * (nwires + (next_seq - oldest)) + 16;
    Ok *oks = PyMem_Calloc((size_t)cap, sizeof *oks);
    Outcome *o = PyMem_Calloc(1, sizeof *o);
    PyObject *result = NULL;
    if (!data || !lens || !line_bytes || !oks || !o) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nwires; i++) {
        PyObject *item = PyList_GET_ITEM(wires, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "wires must be bytes");
            goto done;
        }
        data[i] = PyBytes_AS_STRING(item);
        lens[i] = PyBytes_GET_SIZE(item);
    }
    Window w = {oldest, win_start, next_seq, win_start, line_bytes, 0, limit, depth, -1, -1, oks, 0, cap};
    for (Py_ssize_t i = 0; i < nsizes; i++) {
        line_bytes[i] = PyLong_AsLongLong(PyList_GET_ITEM(sizes, i));
        w.bytes += line_bytes[i];
    }
    if (PyErr_Occurred()) goto done;
    struct termios saved;
    Py_INCREF(wires); /* the bytes read below without the lock stay alive */
    Py_BEGIN_ALLOW_THREADS
    int restore = canonical(fd, &saved);
    run(fd, wake_fd, &lock->mu, data, lens, nwires, &w, seconds, write_timeout, o);
    if (restore) tcsetattr(fd, TCSANOW, &saved);
    Py_END_ALLOW_THREADS
    Py_DECREF(wires);
    PyObject *answers = PyList_New(w.noks);
    if (answers == NULL) goto done;
    for (Py_ssize_t i = 0; i < w.noks; i++) {
        PyObject *t = Py_BuildValue("(LLLL)", oks[i].n, oks[i].p, oks[i].b, oks[i].sent);
        if (t == NULL) {
            Py_DECREF(answers);
            goto done;
        }
        PyList_SET_ITEM(answers, i, t);
    }
    result = Py_BuildValue("(innNy#iLL)", o->why, o->sent, (Py_ssize_t)o->written, answers, o->rx,
                           (Py_ssize_t)o->rxlen, o->err, w.answered, w.received);
done:
    PyMem_Free(data);
    PyMem_Free(lens);
    PyMem_Free(line_bytes);
    PyMem_Free(oks);
    PyMem_Free(o);
    return result;
}

static PyMethodDef methods[] = {
    {"exchange", exchange, METH_VARARGS,
     "exchange(fd, wake_fd, lock, wires, oldest, win_start, next_seq, sizes, limit, depth, seconds, "
     "write_timeout) -> (why, sent, written, oks, rest, errno, answered, received)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_express", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__express(void) {
    if (PyType_Ready(&WriteLockType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&WriteLockType);
    if (PyModule_AddObject(m, "WriteLock", (PyObject *)&WriteLockType) < 0) {
        Py_DECREF(&WriteLockType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "DONE", DONE);
    PyModule_AddIntConstant(m, "TIME", TIME);
    PyModule_AddIntConstant(m, "WOKEN", WOKEN);
    PyModule_AddIntConstant(m, "OTHER", OTHER);
    PyModule_AddIntConstant(m, "LOST", LOST);
    return m;
}
