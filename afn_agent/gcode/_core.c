/* The analyzer's per-line work, compiled: plain moves read and accounted without a Python object.
 *
 * One `Core` holds the numeric state of an analysis: the look-ahead planner (trapezoids, classic jerk
 * or junction deviation), where the tool is, the filament each extruder pushed, bounds and beam time.
 * `line()` takes the common case (a G0-G3 line with X Y Z E F I J R S words) from text to totals in C
 * and returns True for every other line, which the Python analyzer reads (comments, modal and
 * vendor commands) and answers by setting this object's modes or calling `extrude()` and `move()` —
 * the same code the fast path runs, so a streamed job and a quoted file are counted by one piece of code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <string.h>

#define QUEUE 64          /* blocks of look-ahead kept when fixing older ones */
#define REFRESH (4 * QUEUE) /* buffer size that triggers fixing */
#define MAX_TOOLS 64
#define BEAM 1
#define SPINDLE 2
#define POWER_SHIFT 2
#define NTAGS (((100 << POWER_SHIFT) | BEAM | SPINDLE) + 1)
#define MM_PER_ARC_SEGMENT 1.0
#define MAX_ARC_SEGMENTS 4096
#define INCH 25.4
#define PRINT 0
#define TRAVEL 1
#define RETRACT 2
#define NWORDS 9 /* X Y Z E F I J R S */

enum { WX, WY, WZ, WE, WF, WI, WJ, WR, WS };

typedef struct {
    double accel, cruise, distance, entry, max_entry, safe;
    int kind, tag, nominal_length;
} Block;

typedef struct {
    double extruded, pushed, debt, e_pos, flow;
    int seen;
} Tool;

typedef struct {
    PyObject_HEAD
    /* limits (mm, s) */
    double max_feedrate[4], max_accel[4], jerk[4];
    double accel, retract_accel, travel_accel, max_accel_extruding, max_accel_travel;
    double min_feedrate, min_travel_feedrate, junction_deviation;
    /* planner */
    Block blocks[REFRESH];
    int nblocks;
    double time_by_kind[3];
    double time_by_tag[NTAGS];
    char tag_seen[NTAGS];
    double prev_axis[4], prev_cruise, prev_safe, prev_unit[3];
    /* where the tool is and how it moves */
    double pos[3], offset[3];
    int relative, inches, grbl, motion, spindle_mode;
    double feed, feed_factor, spindle, laser_max_s;
    double rapid_mm, cut_mm, beam_mm;
    double all_lo[3], all_hi[3], work_lo[3], work_hi[3];
    /* filament */
    Tool tools[MAX_TOOLS];
    int tool, relative_e, declared;
    double rel_total, rel_pushed, rel_debt, last_delta;
    long long e_moves, abs_backsteps;
    /* lines */
    long long lines, commands;
    int policed; /* bit k: a policy rule names Gk, so those lines go to Python */
} Core;

/* Python's max(a, b) and min(a, b): the first unless the second is strictly beyond it. */
static inline double pmax(double a, double b) { return b > a ? b : a; }
static inline double pmin(double a, double b) { return b < a ? b : a; }

/* Python's float modulo: the result takes the divisor's sign. */
static double pmod(double a, double b)
{
    double m = fmod(a, b);
    if (m != 0.0) {
        if ((b < 0) != (m < 0))
            m += b;
    } else {
        m = copysign(0.0, b);
    }
    return m;
}

static void bounds_reset(double *lo, double *hi)
{
    for (int i = 0; i < 3; i++) {
        lo[i] = INFINITY;
        hi[i] = -INFINITY;
    }
}

static inline void bounds_add(double *lo, double *hi, double x, double y, double z)
{
    double p[3] = {x, y, z};
    for (int i = 0; i < 3; i++) {
        if (p[i] < lo[i])
            lo[i] = p[i];
        if (p[i] > hi[i])
            hi[i] = p[i];
    }
}

/* ---- planner ------------------------------------------------------------------------------ */

static inline double allowable(double accel, double target, double distance)
{
    return sqrt(target * target + 2.0 * accel * distance);
}

static double trapezoid(double distance, double entry, double cruise, double exit_, double accel)
{
    if (distance <= 0.0)
        return 0.0;
    if (accel <= 0.0)
        return distance / pmax(cruise, 1e-9);
    double d_acc = pmax((cruise * cruise - entry * entry) / (2.0 * accel), 0.0);
    double d_dec = pmax((cruise * cruise - exit_ * exit_) / (2.0 * accel), 0.0);
    if (d_acc + d_dec <= distance)
        return (cruise - entry) / accel + (cruise - exit_) / accel + (distance - d_acc - d_dec) / cruise;
    /* no cruise: the peak speed where acceleration meets deceleration */
    double peak = sqrt(pmax((2.0 * accel * distance + entry * entry + exit_ * exit_) / 2.0, 0.0));
    peak = pmax(pmax(peak, entry), exit_);
    return pmax((peak - entry) / accel + (peak - exit_) / accel, 0.0);
}

static void set_entry(Block *b, double vmax, double safe)
{
    double allow = allowable(b->accel, safe, b->distance);
    b->safe = safe;
    b->max_entry = vmax;
    b->entry = pmin(vmax, allow);
    b->nominal_length = b->cruise <= allow;
}

