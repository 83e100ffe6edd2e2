/*  metrics: families in a process-wide list (declaration order), each with its series in an
    array indexed by a hash of the joined label values; one mutex per family for its series,
    one for the list. The listener is a libmicrohttpd daemon with its own polling thread. */
#include "metrics.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <czmq.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_kind_t;
static const char *const s_kind_names[] = { "counter", "gauge", "histogram" };

/* Latency buckets, seconds. */
static const double s_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
#define S_BUCKETS (sizeof s_bounds / sizeof s_bounds[0])

#define S_VALUE_MAX 128 /* bytes of one label value kept */

typedef struct {
    char *values[METRICS_LABELS_MAX];
    double value;                /* counter, gauge; a histogram's sum */
    uint64_t count;              /* histogram: observations */
    uint64_t buckets[S_BUCKETS]; /* histogram: observations per bucket (not cumulative) */
} s_series_t;

struct _metrics_family_t {
    char *name;
    char *help;
    s_kind_t kind;
    int labels;
    char *label[METRICS_LABELS_MAX];
    pthread_mutex_t lock;
    zhashx_t *index; /* joined label values -> series (owned by items) */
    s_series_t **items;
    size_t count, cap;
    metrics_family_t *next;
};

static struct {
    pthread_mutex_t lock;
    metrics_family_t *first, *last;
    struct MHD_Daemon *daemon;
} s_reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

static metrics_family_t *s_dropped; /* berth_metrics_dropped_total */

static int s_name_ok(const char *name)
{
    if (!name || !*name || !(isalpha((unsigned char)*name) || *name == '_' || *name == ':'))
        return 0;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
            return 0;
    return 1;
}

static metrics_family_t *s_declare(s_kind_t kind, const char *name, const char *help,
                                   const char *labels)
{
    /* The label names, split. */
    char names[METRICS_LABELS_MAX][64];
    int n = 0;
    if (labels && *labels) {
        const char *p = labels;
        while (*p) {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (n == METRICS_LABELS_MAX || len == 0 || len >= sizeof names[0]) {
                log_error(NULL, "bad metric labels", "{s:s, s:s}", "metric", name, "labels",
                          labels);
                abort();
            }
            memcpy(names[n], p, len);
            names[n][len] = '\0';
            if (!s_name_ok(names[n]) || streq(names[n], "le")) {
                log_error(NULL, "bad metric label", "{s:s, s:s}", "metric", name, "label",
                          names[n]);
                abort();
            }
            n++;
            p += len + (end ? 1 : 0);
        }
    }
    if (!s_name_ok(name)) {
        log_error(NULL, "bad metric name", "{s:s}", "metric", name ? name : "");
        abort();
    }
    pthread_mutex_lock(&s_reg.lock);
    metrics_family_t *f = s_reg.first;
    while (f && !streq(f->name, name))
        f = f->next;
    if (f) {
        int same = f->kind == kind && f->labels == n;
        for (int i = 0; same && i < n; i++)
            same = streq(f->label[i], names[i]);
        pthread_mutex_unlock(&s_reg.lock);
        if (!same) {
            log_error(NULL, "metric declared twice, differently", "{s:s}", "metric", name);
            abort();
        }
        return f;
    }
    f = calloc(1, sizeof *f);
    if (f) {
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        f->kind = kind;
        f->labels = n;
        for (int i = 0; i < n; i++)
            f->label[i] = strdup(names[i]);
        f->index = zhashx_new();
        pthread_mutex_init(&f->lock, NULL);
    }
    if (!f || !f->name || !f->help || !f->index) {
        log_error(NULL, "out of memory", "{s:s}", "metric", name);
        abort();
    }
    if (s_reg.last)
        s_reg.last->next = f;
    else
        s_reg.first = f;
    s_reg.last = f;
    pthread_mutex_unlock(&s_reg.lock);
    /* A family without labels has its one series from the start: 0 until counted. */
    if (n == 0 && kind != S_HISTOGRAM)
        metrics_add(f, 0);
    return f;
}

metrics_family_t *metrics_counter(const char *name, const char *help, const char *labels)
{
    return s_declare(S_COUNTER, name, help, labels);
}

metrics_family_t *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return s_declare(S_GAUGE, name, help, labels);
}

metrics_family_t *metrics_histogram(const char *name, const char *help, const char *labels)
{
    return s_declare(S_HISTOGRAM, name, help, labels);
}

/* The series of the label values in ap, made when new; NULL when the family is full (or
   out of memory). Under f->lock. */
