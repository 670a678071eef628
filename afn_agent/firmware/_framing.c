/* Marlin's line framing for a batch of plain moves, compiled (issue 22).
 *
 * The compiled exchange (machine/_express.c) carries up to a burst of job lines at a time; framing
 * each in Python (the checksum is a loop over its bytes) cost more than the exchange's own work a
 * line. `frame_moves` frames the leading plain moves of a batch in one call, byte for byte what
 * framing.frame() writes (tests/unit/test_framing_c.py compares them). It is a pure function: the
 * Marlin core decides when to call it and what the numbers are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

/* The whitespace str.split() skips, in ASCII: command_word's rule for where the first word ends. */
static int is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* command_word(text) in {"G0", "G1", "G2", "G3"}: the first word is two characters, g or G and 0-3. */
static int plain_move(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n && is_space((unsigned char)s[i])) i++;
    if (n - i < 2 || (s[i] != 'G' && s[i] != 'g') || s[i + 1] < '0' || s[i + 1] > '3') return 0;
    return n - i == 2 || is_space((unsigned char)s[i + 2]);
}

/* `N<seq> <text>*<xor>\n`; the checksum covers everything before the star. */
static PyObject *frame_one(long long seq, const char *text, Py_ssize_t n) {
    char head[32];
    int h = snprintf(head, sizeof head, "N%lld ", seq);
    unsigned char cs = 0;
    for (int i = 0; i < h; i++) cs ^= (unsigned char)head[i];
    for (Py_ssize_t i = 0; i < n; i++) cs ^= (unsigned char)text[i];
    char tail[8];
    int t = snprintf(tail, sizeof tail, "*%u\n", (unsigned)cs);
    PyObject *out = PyBytes_FromStringAndSize(NULL, h + n + t);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    memcpy(at, head, (size_t)h);
    memcpy(at + h, text, (size_t)n);
    memcpy(at + h + n, tail, (size_t)t);
    return out;
}

/* frame_moves(first_seq, items) -> (wires, texts, tags): items are tuples (text, tag, ...); the
 * leading ones whose text is ASCII and a plain move (G0-G3) are framed, numbered from first_seq. */
static PyObject *frame_moves(PyObject *module, PyObject *args) {
    (void)module;
    long long seq;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "LO", &seq, &items)) return NULL;
    PyObject *it = PyObject_GetIter(items);
    if (it == NULL) return NULL;
    PyObject *wires = PyList_New(0), *texts = PyList_New(0), *tags = PyList_New(0), *item;
    if (wires == NULL || texts == NULL || tags == NULL) goto fail;
    while ((item = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(item, 0))) {
            Py_DECREF(item);
            PyErr_SetString(PyExc_TypeError, "frame_moves takes tuples (text, tag, ...)");
            goto fail;
        }
        PyObject *text = PyTuple_GET_ITEM(item, 0);
        const char *s = (const char *)PyUnicode_DATA(text);
        Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        if (!PyUnicode_IS_ASCII(text) || !plain_move(s, n)) {
            Py_DECREF(item);
            break;
        }
        PyObject *wire = frame_one(seq++, s, n);
        int bad = wire == NULL || PyList_Append(wires, wire) || PyList_Append(texts, text) ||
                  PyList_Append(tags, PyTuple_GET_ITEM(item, 1));
        Py_XDECREF(wire);
        Py_DECREF(item);
        if (bad) goto fail;
    }
    if (PyErr_Occurred()) goto fail;
    Py_DECREF(it);
    return Py_BuildValue("(NNN)", wires, texts, tags);
fail:
    Py_DECREF(it);
    Py_XDECREF(wires);
    Py_XDECREF(texts);
    Py_XDECREF(tags);
    return NULL;
}

static PyMethodDef methods[] = {
    {"frame_moves", frame_moves, METH_VARARGS,
     "frame_moves(first_seq, items) -> (wires, texts, tags): the leading plain moves, framed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_framing", NULL, -1, methods};

PyMODINIT_FUNC PyInit__framing(void) { return PyModule_Create(&module); }