/* Marlin 1.x: the speed both segments can share at their joint without exceeding any axis jerk. */
static void junction_jerk(Core *c, Block *b, const double *axis_v)
{
    double safe = b->cruise;
    for (int a = 0; a < 4; a++)
        if (fabs(axis_v[a]) > c->jerk[a])
            safe = pmin(safe, c->jerk[a]);
    double vmax = safe;
    double prev_cruise = c->prev_cruise;
    if (c->nblocks > 0 && prev_cruise > 1e-4) {
        int prev_larger = prev_cruise > b->cruise;
        double smaller = prev_larger ? b->cruise / prev_cruise : prev_cruise / b->cruise;
        vmax = prev_larger ? b->cruise : prev_cruise;
        double v_factor = 1.0;
        int limited = 0;
        for (int a = 0; a < 4; a++) {
            double v_exit = c->prev_axis[a], v_entry = axis_v[a], j;
            if (prev_larger)
                v_exit *= smaller;
            if (limited) {
                v_exit *= v_factor;
                v_entry *= v_factor;
            }
            if (v_exit > v_entry)
                j = (v_entry > 0 || v_exit < 0) ? v_exit - v_entry : pmax(v_exit, -v_entry);
            else
                j = (v_entry < 0 || v_exit > 0) ? v_entry - v_exit : pmax(-v_exit, v_entry);
            if (j > c->jerk[a]) {
                v_factor *= c->jerk[a] / j;
                limited = 1;
            }
        }
        if (limited)
            vmax *= v_factor;
        double threshold = vmax * 0.99;
        if (c->prev_safe > threshold && safe > threshold)
            vmax = safe; /* not coasting: both ends could stop within jerk anyway */
    }
    c->prev_safe = safe;
    set_entry(b, vmax, safe);
}

/* Marlin 2 JD: the corner speed a circle of the allowed deviation could take at this angle. */
static void junction_deviation(Core *c, Block *b, const double *unit)
{
    double vmax = 0.0;
    if (unit != NULL && c->nblocks > 0 && c->prev_cruise > 1e-4) {
        double cos_theta = -(c->prev_unit[0] * unit[0] + c->prev_unit[1] * unit[1] + c->prev_unit[2] * unit[2]);
        if (cos_theta < 0.999999) {
            cos_theta = pmax(cos_theta, -0.999999);
            double sin_half = sqrt(0.5 * (1.0 - cos_theta));
            vmax = sqrt(b->accel * c->junction_deviation * sin_half / (1.0 - sin_half));
        }
        vmax = pmin(pmin(vmax, b->cruise), c->prev_cruise);
    }
    if (unit != NULL)
        memcpy(c->prev_unit, unit, sizeof c->prev_unit);
    c->prev_safe = 0.0;
    set_entry(b, vmax, vmax == 0 ? pmin(b->cruise, c->jerk[0]) : vmax);
}

/* Settle speeds over the whole buffer, then add up the time of its first `count` blocks. */
static void fix(Core *c, int count)
{
    Block *blocks = c->blocks;
    int n = c->nblocks;
    for (int i = n - 2; i >= 0; i--) { /* each block must be able to slow down to the next one's entry */
        Block *b = &blocks[i], *nxt = &blocks[i + 1];
        if (b->entry != b->max_entry) {
            if (!b->nominal_length && b->max_entry > nxt->entry)
                b->entry = pmin(b->max_entry, allowable(b->accel, nxt->entry, b->distance));
            else
                b->entry = b->max_entry;
        }
    }
    for (int i = 1; i < n; i++) { /* and to speed up from the previous one's entry */
        Block *prev = &blocks[i - 1], *b = &blocks[i];
        if (!prev->nominal_length && prev->entry < b->entry) {
            double reachable = allowable(prev->accel, prev->entry, prev->distance);
            if (reachable < b->entry)
                b->entry = reachable;
        }
    }
    for (int i = 0; i < count; i++) {
        Block *b = &blocks[i];
        double exit_ = i + 1 < n ? blocks[i + 1].entry : b->safe;
        double t = trapezoid(b->distance, b->entry, b->cruise, exit_, b->accel);
        c->time_by_kind[b->kind] += t;
        if (b->tag) {
            c->time_by_tag[b->tag] += t;
            c->tag_seen[b->tag] = 1;
        }
    }
    memmove(blocks, blocks + count, (size_t)(n - count) * sizeof(Block));
    c->nblocks = n - count;
}

static void flush(Core *c)
{
    if (c->nblocks)
        fix(c, c->nblocks);
    c->prev_cruise = 0.0;
    c->prev_safe = 0.0;
}