static s_series_t *s_series(metrics_family_t *f, va_list ap)
{
    const char *values[METRICS_LABELS_MAX];
    char key[METRICS_LABELS_MAX * (S_VALUE_MAX + 1) + 1];
    size_t len = 0;
    for (int i = 0; i < f->labels; i++) {
        const char *v = va_arg(ap, const char *);
        values[i] = v ? v : "";
        size_t vlen = strnlen(values[i], S_VALUE_MAX);
        memcpy(key + len, values[i], vlen);
        len += vlen;
        key[len++] = '\x1f';
    }
    key[len] = '\0';
    s_series_t *s = zhashx_lookup(f->index, key);
    if (s)
        return s;
    if (f->count == METRICS_SERIES_MAX)
        return NULL;
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        s_series_t **items = realloc(f->items, cap * sizeof *items);
        if (!items)
            return NULL;
        f->items = items;
        f->cap = cap;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    for (int i = 0; i < f->labels; i++)
        if (!(s->values[i] = strndup(values[i], S_VALUE_MAX))) {
            for (int j = 0; j < i; j++)
                free(s->values[j]);
            free(s);
            return NULL;
        }
    if (zhashx_insert(f->index, key, s) != 0) {
        for (int i = 0; i < f->labels; i++)
            free(s->values[i]);
        free(s);
        return NULL;
    }
    f->items[f->count++] = s;
    return s;
}

static void s_drop(metrics_family_t *f)
{
    if (!s_dropped)
        s_dropped =
            metrics_counter("berth_metrics_dropped_total",
                            "Updates dropped because a family had too many series", "family");
    if (f != s_dropped)
        metrics_add(s_dropped, 1, f->name);
}

typedef enum { S_ADD, S_SET, S_OBSERVE } s_op_t;

static void s_update(metrics_family_t *f, s_op_t op, double v, va_list ap)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    s_series_t *s = s_series(f, ap);
    if (s) {
        if (op == S_ADD)
            s->value += v;
        else if (op == S_SET)
            s->value = v;
        else {
            s->value += v;
            s->count++;
            size_t b = 0;
            while (b < S_BUCKETS && v > s_bounds[b])
                b++;
            if (b < S_BUCKETS)
                s->buckets[b]++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (!s)
        s_drop(f);
}

void metrics_add(metrics_family_t *family, double by, ...)
{
    va_list ap;
    va_start(ap, by);
    s_update(family, S_ADD, by, ap);
    va_end(ap);
}

void metrics_set(metrics_family_t *family, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    s_update(family, S_SET, value, ap);
    va_end(ap);
}

void metrics_observe(metrics_family_t *family, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    s_update(family, S_OBSERVE, value, ap);
    va_end(ap);
}

/* ---- rendering ---- */

/* text with \ and newline escaped, and " too when quote. */
static void s_escaped(FILE *out, const char *text, int quote)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", out);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '"' && quote)
            fputs("\\\"", out);
        else
            fputc(*p, out);
    }
}

/* v as the shortest decimal that reads back as v ("0.0034", not "0.0034069999999999999"). */
static void s_number(FILE *out, double v)
{
    if (isnan(v) || isinf(v)) {
        fputs(isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf", out);
        return;
    }
    char text[40];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(text, sizeof text, "%.*g", precision, v);
        if (strtod(text, NULL) == v)
            break;
    }
    fputs(text, out);
}

/* name{labels[,le="bound"]} */
static void s_series_name(FILE *out, const metrics_family_t *f, const char *suffix,
                          const s_series_t *s, const char *le)
{
    fprintf(out, "%s%s", f->name, suffix);
    if (f->labels == 0 && !le)
        return;
    fputc('{', out);
    for (int i = 0; i < f->labels; i++) {
        fprintf(out, "%s%s=\"", i ? "," : "", f->label[i]);
        s_escaped(out, s->values[i], 1);
        fputc('"', out);
    }
    if (le)
        fprintf(out, "%sle=\"%s\"", f->labels ? "," : "", le);
    fputc('}', out);
}

