/*
 * bench/loadgen.c -- the benchmark harness's native load generator.
 *
 * Written for beanstalk-py's bench/ package; the harness compiles it on
 * demand (gcc -O2) into a cache directory and falls back to the pure Python
 * generator in bench/pyload.py when no compiler is available.  Both speak the
 * same protocol with the harness and print the same JSON, so
 * bench/loadgen.py treats them alike.
 *
 * Protocol with the harness:
 *   1. argv says what to do (see usage()); the target is always 127.0.0.1.
 *   2. the process opens the connections it needs and prints "READY\n";
 *   3. it reads one line from stdin: a CLOCK_MONOTONIC time in seconds (the
 *      clock Python's time.monotonic() reads on Linux) at which to begin, so
 *      that several load processes start together;
 *   4. it runs its phases, each bounded in time, and prints one JSON object:
 *      {"cpu_s":..., "wall_s":..., "phases":[{"name":..., "count":...,
 *       "cmds":..., "errors":..., "timeouts":..., "secs":..., "wall_s":...,
 *       "cpu_s":..., "server_cpu_s":..., "hist":[[bucket,count],...]}, ...]}
 *   where secs is the counted window, wall_s the whole phase (warm-up
 *   included) and cpu_s / server_cpu_s the CPU time each side used in it
 *   (-1 when the server's PID is unknown).
 *
 * Histograms are log-linear over nanoseconds with 32 buckets per power of two
 * (about 3% resolution); bench/loadgen.py holds the matching decoder.
 *
 * Modes (-m):
 *   put      -c conns, each keeping up to -P puts in flight (topped up when
 *            half of them are answered).  Phase "put".
 *   prd      -r producers (request/response put, -P in flight each) and -k
 *            consumers (reserve-with-timeout 1, then delete).  Producers wait
 *            while this process has more than -B jobs put but not yet
 *            reserved.  Phase "prd": count = jobs deleted, cmds = replies.
 *   latency  one connection, one request at a time: put, reserve, delete.
 *            Phases "latency", "latency.put", "latency.reserve",
 *            "latency.delete".
 *   idle     opens -c connections, at most -I handshakes at a time; each
 *            sends use+watch of one of -n tubes and one put.  Then a latency
 *            probe on one more connection while they idle, then every
 *            connection puts, one request at a time.  Phases "setup",
 *            "probe", "active".
 *   tubes    one connection creates -n tubes (use + put each, pipelined);
 *            -c connections put to random tubes (use + put, -P in flight);
 *            one connection watches all -n tubes, then drains them with
 *            reserve-with-timeout 0 + delete.  Phases "create", "put",
 *            "watch", "drain".
 *   fill     one connection puts exactly -N jobs (-P in flight).  Phase
 *            "fill".
 *
 * Safety: loopback only, every phase has a deadline, and alarm() ends the
 * process if anything hangs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ settings */

static int opt_port = 11300;
static const char *opt_mode = "put";
static int opt_conns = 1;
static int opt_depth = 100;
static int opt_producers = 1, opt_consumers = 1;
static long opt_backlog = 1000;
static long opt_jobs = 1000000;
static int opt_tubes = 10000;
static int opt_inflight = 64;
static int opt_size = 100;
static double opt_warmup = 0.5, opt_duration = 3.0, opt_limit = 60.0;
static int opt_server_pid = 0;

static struct sockaddr_in target;
static char *put_cmd;   /* "put 0 0 120 <size>\r\n<body>\r\n" */
static size_t put_len;