/* Plan one straight move at `feed` mm/s; its length (0 for nothing to do). */
static double plan(Core *c, double dx, double dy, double dz, double de, double feed, int tag)
{
    double xyz = sqrt(dx * dx + dy * dy + dz * dz);
    double distance = xyz > 1e-9 ? xyz : fabs(de);
    if (!(distance > 1e-9))
        return 0.0;
    int kind = (de > 0 && xyz > 1e-9) ? PRINT : (xyz <= 1e-9 ? RETRACT : TRAVEL);
    feed = pmax(feed, kind == TRAVEL ? c->min_travel_feedrate : c->min_feedrate);
    double inv = 1.0 / distance;
    double d[4] = {dx, dy, dz, de};
    double factor = 1.0;
    for (int a = 0; a < 4; a++) {
        double v = fabs(d[a]) * inv * feed;
        if (v > c->max_feedrate[a] && c->max_feedrate[a] > 0)
            factor = pmin(factor, c->max_feedrate[a] / v);
    }
    double cruise = pmax(feed * factor, 1e-3);
    double axis_v[4];
    for (int a = 0; a < 4; a++)
        axis_v[a] = d[a] * inv * cruise;
    double accel = kind == TRAVEL ? c->travel_accel : (kind == RETRACT ? c->retract_accel : c->accel);
    for (int a = 0; a < 4; a++)
        if (d[a] != 0.0 && c->max_accel[a] > 0 && accel * fabs(d[a]) * inv > c->max_accel[a])
            accel = c->max_accel[a] / (fabs(d[a]) * inv);
    Block *b = &c->blocks[c->nblocks];
    b->distance = distance;
    b->cruise = cruise;
    b->accel = accel;
    b->kind = kind;
    b->tag = tag;
    b->entry = b->max_entry = b->safe = 0.0;
    b->nominal_length = 0;
    if (c->junction_deviation > 0) {
        double unit[3] = {dx * inv, dy * inv, dz * inv};
        junction_deviation(c, b, xyz > 1e-9 ? unit : NULL);
    } else {
        junction_jerk(c, b, axis_v);
    }
    memcpy(c->prev_axis, axis_v, sizeof axis_v);
    c->prev_cruise = cruise;
    c->nblocks++;
    if (c->nblocks >= REFRESH)
        fix(c, c->nblocks - QUEUE);
    return distance;
}

/* ---- filament --------------------------------------------------------------------------------- */

/* (filament counted, retraction still to refill) after an E move of `delta` with `debt` owed. */
static inline void refill(double delta, double debt, double *counted, double *left)
{
    if (delta >= 0) {
        *counted = pmax(delta - debt, 0.0);
        *left = pmax(debt - delta, 0.0);
    } else {
        *counted = 0.0;
        *left = debt - delta;
    }
}

/* An E word on a move: count it for the current tool; returns what the extruder pushed (flow in). */
/* An F word (mm/min, or in/min after G20) as the feed rate in mm/s: the one place it is converted. */
static void set_feed(Core *c, double f)
{
    c->feed = f * (c->inches ? INCH : 1.0) / 60.0;
}

static double extrude(Core *c, double e)
{
    Tool *t = &c->tools[c->tool];
    double rel_counted, counted, delta;
    c->e_moves++;
    refill(e, c->rel_debt, &rel_counted, &c->rel_debt);
    c->rel_total += rel_counted;
    c->rel_pushed += rel_counted * t->flow;
    if (c->relative_e) {
        delta = e;
    } else {
        delta = e - t->e_pos;
        if (delta <= 0 && 0 < e) /* read as absolute, a positive E that extrudes nothing */
            c->abs_backsteps++;
        t->e_pos = e;
    }
    refill(delta, t->debt, &counted, &t->debt);
    t->extruded += counted;
    t->pushed += counted * t->flow;
    double share = 0.3 * (double)c->e_moves;
    int undeclared_relative = !c->declared && (double)c->abs_backsteps > share && share > 6;
    c->last_delta = undeclared_relative ? e : delta;
    return counted * t->flow;
}

/* ---- moves -------------------------------------------------------------------------------------- */

static inline double to_mm(Core *c, double v) { return c->inches ? v * INCH : v; }

/* The arc centre for the R form (negative R: the longer arc). */
static void center_from_radius(double x0, double y0, double x1, double y1, double r, int clockwise,
                               double *cx, double *cy)
{
    double dx = x1 - x0, dy = y1 - y0, d = hypot(dx, dy);
    if (d == 0 || fabs(r) < d / 2) {
        *cx = (x0 + x1) / 2;
        *cy = (y0 + y1) / 2;
        return;
    }
    double h = sqrt(pmax(r * r - d * d / 4, 0.0));
    double mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
    int sign = clockwise ? -1 : 1;
    if (r < 0)
        sign = -sign;
    *cx = mx - sign * h * dy / d;
    *cy = my + sign * h * dx / d;
}

