/*  metrics: a process's Prometheus metrics, and the HTTP listener that serves them.

    A family is a counter, a gauge or a histogram with a name, a help text and fixed label
    names; it holds one series per tuple of label values, made on first use. Families are
    declared by name (declaring an existing name again returns it, so a module may declare
    where it counts); any thread may update them. metrics_render writes the text exposition
    format 0.0.4; metrics_serve answers GET /metrics with it on a port of the process's own
    (libmicrohttpd, one thread of its own), never on the bus or the API. Label values are
    the caller's bounded vocabulary (message types, error codes, route patterns): never ids,
    user names or anything a client chooses; a family holds at most METRICS_SERIES_MAX
    series and counts what it had to drop in berth_metrics_dropped_total. */
#ifndef BERTH_METRICS_H
#define BERTH_METRICS_H

#include <stddef.h>

#define METRICS_LABELS_MAX 4    /* label names per family */
#define METRICS_SERIES_MAX 2000 /* label-value tuples per family */

typedef struct _metrics_family_t metrics_family_t;

/* Declare a family, or find the one of that name. labels: label names separated by commas
   ("type,code"), or NULL for none. Aborts on a bad name or a second declaration of a name
   with another kind or other labels (a programming error). */
metrics_family_t *metrics_counter(const char *name, const char *help, const char *labels);
metrics_family_t *metrics_gauge(const char *name, const char *help, const char *labels);
/* Buckets: upper bounds in seconds for latencies, 0.5 ms to 10 s. */
metrics_family_t *metrics_histogram(const char *name, const char *help, const char *labels);

/* The series of the label values that follow (one const char * per label, in order; NULL
   is written as ""): add to a counter or gauge, set a gauge, observe into a histogram. */
void metrics_add(metrics_family_t *family, double by, ...);
void metrics_set(metrics_family_t *family, double value, ...);
void metrics_observe(metrics_family_t *family, double value, ...);

/* Every family in the text exposition format, in declaration order. Free with free();
   NULL when out of memory. */
char *metrics_render(void);

/* Serve GET /metrics on host:port (port 1-65535). 0, or -1 (logged) when it cannot listen.
   Once per process; metrics_stop ends it. */
int metrics_serve(const char *host, int port);
void metrics_stop(void);

#endif