/* ------------------------------------------------------------ clocks */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* utime + stime of the server, or -1 when unknown */
static double server_cpu_s(void)
{
    if (opt_server_pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", opt_server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* fields after the command: state(3) ... utime(14) stime(15) */
    unsigned long utime = 0, stime = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14)
            utime = strtoul(tok, NULL, 10);
        else if (field == 15) {
            stime = strtoul(tok, NULL, 10);
            break;
        }
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void fail(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* ------------------------------------------------------------ histogram */

#define NBUCKETS 1280

typedef struct {
    uint64_t n[NBUCKETS];
} hist;

static inline int bucket_of(uint64_t ns)
{
    if (ns < 32)
        return (int)ns;
    int e = 63 - __builtin_clzll(ns);
    int i = (e - 4) * 32 + (int)(ns >> (e - 5)) - 32;
    return i < NBUCKETS ? i : NBUCKETS - 1;
}

/* ------------------------------------------------------------ phase results */

typedef struct {
    const char *name;
    uint64_t count, cmds, errors, timeouts;
    double secs, wall_s, cpu_s, server_cpu_s;
    hist h;
} phase;

#define MAXPHASES 8
static phase phases[MAXPHASES];
static int nphases;

static phase *phase_new(const char *name)
{
    phase *p = &phases[nphases++];
    memset(p, 0, sizeof *p);
    p->name = name;
    return p;
}

static void print_results(double cpu_s, double wall_s)
{
    printf("{\"cpu_s\": %.6f, \"wall_s\": %.6f, \"phases\": [", cpu_s, wall_s);
    for (int i = 0; i < nphases; i++) {
        phase *p = &phases[i];
        printf("%s{\"name\": \"%s\", \"count\": %llu, \"cmds\": %llu, \"errors\": %llu, "
               "\"timeouts\": %llu, \"secs\": %.6f, \"wall_s\": %.6f, \"cpu_s\": %.6f, "
               "\"server_cpu_s\": %.6f, "
               "\"hist\": [",
               i ? ", " : "", p->name, (unsigned long long)p->count,
               (unsigned long long)p->cmds, (unsigned long long)p->errors,
               (unsigned long long)p->timeouts, p->secs, p->wall_s, p->cpu_s, p->server_cpu_s);
        int first = 1;
        for (int b = 0; b < NBUCKETS; b++)
            if (p->h.n[b]) {
                printf("%s[%d, %llu]", first ? "" : ", ", b, (unsigned long long)p->h.n[b]);
                first = 0;
            }
        printf("]}");
    }
    printf("]}\n");
    fflush(stdout);
}

/* CPU of both sides over one phase */
typedef struct {
    uint64_t t0;
    double cpu0, srv0;
} meter;

static meter meter_start(void)
{
    meter m = {mono_ns(), self_cpu_s(), server_cpu_s()};
    return m;
}

static void meter_stop(meter m, phase *p)
{
    p->wall_s = (double)(mono_ns() - m.t0) / 1e9;
    p->cpu_s = self_cpu_s() - m.cpu0;
    double srv = server_cpu_s();
    p->server_cpu_s = (srv >= 0 && m.srv0 >= 0) ? srv - m.srv0 : -1;
}

/* ------------------------------------------------------------ sockets */

static int open_socket(int nonblocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        fail("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int connect_blocking(void)
{
    int fd = open_socket(0);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0)
        fail("connect");
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* ------------------------------------------------------------ replies */

enum { K_INSERTED, K_RESERVED, K_DELETED, K_TIMED_OUT, K_USING, K_WATCHING, K_OTHER };

typedef struct {
    int kind;
    unsigned long long id;
} reply;

/* Parse one reply at buf[0..len); returns its length, or 0 when incomplete. */
static size_t parse_reply(const char *buf, size_t len, reply *r)
{
    const char *nl = memchr(buf, '\n', len);
    if (!nl)
        return 0;
    size_t line = (size_t)(nl - buf) + 1;
    r->id = 0;
    if (line > 9 && memcmp(buf, "INSERTED ", 9) == 0) {
        r->kind = K_INSERTED;
        r->id = strtoull(buf + 9, NULL, 10);
    } else if (line > 9 && memcmp(buf, "RESERVED ", 9) == 0) {
        char *end;
        r->kind = K_RESERVED;
        r->id = strtoull(buf + 9, &end, 10);
        size_t body = strtoull(end, NULL, 10);
        if (len < line + body + 2)
            return 0;
        line += body + 2;
    } else if (line >= 9 && memcmp(buf, "DELETED\r\n", 9) == 0) {
        r->kind = K_DELETED;
    } else if (line >= 11 && memcmp(buf, "TIMED_OUT\r\n", 11) == 0) {
        r->kind = K_TIMED_OUT;
    } else if (line > 6 && memcmp(buf, "USING ", 6) == 0) {
        r->kind = K_USING;
    } else if (line > 9 && memcmp(buf, "WATCHING ", 9) == 0) {
        r->kind = K_WATCHING;
    } else {
        r->kind = K_OTHER;
        static int shown;
        if (shown++ < 3)
            fprintf(stderr, "loadgen: unexpected reply: %.*s\n", (int)(line > 60 ? 60 : line), buf);
    }
    return line;
}

/* ------------------------------------------------------------ connections */

enum { ROLE_PUT, ROLE_PRODUCER, ROLE_CONSUMER, ROLE_TUBE_PUT, ROLE_CREATE,
       ROLE_WATCH, ROLE_DRAIN, ROLE_FILL };

/* A group of requests sent together, still awaiting `left` replies. */
typedef struct {
    uint64_t sent;
    int left;
} batch;

typedef struct {
    int fd, role, dead, finished, paused, writing;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int pending;          /* requests awaiting a reply */
    batch *ring;
    int ring_head, ring_len, ring_cap;
    long next, total;     /* create/watch/fill: progress */
} conn;

static conn *conn_new(int fd, int role)
{
    conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->role = role;
    c->in_cap = 1 << 16;
    c->in = malloc(c->in_cap);
    c->out_cap = 1 << 14;
    c->out = malloc(c->out_cap);
    c->ring_cap = 64;
    c->ring = malloc(sizeof(batch) * (size_t)c->ring_cap);
    return c;
}

static void conn_free(conn *c)
{
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c->ring);
    free(c);
}

static void out_add(conn *c, const char *data, size_t n)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        while (c->out_len + n > c->out_cap)
            c->out_cap *= 2;
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

static void ring_push(conn *c, uint64_t t, int n)
{
    if (c->ring_len == c->ring_cap) {
        batch *bigger = malloc(sizeof(batch) * (size_t)c->ring_cap * 2);
        for (int i = 0; i < c->ring_len; i++)
            bigger[i] = c->ring[(c->ring_head + i) % c->ring_cap];
        free(c->ring);
        c->ring = bigger;
        c->ring_head = 0;
        c->ring_cap *= 2;
    }
    c->ring[(c->ring_head + c->ring_len) % c->ring_cap] = (batch){t, n};
    c->ring_len++;
    c->pending += n;
}

/* one reply arrived: returns when its request was sent */
static uint64_t ring_pop(conn *c)
{
    if (!c->ring_len)
        return 0;
    batch *b = &c->ring[c->ring_head];
    uint64_t t = b->sent;
    if (--b->left == 0) {
        c->ring_head = (c->ring_head + 1) % c->ring_cap;
        c->ring_len--;
    }
    c->pending--;
    return t;
}

/* ------------------------------------------------------------ event loop */

typedef struct {
    int epfd;
    conn **conns;
    int n, finished, paused;
    uint64_t now, count_from, count_until;
    long put_not_reserved;   /* prd: jobs put by this process, not yet reserved */
    uint64_t rng;
    phase *ph;
} loop;

static int counting(loop *L) { return L->now >= L->count_from && L->now < L->count_until; }

static uint64_t next_random(loop *L)
{
    L->rng ^= L->rng << 13;
    L->rng ^= L->rng >> 7;
    L->rng ^= L->rng << 17;
    return L->rng;
}

static void set_events(loop *L, conn *c, int writing)
{
    if (c->writing == writing)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (writing ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(L->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->writing = writing;
}

static void finish(loop *L, conn *c)
{
    if (!c->finished) {
        c->finished = 1;
        L->finished++;
    }
}

static void lose(loop *L, conn *c, const char *why)
{
    if (c->dead)
        return;
    static int shown;
    if (shown++ < 3)
        fprintf(stderr, "loadgen: connection lost: %s\n", why);
    c->dead = 1;
    L->ph->errors++;
    epoll_ctl(L->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    finish(L, c);
}

static void flush_out(loop *L, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) {
            c->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(L, c, 1);
            return;
        } else {
            lose(L, c, w < 0 ? strerror(errno) : "write returned 0");
            return;
        }
    }
    c->out_off = c->out_len = 0;
    set_events(L, c, 0);
}

#define CHUNK 256   /* requests per pipelined batch while creating or watching tubes */

/* Queue whatever this connection's role allows now; then write. */
static void top_up(loop *L, conn *c)
{
    if (c->dead || c->finished)
        return;
    char line[64];
    switch (c->role) {
    case ROLE_PRODUCER:
        if (L->put_not_reserved >= opt_backlog) {
            if (!c->paused) {
                c->paused = 1;
                L->paused++;
            }
            return;
        }
        if (c->paused) {
            c->paused = 0;
            L->paused--;
        }
        /* fall through */
    case ROLE_PUT:
    case ROLE_TUBE_PUT:
    case ROLE_FILL: {
        if (c->pending * 2 > opt_depth)
            return;
        int n = opt_depth - c->pending;
        if (c->role == ROLE_FILL && n > c->total - c->next)
            n = (int)(c->total - c->next);
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            if (c->role == ROLE_TUBE_PUT) {
                int k = snprintf(line, sizeof line, "use t%ld\r\n",
                                 (long)(next_random(L) % (uint64_t)opt_tubes));
                out_add(c, line, (size_t)k);
            }
            out_add(c, put_cmd, put_len);
        }
        if (c->role == ROLE_PRODUCER)
            L->put_not_reserved += n;
        c->next += n;
        ring_push(c, L->now, n);
        break;
    }
    case ROLE_CREATE:
    case ROLE_WATCH: {
        if (c->pending)
            return;
        if (c->next >= c->total) {
            finish(L, c);
            return;
        }
        int n = 0;
        for (; c->next < c->total && n < CHUNK; c->next++, n++) {
            int k = snprintf(line, sizeof line, c->role == ROLE_CREATE ? "use t%ld\r\n" : "watch t%ld\r\n",
                             c->next);
            out_add(c, line, (size_t)k);
            if (c->role == ROLE_CREATE)
                out_add(c, put_cmd, put_len);
        }
        ring_push(c, L->now, n);
        break;
    }
    case ROLE_CONSUMER:
    case ROLE_DRAIN:
        if (c->pending)
            return;
        out_add(c, c->role == ROLE_CONSUMER ? "reserve-with-timeout 1\r\n" : "reserve-with-timeout 0\r\n", 24);
        ring_push(c, L->now, 1);
        break;
    }
    flush_out(L, c);
}

static void record(loop *L, uint64_t sent)
{
    L->ph->cmds++;
    L->ph->h.n[bucket_of(L->now - sent)]++;
}

static void on_reply(loop *L, conn *c, const reply *r)
{
    int in_window = counting(L);
    if (r->kind == K_OTHER)
        L->ph->errors++;
    switch (c->role) {
    case ROLE_PUT:
    case ROLE_PRODUCER:
    case ROLE_TUBE_PUT:
    case ROLE_FILL: {
        if (r->kind == K_USING)
            return;
        uint64_t sent = ring_pop(c);
        if (in_window) {
            record(L, sent);
            if (r->kind == K_INSERTED && c->role != ROLE_PRODUCER)
                L->ph->count++;   /* prd counts a job when it is deleted */
        }
        if (c->role == ROLE_FILL && c->next >= c->total && !c->pending)
            finish(L, c);
        return;
    }
    case ROLE_CREATE:
    case ROLE_WATCH:
        if (r->kind == K_USING)
            return;
        ring_pop(c);
        if (r->kind == K_INSERTED || r->kind == K_WATCHING)
            L->ph->count++;
        return;
    case ROLE_CONSUMER:
    case ROLE_DRAIN: {
        uint64_t sent = ring_pop(c);
        if (in_window)
            record(L, sent);
        char line[64];
        if (r->kind == K_RESERVED) {
            if (c->role == ROLE_CONSUMER)
                L->put_not_reserved--;
            int k = snprintf(line, sizeof line, "delete %llu\r\n", r->id);
            out_add(c, line, (size_t)k);
            ring_push(c, L->now, 1);
            flush_out(L, c);
            return;
        }
        if (r->kind == K_DELETED && in_window)
            L->ph->count++;
        if (r->kind == K_TIMED_OUT) {
            L->ph->timeouts++;
            if (c->role == ROLE_DRAIN) {
                finish(L, c);
                return;
            }
        }
        return;   /* top_up sends the next reserve */
    }
    }
}

static void on_readable(loop *L, conn *c)
{
    if (c->in_len == c->in_cap) {
        c->in_cap *= 2;
        c->in = realloc(c->in, c->in_cap);
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0) {
        lose(L, c, "server closed the connection");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            lose(L, c, strerror(errno));
        return;
    }
    c->in_len += (size_t)n;
    size_t pos = 0, used;
    reply r;
    while (pos < c->in_len && (used = parse_reply(c->in + pos, c->in_len - pos, &r))) {
        pos += used;
        on_reply(L, c, &r);
        if (c->dead)
            return;
    }
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    top_up(L, c);
}

/* Run `conns` until `stop_at` (ns) or until every connection has finished
 * (when until_done); count replies arriving in [count_from, stop_at). */
static void run(conn **conns, int n, phase *ph, uint64_t count_from, uint64_t stop_at, int until_done)
{
    loop L = {0};
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    L.conns = conns;
    L.n = n;
    L.ph = ph;
    L.count_from = count_from;
    L.count_until = stop_at;
    L.rng = 0x2545F4914F6CDD1Dull ^ ((uint64_t)getpid() << 17);
    L.now = mono_ns();
    for (int i = 0; i < n; i++) {
        conn *c = conns[i];
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->writing = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            fail("epoll_ctl");
    }
    for (int i = 0; i < n; i++)
        top_up(&L, conns[i]);
    struct epoll_event events[256];
    for (;;) {
        L.now = mono_ns();
        if (L.now >= stop_at || L.finished >= n)
            break;
        uint64_t left_ms = (stop_at - L.now) / 1000000 + 1;
        int timeout = L.paused ? 1 : (int)(left_ms < 50 ? left_ms : 50);
        int k = epoll_wait(L.epfd, events, 256, timeout);
        L.now = mono_ns();
        for (int i = 0; i < k; i++) {
            conn *c = events[i].data.ptr;
            if (c->dead)
                continue;
            if (events[i].events & EPOLLOUT)
                flush_out(&L, c);
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(&L, c);
        }
        if (L.paused)
            for (int i = 0; i < n && L.put_not_reserved < opt_backlog; i++)
                if (conns[i]->paused)
                    top_up(&L, conns[i]);
    }
    uint64_t end = L.now < stop_at ? L.now : stop_at;
    if (until_done)
        ph->secs = (double)(end - count_from) / 1e9;
    else
        ph->secs = end > count_from ? (double)(end - count_from) / 1e9 : 0;
    for (int i = 0; i < n; i++)
        if (!conns[i]->dead)
            epoll_ctl(L.epfd, EPOLL_CTL_DEL, conns[i]->fd, NULL);
    close(L.epfd);
}

static uint64_t secs_ns(double s) { return (uint64_t)(s * 1e9); }

/* timed phase: warm-up, then `opt_duration` seconds counted */
static void run_timed(conn **conns, int n, phase *ph)
{
    meter m = meter_start();
    uint64_t t0 = mono_ns();
    uint64_t from = t0 + secs_ns(opt_warmup);
    run(conns, n, ph, from, from + secs_ns(opt_duration), 0);
    meter_stop(m, ph);
}

/* untimed phase: runs until done, at most `limit` seconds */
static void run_until_done(conn **conns, int n, phase *ph, double limit)
{
    meter m = meter_start();
    uint64_t t0 = mono_ns();
    run(conns, n, ph, t0, t0 + secs_ns(limit), 1);
    meter_stop(m, ph);
}

/* ------------------------------------------------------------ request/response on one socket */

typedef struct {
    int fd;
    char buf[1 << 16];
    size_t len;
} blocking_conn;

/* send one request and wait for its reply; 0 on success */
static int ask(blocking_conn *b, const char *req, size_t n, reply *r)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(b->fd, req + off, n - off);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)w;
    }
    for (;;) {
        size_t used = b->len ? parse_reply(b->buf, b->len, r) : 0;
        if (used) {
            memmove(b->buf, b->buf + used, b->len - used);
            b->len -= used;
            return 0;
        }
        if (b->len == sizeof b->buf)
            return -1;
        ssize_t got = read(b->fd, b->buf + b->len, sizeof b->buf - b->len);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            return -1;
        }
        b->len += (size_t)got;
    }
}