/* Split an arc into chords of about 1 mm, as Marlin and the slicers' estimators do. */
static double arc(Core *c, int motion, const double *w, unsigned have, const double *target, double de,
                  double feed, int tag)
{
    double x0 = c->pos[0], y0 = c->pos[1], z0 = c->pos[2];
    double x1 = target[0], y1 = target[1];
    double cx, cy;
    int working = de > 0 || tag;
    if (have & (1u << WR)) {
        center_from_radius(x0, y0, x1, y1, to_mm(c, w[WR]), motion == 2, &cx, &cy);
    } else {
        cx = x0 + to_mm(c, (have & (1u << WI)) ? w[WI] : 0.0);
        cy = y0 + to_mm(c, (have & (1u << WJ)) ? w[WJ] : 0.0);
    }
    double r = hypot(x0 - cx, y0 - cy);
    double a0 = atan2(y0 - cy, x0 - cx), a1 = atan2(y1 - cy, x1 - cx);
    double sweep = a1 - a0;
    if (motion == 2 && sweep >= -1e-9)
        sweep -= 2 * M_PI;
    else if (motion == 3 && sweep <= 1e-9)
        sweep += 2 * M_PI;
    double dz = target[2] - z0;
    double length = hypot(fabs(sweep) * r, dz);
    double q = length / MM_PER_ARC_SEGMENT;
    int n = !(q < MAX_ARC_SEGMENTS) ? MAX_ARC_SEGMENTS : (q < 1 ? 1 : (int)q);
    double px = x0, py = y0, pz = z0;
    for (int k = 1; k <= n; k++) {
        double a = a0 + sweep * k / n, nx, ny;
        if (k < n) {
            nx = cx + r * cos(a);
            ny = cy + r * sin(a);
        } else {
            nx = x1;
            ny = y1;
        }
        double nz = z0 + dz * k / n;
        plan(c, nx - px, ny - py, nz - pz, de / n, feed, tag);
        px = nx;
        py = ny;
        pz = nz;
        bounds_add(c->all_lo, c->all_hi, px, py, pz);
        if (working)
            bounds_add(c->work_lo, c->work_hi, px, py, pz);
    }
    for (int quarter = 0; quarter < 4; quarter++) { /* the extreme points the chords may cut short */
        double qa = quarter * M_PI / 2;
        double off = sweep > 0 ? pmod(qa - a0, 2 * M_PI) : pmod(a0 - qa, 2 * M_PI);
        if (0 < off && off < fabs(sweep)) {
            double ex = cx + r * cos(qa), ey = cy + r * sin(qa), ez = z0 + dz * off / fabs(sweep);
            bounds_add(c->all_lo, c->all_hi, ex, ey, ez);
            if (working)
                bounds_add(c->work_lo, c->work_hi, ex, ey, ez);
        }
    }
    memcpy(c->pos, target, sizeof c->pos);
    return length;
}

/* A G0-G3 move to the words given (`have` bits over X Y Z .. I J R), with filament move `de`. */
static void move(Core *c, int motion, const double *w, unsigned have, double de)
{
    double target[3];
    for (int i = 0; i < 3; i++) {
        target[i] = c->pos[i];
        if (have & (1u << i)) {
            double v = to_mm(c, w[i]);
            target[i] = c->relative ? target[i] + v : v + c->offset[i];
        }
    }
    double feed = c->feed * c->feed_factor;
    if (motion == 0 && (c->grbl || feed <= 0)) {
        feed = c->max_feedrate[0];
        for (int a = 1; a < 4; a++)
            feed = pmax(feed, c->max_feedrate[a]);
    }
    int turning = c->spindle_mode && c->spindle > 0;
    int laser_on = turning && motion != 0;
    int tag = (laser_on ? BEAM : 0) | (turning ? SPINDLE : 0);
    if (laser_on) {
        double power = c->laser_max_s > 0 ? nearbyint(100 * c->spindle / c->laser_max_s) : 100;
        tag |= (power < 100 ? (int)power : 100) << POWER_SHIFT;
    }
    double length;
    if (motion >= 2) {
        length = arc(c, motion, w, have, target, de, feed, tag);
    } else {
        length = plan(c, target[0] - c->pos[0], target[1] - c->pos[1], target[2] - c->pos[2], de, feed, tag);
        memcpy(c->pos, target, sizeof c->pos);
    }
    bounds_add(c->all_lo, c->all_hi, c->pos[0], c->pos[1], c->pos[2]);
    if (motion == 0) {
        c->rapid_mm += length;
    } else {
        c->cut_mm += length;
        if (laser_on)
            c->beam_mm += length;
    }
    if (de > 0 || (motion != 0 && turning))
        bounds_add(c->work_lo, c->work_hi, c->pos[0], c->pos[1], c->pos[2]);
}

/* ---- the fast path: one line of text ----------------------------------------------------------- */

static inline int is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f'; }
static inline int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static int word_index(char ch)
{
    switch (ch) {
    case 'X': return WX;
    case 'Y': return WY;
    case 'Z': return WZ;
    case 'E': return WE;
    case 'F': return WF;
    case 'I': return WI;
    case 'J': return WJ;
    case 'R': return WR;
    case 'S': return WS;
    default: return -1;
    }
}

/* `[+-]?(digits[.digits*] | .digits)` as Python's float() reads it; 0 when it is anything else. */
static int read_number(const char **pp, const char *end, double *out)
{
    const char *p = *pp, *start = p;
    char buf[64];
    if (p < end && (*p == '+' || *p == '-'))
        p++;
    const char *digits = p;
    while (p < end && is_digit(*p))
        p++;
    int whole = p > digits;
    if (p < end && *p == '.') {
        p++;
        const char *frac = p;
        while (p < end && is_digit(*p))
            p++;
        if (!whole && p == frac)
            return 0;
    } else if (!whole) {
        return 0;
    }
    size_t len = (size_t)(p - start);
    if (len >= sizeof buf)
        return 0;
    memcpy(buf, start, len);
    buf[len] = '\0';
    *out = PyOS_string_to_double(buf, NULL, NULL);
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *pp = p;
    return 1;
}