static void s_render_family(FILE *out, metrics_family_t *f)
{
    fprintf(out, "# HELP %s ", f->name);
    s_escaped(out, f->help, 0);
    fprintf(out, "\n# TYPE %s %s\n", f->name, s_kind_names[f->kind]);
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->count; i++) {
        const s_series_t *s = f->items[i];
        if (f->kind != S_HISTOGRAM) {
            s_series_name(out, f, "", s, NULL);
            fputc(' ', out);
            s_number(out, s->value);
            fputc('\n', out);
            continue;
        }
        uint64_t cumulative = 0;
        for (size_t b = 0; b < S_BUCKETS; b++) {
            char le[32];
            snprintf(le, sizeof le, "%g", s_bounds[b]);
            cumulative += s->buckets[b];
            s_series_name(out, f, "_bucket", s, le);
            fprintf(out, " %llu\n", (unsigned long long)cumulative);
        }
        s_series_name(out, f, "_bucket", s, "+Inf");
        fprintf(out, " %llu\n", (unsigned long long)s->count);
        s_series_name(out, f, "_sum", s, NULL);
        fputc(' ', out);
        s_number(out, s->value);
        fputc('\n', out);
        s_series_name(out, f, "_count", s, NULL);
        fprintf(out, " %llu\n", (unsigned long long)s->count);
    }
    pthread_mutex_unlock(&f->lock);
}

/* The process's CPU time and resident memory, as every Prometheus client reports them. */
static void s_process(void)
{
    static metrics_family_t *cpu, *rss;
    if (!cpu) {
        cpu = metrics_counter("process_cpu_seconds_total",
                              "User and system CPU time spent, in seconds", NULL);
        rss =
            metrics_gauge("process_resident_memory_bytes", "Resident memory size, in bytes", NULL);
    }
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[1024];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces) in parentheses. */
    const char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    long rss_pages = 0;
    if (p && sscanf(p + 2,
                    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                    "%*d %*u %*u %ld",
                    &utime, &stime, &rss_pages) == 3) {
        double ticks = (double)sysconf(_SC_CLK_TCK);
        metrics_set(cpu, (double)(utime + stime) / ticks);
        metrics_set(rss, (double)rss_pages * (double)sysconf(_SC_PAGESIZE));
    }
}

char *metrics_render(void)
{
    s_process();
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out)
        return NULL;
    pthread_mutex_lock(&s_reg.lock);
    for (metrics_family_t *f = s_reg.first; f; f = f->next)
        s_render_family(out, f);
    pthread_mutex_unlock(&s_reg.lock);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* ---- the listener ---- */

static enum MHD_Result s_reply(struct MHD_Connection *connection, unsigned status, const char *type,
                               char *body, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, mode);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(connection, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_answer(void *cls, struct MHD_Connection *connection, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    (void)upload;
    static int s_seen;
    if (!*state) { /* headers only so far: a body, if any, follows */
        *state = &s_seen;
        return MHD_YES;
    }
    if (*upload_size) { /* a body is not read: /metrics takes none */
        *upload_size = 0;
        return MHD_YES;
    }
    const char *text = "text/plain; charset=utf-8";
    if (!streq(method, "GET") && !streq(method, "HEAD"))
        return s_reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, text,
                       "method not allowed: GET /metrics\n", MHD_RESPMEM_PERSISTENT);
    if (!streq(url, "/metrics"))
        return s_reply(connection, MHD_HTTP_NOT_FOUND, text, "not found: GET /metrics\n",
                       MHD_RESPMEM_PERSISTENT);
    char *body = metrics_render();
    if (!body)
        return s_reply(connection, MHD_HTTP_SERVICE_UNAVAILABLE, text, "out of memory\n",
                       MHD_RESPMEM_PERSISTENT);
    return s_reply(connection, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body,
                   MHD_RESPMEM_MUST_FREE);
}

int metrics_serve(const char *host, int port)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0 || !res) {
        log_error(NULL, "metrics: cannot resolve the listen address", "{s:s, s:i, s:s}", "host",
                  host, "port", port, "reason", gai_strerror(rc));
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    pthread_mutex_lock(&s_reg.lock);
    if (!s_reg.daemon)
        s_reg.daemon = MHD_start_daemon(
            flags, (uint16_t)port, NULL, NULL, s_answer, NULL, MHD_OPTION_SOCK_ADDR, res->ai_addr,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)16, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
            MHD_OPTION_END);
    int ok = s_reg.daemon != NULL;
    pthread_mutex_unlock(&s_reg.lock);
    freeaddrinfo(res);
    if (!ok) {
        log_error(NULL, "metrics: cannot listen", "{s:s, s:i}", "host", host, "port", port);
        return -1;
    }
    log_info(NULL, "metrics served", "{s:s, s:i}", "host", host, "port", port);
    return 0;
}

void metrics_stop(void)
{
    pthread_mutex_lock(&s_reg.lock);
    struct MHD_Daemon *d = s_reg.daemon;
    s_reg.daemon = NULL;
    pthread_mutex_unlock(&s_reg.lock);
    if (d)
        MHD_stop_daemon(d);
}