/* put, reserve, delete on one connection, one request at a time */
static void latency_phase(int fd, const char *prefix)
{
    static char names[4][32];
    const char *suffix[4] = {"", ".put", ".reserve", ".delete"};
    phase *ph[4];
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "%s%s", prefix, suffix[i]);
        ph[i] = phase_new(names[i]);
    }
    blocking_conn *b = calloc(1, sizeof *b);
    b->fd = fd;
    meter m = meter_start();
    uint64_t t0 = mono_ns(), from = t0 + secs_ns(opt_warmup), until = from + secs_ns(opt_duration);
    uint64_t now = t0, last = from;
    reply r;
    char del[64];
    while (now < until) {
        uint64_t t[4];
        t[0] = mono_ns();
        if (ask(b, put_cmd, put_len, &r) || r.kind != K_INSERTED)
            goto broken;
        t[1] = mono_ns();
        if (ask(b, "reserve\r\n", 9, &r) || r.kind != K_RESERVED)
            goto broken;
        t[2] = mono_ns();
        int k = snprintf(del, sizeof del, "delete %llu\r\n", r.id);
        if (ask(b, del, (size_t)k, &r) || r.kind != K_DELETED)
            goto broken;
        t[3] = mono_ns();
        now = t[3];
        if (t[0] >= from && now <= until) {
            for (int i = 1; i < 4; i++) {
                uint64_t d = t[i] - t[i - 1];
                ph[0]->h.n[bucket_of(d)]++;
                ph[i]->h.n[bucket_of(d)]++;
                ph[i]->cmds++;
                ph[i]->count++;
            }
            ph[0]->cmds += 3;
            ph[0]->count += 3;
            last = now;
        }
    }
    goto done;