/* Account the line if it is a plain G0-G3 move; 1 when Python must read it, 0 when done. */
static int fast_line(Core *c, const char *p, const char *end)
{
    while (p < end && is_space(*p))
        p++;
    if (p == end)
        return 0; /* blank */
    if (*p == 'N') {
        p++;
        if (p == end || !is_digit(*p))
            return 1;
        while (p < end && (is_digit(*p) || *p == ' '))
            p++;
    }
    if (p == end || *p != 'G')
        return 1;
    p++;
    int code = 0, ndigits = 0;
    while (p < end && is_digit(*p)) {
        code = code * 10 + (*p - '0');
        if (++ndigits > 3)
            return 1;
        p++;
    }
    if (ndigits == 0 || code > 3 || (p < end && *p == '.') || (c->policed & (1 << code)))
        return 1;
    double w[NWORDS];
    unsigned have = 0;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end || *p == ';' || *p == '*' || *p == '\r' || *p == '\n')
            break;
        int k = word_index(*p);
        if (k < 0)
            return 1;
        p++;
        if (!read_number(&p, end, &w[k]))
            return 1;
        have |= 1u << k;
        if (p < end && !(is_space(*p) || *p == ';' || *p == '*' || word_index(*p) >= 0))
            return 1;
    }
    if (p < end && (*p == '\r' || *p == '\n')) { /* only line ends may follow */
        while (p < end && is_space(*p))
            p++;
        if (p != end)
            return 1;
    }
    c->commands++;
    c->last_delta = 0.0;
    if (have & (1u << WE))
        extrude(c, w[WE]);
    if ((have & (1u << WF)) && w[WF] != 0.0)
        set_feed(c, w[WF]);
    if (have & (1u << WS))
        c->spindle = w[WS];
    c->motion = code;
    move(c, code, w, have, c->last_delta);
    return 0;
}

/* ---- Python face ------------------------------------------------------------------------------ */

/* The default machine limits (a Marlin 2 printer's): the one definition; motion.Limits reads them. */
static const double DEFAULT_MAX_FEEDRATE[4] = {500.0, 500.0, 12.0, 120.0};
static const double DEFAULT_MAX_ACCEL[4] = {3000.0, 3000.0, 100.0, 10000.0};
static const double DEFAULT_JERK[4] = {10.0, 10.0, 0.4, 5.0};
static const double DEFAULT_ACCEL = 1500.0;

static void core_reset(Core *c)
{
    memcpy(c->max_feedrate, DEFAULT_MAX_FEEDRATE, sizeof DEFAULT_MAX_FEEDRATE);
    memcpy(c->max_accel, DEFAULT_MAX_ACCEL, sizeof DEFAULT_MAX_ACCEL);
    memcpy(c->jerk, DEFAULT_JERK, sizeof DEFAULT_JERK);
    c->accel = c->retract_accel = c->travel_accel = DEFAULT_ACCEL;
    c->feed = 25.0; /* Marlin's feedrate before any F word (1500 mm/min) */
    c->feed_factor = 1.0;
    c->laser_max_s = 1000.0;
    c->tools[0].seen = 1;
    for (int i = 0; i < MAX_TOOLS; i++)
        c->tools[i].flow = 1.0;
    bounds_reset(c->all_lo, c->all_hi);
    bounds_reset(c->work_lo, c->work_hi);
}

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Core *c = (Core *)type->tp_alloc(type, 0); /* zeroed */
    if (c != NULL)
        core_reset(c);
    return (PyObject *)c;
}

static PyObject *Core_line(Core *c, PyObject *arg)
{
    Py_ssize_t n;
    const char *s;
    if (PyUnicode_Check(arg)) {
        s = PyUnicode_AsUTF8AndSize(arg, &n);
        if (s == NULL) { /* lone surrogates: not a plain move; Python reads it */
            PyErr_Clear();
            c->lines++;
            Py_RETURN_TRUE;
        }
    } else if (PyBytes_Check(arg)) {
        s = PyBytes_AS_STRING(arg);
        n = PyBytes_GET_SIZE(arg);
    } else {
        PyErr_SetString(PyExc_TypeError, "line() takes str or bytes");
        return NULL;
    }
    c->lines++;
    return PyBool_FromLong(fast_line(c, s, s + n));
}

static PyObject *Core_extrude(Core *c, PyObject *arg)
{
    double e = PyFloat_AsDouble(arg);
    if (e == -1.0 && PyErr_Occurred())
        return NULL;
    return PyFloat_FromDouble(extrude(c, e));
}

/* move(motion, x, y, z, i, j, r, de): a move read by Python; None for a word the line lacks. */
static PyObject *Core_move(Core *c, PyObject *args)
{
    int motion;
    PyObject *words[6];
    double de, w[NWORDS] = {0};
    unsigned have = 0;
    static const int slot[6] = {WX, WY, WZ, WI, WJ, WR};
    if (!PyArg_ParseTuple(args, "iOOOOOOd", &motion, &words[0], &words[1], &words[2], &words[3], &words[4],
                          &words[5], &de))
        return NULL;
    if (motion < 0 || motion > 3) {
        PyErr_SetString(PyExc_ValueError, "motion must be 0-3 (G0-G3)");
        return NULL;
    }
    for (int k = 0; k < 6; k++) {
        if (words[k] == Py_None)
            continue;
        w[slot[k]] = PyFloat_AsDouble(words[k]);
        if (w[slot[k]] == -1.0 && PyErr_Occurred())
            return NULL;
        have |= 1u << slot[k];
    }
    c->motion = motion;
    move(c, motion, w, have, de);
    Py_RETURN_NONE;
}

