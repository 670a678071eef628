/* The bare host of bench/least_host.py, in C: what a host pays per streamed line on this machine when
 * no interpreter runs between the operating system's calls (issue 22). The same loop as the Python
 * bare host: the agent's window rule (lines not yet known, by ADVANCED_OK, to be in Marlin's command
 * queue fit its RX ring), a timer nap of a fixed length or a watch of the port, nothing parsed but
 * `ok N<n> P<p> B<b>`. least_host.py compiles it with the system's C compiler and runs it.
 *
 *   least_host_c PTY WIRE_FILE BAUD NAP_US ROOM DEPTH
 *
 * WIRE_FILE holds the framed lines, N1 onwards, each ending in a newline; NAP_US 0 watches the port,
 * -1 lets the kernel wait for whole lines (canonical mode, a blocking read), as least_host.py's
 * `_whole_lines`; -2 the same mode watched by select, as a thread that can also be woken would.
 * Prints `<CPU µs per line> <seconds streaming> <turns>`; exits 1 on any failure, saying why. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int fail(const char *what) {
    fprintf(stderr, "least_host_c: %s: %s\n", what, strerror(errno));
    return 1;
}

static int wait_readable(int fd, double seconds) {
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    return select(fd + 1, &r, NULL, NULL, &tv);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno != EAGAIN) return -1;
        if (w < 0) {
            fd_set o;
            FD_ZERO(&o);
            FD_SET(fd, &o);
            select(fd + 1, NULL, &o, NULL, NULL);
            continue;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Let the start-up chatter pass, then number lines from 1 (M110 N0), as least_host.py does. */
static int handshake(int fd) {
    char seen[8192];
    size_t have = 0;
    double deadline = clock_s(CLOCK_MONOTONIC) + 10;
    if (write_all(fd, "M110 N0\n", 8) < 0) return fail("write M110");
    for (;;) {
        if (clock_s(CLOCK_MONOTONIC) > deadline) {
            fprintf(stderr, "least_host_c: no answer to M110 from the simulator\n");
            return 1;
        }
        wait_readable(fd, 0.2);
        ssize_t r = read(fd, seen + have, sizeof seen - 1 - have);
        if (r > 0) have += (size_t)r;
        if (have >= sizeof seen - 1) have = 0; /* chatter only: keep reading */
        seen[have] = 0;
        for (char *line = seen; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, "ok", 2) == 0 && strchr(line, '\n')) return 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: least_host_c PTY WIRE_FILE BAUD NAP_US ROOM DEPTH\n");
        return 2;
    }
    long nap_us = atol(argv[4]), room = atol(argv[5]), depth = atol(argv[6]);
    FILE *f = fopen(argv[2], "rb");
    if (!f) return fail(argv[2]);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *wire = malloc((size_t)size + 1);
    if (!wire || fread(wire, 1, (size_t)size, f) != (size_t)size) return fail("read wire file");
    fclose(f);
    long n = 0;
    for (long i = 0; i < size; i++) n += wire[i] == '\n';
    long *start = malloc(sizeof(long) * (size_t)(n + 1));
    start[0] = 0;
    for (long i = 0, k = 1; i < size; i++)
        if (wire[i] == '\n') start[k++] = i + 1;

    int fd = open(argv[1], O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return fail(argv[1]);
    struct termios t;
    if (tcgetattr(fd, &t) < 0) return fail(argv[1]);
    cfmakeraw(&t);
    tcsetattr(fd, TCSANOW, &t);
    if (handshake(fd)) return 1;
    if (nap_us < 0) { /* canonical mode and nothing else of it; 0 disables each editing character */
        t.c_lflag = (t.c_lflag | ICANON) & ~(tcflag_t)(ECHO | ISIG | IEXTEN);
        const int off[] = {VEOF, VEOL, VEOL2, VERASE, VKILL, VWERASE, VREPRINT, VLNEXT, VINTR, VQUIT, VSUSP};
        for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) t.c_cc[off[i]] = 0;
        tcsetattr(fd, TCSANOW, &t);
        if (nap_us == -1) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    }

    struct timespec nap = {nap_us > 0 ? nap_us / 1000000 : 0, nap_us > 0 ? nap_us % 1000000 * 1000 : 0};
    long sent = 0, queued = 0, answered = 0, turns = 0, ring = 0;
    char in[65536];
    size_t pending = 0;
    double started = clock_s(CLOCK_MONOTONIC), cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    while (answered < n) {
        long first = sent;
        while (sent < n && (ring + (start[sent + 1] - start[sent]) <= room || sent == queued)) {
            ring += start[sent + 1] - start[sent];
            sent++;
        }
        if (sent > first && write_all(fd, wire + start[first], (size_t)(start[sent] - start[first])) < 0)
            return fail("write");
        turns++;
        if (nap_us > 0)
            nanosleep(&nap, NULL);
        else if ((nap_us == 0 || nap_us == -2) && wait_readable(fd, 1.0) < 0)
            return fail("select");
        ssize_t r = read(fd, in + pending, sizeof in - pending);
        if (r < 0 && errno == EAGAIN) continue;
        if (r <= 0) return fail("read");
        pending += (size_t)r;
        char *line = in, *end = in + pending, *nl;
        while ((nl = memchr(line, '\n', (size_t)(end - line))) != NULL) {
            long a, p, b;
            *nl = 0;
            if (sscanf(line, "ok N%ld P%ld B%ld", &a, &p, &b) == 3) {
                if (a > answered) answered = a;
                long inside = a + depth - b - 1; /* the agent's rule (marlin.py) */
                if (inside > sent) inside = sent;
                while (queued < inside) {
                    ring -= start[queued + 1] - start[queued];
                    queued++;
                }
            }
            line = nl + 1;
        }
        pending = (size_t)(end - line);
        memmove(in, line, pending);
    }
    cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    printf("%.2f %.4f %ld\n", cpu / (double)n * 1e6, clock_s(CLOCK_MONOTONIC) - started, turns);
    close(fd);
    return 0;
}