broken:
    ph[0]->errors++;
    fprintf(stderr, "loadgen: %s: request failed (%s)\n", prefix, strerror(errno));
done:
    for (int i = 0; i < 4; i++)
        ph[i]->secs = (double)(last - from) / 1e9;
    meter_stop(m, ph[0]);
    free(b);
}

/* ------------------------------------------------------------ idle connections */

/* Open `n` connections, at most opt_inflight handshakes at a time; each sends
 * use + watch + put and waits for the three replies.  Returns the fds (-1 for
 * a failed one). */
static int *open_idle(int n, phase *ph)
{
    int *fds = malloc(sizeof(int) * (size_t)n);
    int *owed = calloc((size_t)n, sizeof(int));       /* replies still owed; -1 connecting */
    char (*buf)[256] = calloc((size_t)n, 256);
    size_t *len = calloc((size_t)n, sizeof(size_t));
    for (int i = 0; i < n; i++)
        fds[i] = -1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int started = 0, ended = 0, active = 0;
    meter m = meter_start();
    uint64_t t0 = mono_ns(), deadline = t0 + secs_ns(opt_limit);
    struct epoll_event events[256];
    char *req = malloc(64 + put_len);
    while (ended < n && mono_ns() < deadline) {
        while (active < opt_inflight && started < n) {
            int i = started++;
            int fd = open_socket(1);
            if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
                close(fd);
                ph->errors++;
                ended++;
                continue;
            }
            fds[i] = fd;
            owed[i] = -1;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            active++;
        }
        int k = epoll_wait(ep, events, 256, 50);
        for (int e = 0; e < k; e++) {
            int i = (int)events[e].data.u32, fd = fds[i], bad = 0;
            if (owed[i] == -1) {
                int err = 0;
                socklen_t sl = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                int t = i % opt_tubes;
                /* one write: use, watch and the put */
                size_t req_len = (size_t)snprintf(req, 64, "use idle%d\r\nwatch idle%d\r\n", t, t);
                memcpy(req + req_len, put_cmd, put_len);
                req_len += put_len;
                if (err || write(fd, req, req_len) != (ssize_t)req_len) {
                    bad = 1;
                } else {
                    owed[i] = 3;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                }
            } else {
                ssize_t got = read(fd, buf[i] + len[i], sizeof buf[i] - len[i]);
                if (got <= 0) {
                    bad = got == 0 || (errno != EAGAIN && errno != EINTR);
                } else {
                    len[i] += (size_t)got;
                    size_t pos = 0, used;
                    reply r;
                    while ((used = parse_reply(buf[i] + pos, len[i] - pos, &r))) {
                        pos += used;
                        owed[i]--;
                        if (r.kind == K_OTHER)
                            ph->errors++;
                    }
                    memmove(buf[i], buf[i] + pos, len[i] - pos);
                    len[i] -= pos;
                    if (owed[i] <= 0) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                        active--;
                        ended++;
                        ph->count++;
                    }
                }
            }
            if (bad) {
                ph->errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                fds[i] = -1;
                active--;
                ended++;
            }
        }
    }
    ph->secs = (double)(mono_ns() - t0) / 1e9;
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0 && owed[i] != 0) {   /* unfinished at the deadline */
            close(fds[i]);
            fds[i] = -1;
            ph->errors++;
        }
    meter_stop(m, ph);
    close(ep);
    free(req);
    free(owed);
    free(buf);
    free(len);
    return fds;
}