static PyObject *Core_plan(Core *c, PyObject *args)
{
    double dx, dy, dz, de, feed;
    int tag = 0;
    if (!PyArg_ParseTuple(args, "ddddd|i", &dx, &dy, &dz, &de, &feed, &tag))
        return NULL;
    if (tag < 0 || tag >= NTAGS) {
        PyErr_SetString(PyExc_ValueError, "tag out of range");
        return NULL;
    }
    return PyFloat_FromDouble(plan(c, dx, dy, dz, de, feed, tag));
}

static PyObject *Core_flush(Core *c, PyObject *Py_UNUSED(ignored))
{
    flush(c);
    Py_RETURN_NONE;
}

/* set_limits((fX,fY,fZ,fE), (aX..aE), (jX..jE), accel, retract, travel, cap_print, cap_travel,
 * min_feed, min_travel_feed, junction_deviation) */
static const char AXIS_NAMES[4][2] = {"X", "Y", "Z", "E"};

/* limits.<name>[axis] for X Y Z E into row. */
static int read_axes(PyObject *limits, const char *name, double *row)
{
    PyObject *table = PyObject_GetAttrString(limits, name);
    if (table == NULL)
        return -1;
    for (int i = 0; i < 4; i++) {
        PyObject *v = PyMapping_GetItemString(table, AXIS_NAMES[i]);
        row[i] = v ? PyFloat_AsDouble(v) : -1.0;
        Py_XDECREF(v);
        if (PyErr_Occurred()) {
            Py_DECREF(table);
            return -1;
        }
    }
    Py_DECREF(table);
    return 0;
}

