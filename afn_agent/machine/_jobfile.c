/* A job file's plain lines, read in one call per burst (issue 22).
 *
 * Most lines of a sliced or CAM job are a move and nothing else: no comment, no `%`, nothing outside
 * ASCII. For those, `plain_commands` does what JobFile.read_commands does line by line in Python (cut
 * at the newline, strip blanks, count the line and its bytes) over a block of the file, and gives each
 * command with its JobPos. Any other line stops it where that line starts: the Python reader takes it
 * by the lexer's rules (comments, notes, M117, a line too long for the firmware), so those rules stay
 * in one place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* What str.strip() removes, within ASCII: a line with any other byte is the Python reader's. */
static int blank(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Nothing in the line asks for the lexer: no comment, no tape mark, nothing to decode. */
static int plain(const unsigned char *s, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c == ';' || c == '(' || c == '%' || c >= 0x80) return 0;
    }
    return 1;
}

static int is_m117(const unsigned char *s, Py_ssize_t len) {
    return len >= 4 && (s[0] == 'M' || s[0] == 'm') && memcmp(s + 1, "117", 3) == 0;
}

/* A JobPos (a NamedTuple of line and offset) made as tuple.__new__ makes it, without its __new__. */
static PyObject *job_pos(PyTypeObject *type, long long line, long long offset) {
    PyObject *pos = type->tp_alloc(type, 2);
    if (pos == NULL) return NULL;
    PyObject *a = PyLong_FromLongLong(line), *b = PyLong_FromLongLong(offset);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_DECREF(pos);
        return NULL;
    }
    PyTuple_SET_ITEM(pos, 0, a);
    PyTuple_SET_ITEM(pos, 1, b);
    return pos;
}

static PyObject *command(const unsigned char *s, Py_ssize_t len, PyTypeObject *type, long long line,
                         long long offset, PyObject *no_note) {
    PyObject *text = PyUnicode_New(len, 127);
    if (text == NULL) return NULL;
    memcpy(PyUnicode_DATA(text), s, (size_t)len);
    PyObject *pos = job_pos(type, line, offset);
    if (pos == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *item = PyTuple_New(3);
    if (item == NULL) {
        Py_DECREF(text);
        Py_DECREF(pos);
        return NULL;
    }
    Py_INCREF(no_note);
    PyTuple_SET_ITEM(item, 0, text);
    PyTuple_SET_ITEM(item, 1, pos);
    PyTuple_SET_ITEM(item, 2, no_note);
    return item;
}

static PyObject *plain_commands(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *block;
    PyTypeObject *type;
    Py_ssize_t pos, n, max_line;
    long long line_no, offset;
    if (!PyArg_ParseTuple(args, "O!nnnLLO!", &PyBytes_Type, &block, &pos, &n, &max_line, &line_no, &offset,
                          &PyType_Type, &type))
        return NULL;
    if (!PyType_IsSubtype(type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the position type must be a tuple's (a NamedTuple)");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(block);
    Py_ssize_t size = PyBytes_GET_SIZE(block);
    if (pos < 0 || pos > size) {
        PyErr_SetString(PyExc_ValueError, "position outside the block");
        return NULL;
    }
    PyObject *items = PyList_New(0), *no_note = PyUnicode_New(0, 127);
    if (items == NULL || no_note == NULL) goto fail;
    while (PyList_GET_SIZE(items) < n) {
        const unsigned char *start = s + pos;
        const unsigned char *nl = memchr(start, '\n', (size_t)(size - pos));
        if (nl == NULL) break; /* the rest of the line is not read yet */
        Py_ssize_t raw = nl - start + 1;
        if (!plain(start, raw - 1)) break;
        Py_ssize_t a = 0, b = raw - 1;
        while (a < b && blank(start[a])) a++;
        while (b > a && blank(start[b - 1])) b--;
        if (b > a && (b - a > max_line || is_m117(start + a, b - a))) break;
        line_no += 1;
        offset += raw;
        pos += raw;
        if (b == a) continue; /* a blank line */
        PyObject *item = command(start + a, b - a, type, line_no, offset, no_note);
        if (item == NULL || PyList_Append(items, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    Py_DECREF(no_note);
    return Py_BuildValue("(NnLL)", items, pos, line_no, offset);
fail:
    Py_XDECREF(items);
    Py_XDECREF(no_note);
    return NULL;
}

static PyMethodDef methods[] = {
    {"plain_commands", plain_commands, METH_VARARGS,
     "plain_commands(block, pos, n, max_line, line_no, offset, pos_type) -> (commands, pos, line_no, "
     "offset)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jobfile", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jobfile(void) { return PyModule_Create(&module); }