/* ------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen -m put|prd|latency|idle|tubes|fill -p PORT [options]\n"
            "  -c N   connections (put, idle, tubes)        -P N  requests in flight per connection\n"
            "  -r N   prd producers    -k N  prd consumers  -B N  prd: most jobs put but not reserved\n"
            "  -n N   tubes (tubes, idle)  -I N  idle: handshakes in flight  -N N  fill: jobs\n"
            "  -s N   body bytes   -w S  warm-up seconds   -d S  counted seconds\n"
            "  -L S   limit for untimed phases (create, watch, setup, fill)\n"
            "  -S PID server process, for its CPU time per phase\n");
    exit(2);
}

static conn **connect_conns(int n, int role)
{
    conn **cs = calloc((size_t)(n ? n : 1), sizeof(conn *));
    for (int i = 0; i < n; i++)
        cs[i] = conn_new(connect_blocking(), role);
    return cs;
}

static void free_conns(conn **cs, int n)
{
    for (int i = 0; i < n; i++)
        conn_free(cs[i]);
    free(cs);
}

int main(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "m:p:c:P:r:k:B:n:I:N:s:w:d:L:S:h")) != -1) {
        switch (ch) {
        case 'm': opt_mode = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'c': opt_conns = atoi(optarg); break;
        case 'P': opt_depth = atoi(optarg); break;
        case 'r': opt_producers = atoi(optarg); break;
        case 'k': opt_consumers = atoi(optarg); break;
        case 'B': opt_backlog = atol(optarg); break;
        case 'n': opt_tubes = atoi(optarg); break;
        case 'I': opt_inflight = atoi(optarg); break;
        case 'N': opt_jobs = atol(optarg); break;
        case 's': opt_size = atoi(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'd': opt_duration = atof(optarg); break;
        case 'L': opt_limit = atof(optarg); break;
        case 'S': opt_server_pid = atoi(optarg); break;
        default: usage();
        }
    }
    if (opt_port <= 0 || opt_port > 65535 || opt_duration <= 0 || opt_duration > 600 ||
        opt_warmup < 0 || opt_warmup > 60 || opt_limit <= 0 || opt_limit > 600 ||
        opt_size < 0 || opt_size > (1 << 20) || opt_depth < 1 || opt_tubes < 1 || opt_inflight < 1)
        usage();
    signal(SIGPIPE, SIG_IGN);
    /* safety net: whatever happens, this process ends */
    alarm((unsigned)(3 * (opt_warmup + opt_duration) + 3 * opt_limit + 60));
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt_port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);   /* 127.0.0.1, never anything else */

    char head[64];
    int hl = snprintf(head, sizeof head, "put 0 0 120 %d\r\n", opt_size);
    put_len = (size_t)hl + (size_t)opt_size + 2;
    put_cmd = malloc(put_len);
    memcpy(put_cmd, head, (size_t)hl);
    memset(put_cmd + hl, 'x', (size_t)opt_size);
    memcpy(put_cmd + hl + opt_size, "\r\n", 2);

    /* connect first, then wait for the common start time */
    conn **cs = NULL;
    int ncs = 0, latency_fd = -1;
    if (!strcmp(opt_mode, "put")) {
        ncs = opt_conns;
        cs = connect_conns(ncs, ROLE_PUT);
    } else if (!strcmp(opt_mode, "prd")) {
        ncs = opt_producers + opt_consumers;
        cs = calloc((size_t)(ncs ? ncs : 1), sizeof(conn *));
        /* interleave producers and consumers */
        for (int i = 0, p = 0, k = 0; i < ncs; i++) {
            int producer = p < opt_producers && (k >= opt_consumers || (long)p * opt_consumers <= (long)k * opt_producers);
            cs[i] = conn_new(connect_blocking(), producer ? ROLE_PRODUCER : ROLE_CONSUMER);
            if (producer)
                p++;
            else
                k++;
        }
    } else if (!strcmp(opt_mode, "latency")) {
        latency_fd = connect_blocking();
    } else if (!strcmp(opt_mode, "fill")) {
        ncs = 1;
        cs = connect_conns(1, ROLE_FILL);
        cs[0]->total = opt_jobs;
    } else if (strcmp(opt_mode, "idle") && strcmp(opt_mode, "tubes")) {
        usage();
    }
    printf("READY\n");
    fflush(stdout);
    char line[128];
    if (!fgets(line, sizeof line, stdin))
        return 3;
    uint64_t start = secs_ns(atof(line));
    for (uint64_t now = mono_ns(); now < start; now = mono_ns()) {
        uint64_t wait = start - now;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
        nanosleep(&ts, NULL);
    }

    double cpu0 = self_cpu_s();
    uint64_t t0 = mono_ns();
    if (!strcmp(opt_mode, "put")) {
        run_timed(cs, ncs, phase_new("put"));
    } else if (!strcmp(opt_mode, "prd")) {
        run_timed(cs, ncs, phase_new("prd"));
    } else if (!strcmp(opt_mode, "latency")) {
        latency_phase(latency_fd, "latency");
        close(latency_fd);
    } else if (!strcmp(opt_mode, "fill")) {
        run_until_done(cs, 1, phase_new("fill"), opt_limit);
    } else if (!strcmp(opt_mode, "idle")) {
        phase *setup = phase_new("setup");
        int *fds = open_idle(opt_conns, setup);
        int probe = connect_blocking();
        latency_phase(probe, "probe");
        close(probe);
        ncs = 0;
        cs = calloc((size_t)opt_conns + 1, sizeof(conn *));
        for (int i = 0; i < opt_conns; i++)
            if (fds[i] >= 0)
                cs[ncs++] = conn_new(fds[i], ROLE_PUT);
        free(fds);
        opt_depth = 1;   /* one request at a time on every connection */
        run_timed(cs, ncs, phase_new("active"));
    } else { /* tubes */
        conn **one = connect_conns(1, ROLE_CREATE);
        one[0]->total = opt_tubes;
        run_until_done(one, 1, phase_new("create"), opt_limit);
        free_conns(one, 1);
        ncs = opt_conns;
        cs = connect_conns(ncs, ROLE_TUBE_PUT);
        run_timed(cs, ncs, phase_new("put"));
        one = connect_conns(1, ROLE_WATCH);
        one[0]->total = opt_tubes;
        run_until_done(one, 1, phase_new("watch"), opt_limit);
        one[0]->role = ROLE_DRAIN;
        one[0]->finished = 0;
        run_until_done(one, 1, phase_new("drain"), opt_duration);
        free_conns(one, 1);
    }
    double wall = (double)(mono_ns() - t0) / 1e9;
    print_results(self_cpu_s() - cpu0, wall);
    if (cs)
        free_conns(cs, ncs);
    return 0;
}