static int read_scalar(PyObject *limits, const char *name, double *out)
{
    PyObject *v = PyObject_GetAttrString(limits, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return PyErr_Occurred() ? -1 : 0;
}

/* set_limits(limits): every field of a motion.Limits, read by name; nothing changes on an error. */
static PyObject *Core_set_limits(Core *c, PyObject *limits)
{
    static const char *names[] = {"accel", "retract_accel", "travel_accel", "max_accel_extruding",
                                  "max_accel_travel", "min_feedrate", "min_travel_feedrate", "junction_deviation"};
    double f[4], a[4], j[4], values[8];
    if (read_axes(limits, "max_feedrate", f) || read_axes(limits, "max_accel", a) || read_axes(limits, "jerk", j))
        return NULL;
    for (int i = 0; i < 8; i++)
        if (read_scalar(limits, names[i], &values[i]))
            return NULL;
    double *scalars[] = {&c->accel, &c->retract_accel, &c->travel_accel, &c->max_accel_extruding,
                         &c->max_accel_travel, &c->min_feedrate, &c->min_travel_feedrate, &c->junction_deviation};
    memcpy(c->max_feedrate, f, sizeof f);
    memcpy(c->max_accel, a, sizeof a);
    memcpy(c->jerk, j, sizeof j);
    for (int i = 0; i < 8; i++)
        *scalars[i] = values[i];
    Py_RETURN_NONE;
}

/* row[axis] = value, the axis named by its letter (X Y Z E). */
static PyObject *set_axis(double *row, PyObject *args)
{
    const char *axis;
    double value;
    if (!PyArg_ParseTuple(args, "sd", &axis, &value))
        return NULL;
    for (int i = 0; i < 4; i++)
        if (strcmp(axis, AXIS_NAMES[i]) == 0) {
            row[i] = value;
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "axis must be X, Y, Z or E, not %R", PyTuple_GET_ITEM(args, 0));
    return NULL;
}

static PyObject *Core_set_max_feedrate(Core *c, PyObject *args) { return set_axis(c->max_feedrate, args); }
static PyObject *Core_set_max_accel(Core *c, PyObject *args) { return set_axis(c->max_accel, args); }
static PyObject *Core_set_jerk(Core *c, PyObject *args) { return set_axis(c->jerk, args); }

static PyObject *Core_set_feed_word(Core *c, PyObject *arg)
{
    double f = PyFloat_AsDouble(arg);
    if (f == -1.0 && PyErr_Occurred())
        return NULL;
    set_feed(c, f);
    Py_RETURN_NONE;
}

static PyObject *Core_count_command(Core *c, PyObject *Py_UNUSED(ignored))
{
    c->commands++;
    Py_RETURN_NONE;
}

static PyObject *Core_time_by_tag(Core *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (int t = 1; t < NTAGS; t++) {
        if (!c->tag_seen[t])
            continue;
        PyObject *k = PyLong_FromLong(t), *v = PyFloat_FromDouble(c->time_by_tag[t]);
        int bad = k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (bad) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *Core_bounds(Core *c, PyObject *arg)
{
    int work = PyObject_IsTrue(arg);
    if (work < 0)
        return NULL;
    double *lo = work ? c->work_lo : c->all_lo, *hi = work ? c->work_hi : c->all_hi;
    if (lo[0] == INFINITY)
        Py_RETURN_NONE;
    return Py_BuildValue("((ddd)(ddd))", lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]);
}

static PyObject *Core_add_bounds(Core *c, PyObject *args)
{
    double x, y, z;
    int work;
    if (!PyArg_ParseTuple(args, "dddp", &x, &y, &z, &work))
        return NULL;
    bounds_add(c->all_lo, c->all_hi, x, y, z);
    if (work)
        bounds_add(c->work_lo, c->work_hi, x, y, z);
    Py_RETURN_NONE;
}

static int tool_arg(PyObject *arg, int *tool)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return 0;
    if (n < 0 || n >= MAX_TOOLS) {
        PyErr_Format(PyExc_ValueError, "tool %ld is beyond the %d tools counted", n, MAX_TOOLS);
        return 0;
    }
    *tool = (int)n;
    return 1;
}

static PyObject *Core_select_tool(Core *c, PyObject *arg)
{
    int t;
    if (!tool_arg(arg, &t))
        return NULL;
    c->tool = t;
    c->tools[t].seen = 1;
    Py_RETURN_NONE;
}

static PyObject *Core_set_flow(Core *c, PyObject *args)
{
    PyObject *tool;
    double flow;
    int t;
    if (!PyArg_ParseTuple(args, "Od", &tool, &flow) || !tool_arg(tool, &t))
        return NULL;
    c->tools[t].seen = 1;
    c->tools[t].flow = flow;
    Py_RETURN_NONE;
}

static PyObject *Core_set_e_pos(Core *c, PyObject *arg)
{
    double e = PyFloat_AsDouble(arg);
    if (e == -1.0 && PyErr_Occurred())
        return NULL;
    c->tools[c->tool].e_pos = e;
    Py_RETURN_NONE;
}

static PyObject *Core_set_debt(Core *c, PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    c->tools[c->tool].debt = d;
    Py_RETURN_NONE;
}

static PyObject *Core_tools(Core *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int t = 0; t < MAX_TOOLS; t++) {
        if (!c->tools[t].seen)
            continue;
        PyObject *row = Py_BuildValue("(idd)", t, c->tools[t].extruded, c->tools[t].pushed);
        if (row == NULL || PyList_Append(out, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(row);
    }
    return out;
}

static PyObject *triple(const double *v) { return Py_BuildValue("(ddd)", v[0], v[1], v[2]); }

static int set_triple(double *dst, PyObject *value)
{
    double v[3];
    if (value == NULL || !PyArg_ParseTuple(value, "ddd", &v[0], &v[1], &v[2])) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cannot delete");
        return -1;
    }
    memcpy(dst, v, sizeof v);
    return 0;
}

static PyObject *Core_get_pos(Core *c, void *closure) { return triple(c->pos); }
static int Core_set_pos(Core *c, PyObject *v, void *closure) { return set_triple(c->pos, v); }
static PyObject *Core_get_offset(Core *c, void *closure) { return triple(c->offset); }
static int Core_set_offset(Core *c, PyObject *v, void *closure) { return set_triple(c->offset, v); }
static PyObject *Core_get_moving_s(Core *c, void *closure)
{
    return PyFloat_FromDouble(c->time_by_kind[0] + c->time_by_kind[1] + c->time_by_kind[2]);
}
static PyObject *Core_get_time_by_kind(Core *c, void *closure) { return triple(c->time_by_kind); }

static PyGetSetDef Core_getset[] = {
    {"pos", (getter)Core_get_pos, (setter)Core_set_pos, "where the tool is (mm, machine frame)", NULL},
    {"offset", (getter)Core_get_offset, (setter)Core_set_offset, "G92 offset per axis (mm)", NULL},
    {"moving_s", (getter)Core_get_moving_s, NULL, "seconds of the moves fixed so far", NULL},
    {"time_by_kind", (getter)Core_get_time_by_kind, NULL, "seconds printing, travelling, retracting", NULL},
    {NULL},
};

#define M(name, type, flags, doc) {#name, type, offsetof(Core, name), flags, doc}
static PyMemberDef Core_members[] = {
    M(relative, T_INT, 0, "G91: XYZ words are relative"),
    M(inches, T_INT, 0, "G20: words are inches"),
    M(grbl, T_INT, 0, "GRBL dialect: G0 runs at the machine's top speed"),
    M(motion, T_INT, 0, "the modal motion command, 0-3"),
    M(spindle_mode, T_INT, 0, "3 (M3), 4 (M4) or 0 (off)"),
    M(feed, T_DOUBLE, 0, "feed rate, mm/s"),
    M(feed_factor, T_DOUBLE, 0, "M220 factor"),
    M(spindle, T_DOUBLE, 0, "spindle speed or laser power S"),
    M(laser_max_s, T_DOUBLE, 0, "S of full laser power"),
    M(rapid_mm, T_DOUBLE, READONLY, "length of G0 moves"),
    M(cut_mm, T_DOUBLE, READONLY, "length of G1-G3 moves"),
    M(beam_mm, T_DOUBLE, READONLY, "length moved with the laser on"),
    M(relative_e, T_INT, 0, "E words are relative (M83, G91)"),
    M(declared, T_INT, 0, "the file said M82 or M83"),
    M(tool, T_INT, READONLY, "the current tool"),
    M(last_delta, T_DOUBLE, 0, "signed filament move of the last move"),
    M(rel_total, T_DOUBLE, READONLY, "filament if the file were relative"),
    M(rel_pushed, T_DOUBLE, READONLY, "the same, flow included"),
    M(e_moves, T_LONGLONG, READONLY, "moves with an E word"),
    M(abs_backsteps, T_LONGLONG, READONLY, "positive E words that, read as absolute, go back"),
    M(accel, T_DOUBLE, 0, "acceleration of printing moves (M204 P)"),
    M(retract_accel, T_DOUBLE, 0, "acceleration of E-only moves (M204 R)"),
    M(travel_accel, T_DOUBLE, 0, "acceleration of moves without extrusion (M204 T)"),
    M(max_accel_extruding, T_DOUBLE, 0, "cap on M204 P from the machine's configuration (0: none)"),
    M(max_accel_travel, T_DOUBLE, 0, "cap on M204 T (0: none)"),
    M(min_feedrate, T_DOUBLE, 0, "M205 S"),
    M(min_travel_feedrate, T_DOUBLE, 0, "M205 T"),
    M(junction_deviation, T_DOUBLE, 0, "mm; 0 means classic jerk (M205 J)"),
    M(lines, T_LONGLONG, READONLY, "lines read"),
    M(commands, T_LONGLONG, READONLY, "commands accounted"),
    M(policed, T_INT, 0, "bit k: policy rules name Gk"),
    {NULL},
};

static PyMethodDef Core_methods[] = {
    {"line", (PyCFunction)Core_line, METH_O, "Account a plain move line; True when Python must read it."},
    {"extrude", (PyCFunction)Core_extrude, METH_O, "Count an E word for the current tool."},
    {"move", (PyCFunction)Core_move, METH_VARARGS, "move(motion, x, y, z, i, j, r, de): a G0-G3 move."},
    {"plan", (PyCFunction)Core_plan, METH_VARARGS, "plan(dx, dy, dz, de, feed_mm_s, tag=0): one straight block."},
    {"flush", (PyCFunction)Core_flush, METH_NOARGS, "Every planned move runs to a stop."},
    {"set_limits", (PyCFunction)Core_set_limits, METH_O, "set_limits(limits): a motion.Limits, read by name."},
    {"set_max_feedrate", (PyCFunction)Core_set_max_feedrate, METH_VARARGS, "set_max_feedrate(axis, mm_s): M203."},
    {"set_max_accel", (PyCFunction)Core_set_max_accel, METH_VARARGS, "set_max_accel(axis, mm_s2): M201."},
    {"set_jerk", (PyCFunction)Core_set_jerk, METH_VARARGS, "set_jerk(axis, mm_s): M205 X Y Z E."},
    {"set_feed_word", (PyCFunction)Core_set_feed_word, METH_O, "An F word (per minute, G20 inches) as the feed."},
    {"count_command", (PyCFunction)Core_count_command, METH_NOARGS, "A command Python accounted."},
    {"time_by_tag", (PyCFunction)Core_time_by_tag, METH_NOARGS, "Seconds per tag (beam, spindle, power)."},
    {"bounds", (PyCFunction)Core_bounds, METH_O, "((lo), (hi)) of all moves, or of working moves; None."},
    {"add_bounds", (PyCFunction)Core_add_bounds, METH_VARARGS, "add_bounds(x, y, z, working)."},
    {"select_tool", (PyCFunction)Core_select_tool, METH_O, "Tool change."},
    {"set_flow", (PyCFunction)Core_set_flow, METH_VARARGS, "set_flow(tool, factor): M221."},
    {"set_e_pos", (PyCFunction)Core_set_e_pos, METH_O, "G92 E for the current tool."},
    {"set_debt", (PyCFunction)Core_set_debt, METH_O, "Retraction owed by the current tool."},
    {"tools", (PyCFunction)Core_tools, METH_NOARGS, "[(tool, counted mm, pushed mm)] of tools seen."},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "afn_agent.gcode._core.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The numeric state of one analysis and its compiled per-line path.",
    .tp_new = Core_new,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
};

static PyObject *mod_trapezoid(PyObject *self, PyObject *args)
{
    double d, entry, cruise, exit_, accel;
    if (!PyArg_ParseTuple(args, "ddddd", &d, &entry, &cruise, &exit_, &accel))
        return NULL;
    return PyFloat_FromDouble(trapezoid(d, entry, cruise, exit_, accel));
}

static PyMethodDef module_methods[] = {
    {"trapezoid_time", mod_trapezoid, METH_VARARGS,
     "trapezoid_time(distance, entry, cruise, exit, accel): seconds of one block."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_core", "Compiled per-line G-code analysis (see Core).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__core(void)
{
    if (PyType_Ready(&CoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *defaults = Py_BuildValue(
        "{s:(dddd),s:(dddd),s:(dddd),s:d}", "max_feedrate", DEFAULT_MAX_FEEDRATE[0], DEFAULT_MAX_FEEDRATE[1],
        DEFAULT_MAX_FEEDRATE[2], DEFAULT_MAX_FEEDRATE[3], "max_accel", DEFAULT_MAX_ACCEL[0], DEFAULT_MAX_ACCEL[1],
        DEFAULT_MAX_ACCEL[2], DEFAULT_MAX_ACCEL[3], "jerk", DEFAULT_JERK[0], DEFAULT_JERK[1], DEFAULT_JERK[2],
        DEFAULT_JERK[3], "accel", DEFAULT_ACCEL);
    if (defaults == NULL || PyModule_AddObject(m, "DEFAULT_LIMITS", defaults) < 0) {
        Py_XDECREF(defaults);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_TOOLS", MAX_TOOLS);
    PyModule_AddIntConstant(m, "BEAM", BEAM);
    PyModule_AddIntConstant(m, "SPINDLE", SPINDLE);
    PyModule_AddIntConstant(m, "POWER_SHIFT", POWER_SHIFT);
    return m;
}
