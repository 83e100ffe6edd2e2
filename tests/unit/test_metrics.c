/*  metrics: the text exposition format as Prometheus reads it (HELP, TYPE, escaped label
    values, cumulative histogram buckets), families found again by name, the series cap, and
    the listener answering GET /metrics and refusing the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Does text hold line as a whole line? */
static int s_has_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
            return 1;
    return 0;
}

static void test_counter_and_gauge(void **state)
{
    (void)state;
    metrics_family_t *c = metrics_counter("t_requests_total", "Requests\\seen\nby type", "type,code");
    assert_ptr_equal(metrics_counter("t_requests_total", "ignored", "type,code"), c);
    metrics_add(c, 1, "Ping", "OK");
    metrics_add(c, 2, "Ping", "OK");
    metrics_add(c, 1, "Say \"hi\"\n\\", NULL);
    metrics_family_t *g = metrics_gauge("t_depth", "Depth", NULL);
    metrics_set(g, 7);
    metrics_set(g, 5);
    char *text = metrics_render();
    assert_non_null(text);
    assert_true(s_has_line(text, "# HELP t_requests_total Requests\\\\seen\\nby type"));
    assert_true(s_has_line(text, "# TYPE t_requests_total counter"));
    assert_true(s_has_line(text, "t_requests_total{type=\"Ping\",code=\"OK\"} 3"));
    assert_true(s_has_line(text, "t_requests_total{type=\"Say \\\"hi\\\"\\n\\\\\",code=\"\"} 1"));
    assert_true(s_has_line(text, "# TYPE t_depth gauge"));
    assert_true(s_has_line(text, "t_depth 5"));
    /* Declaration order. */
    assert_true(strstr(text, "# TYPE t_requests_total") < strstr(text, "# TYPE t_depth"));
    /* Every process reports its CPU and memory. */
    assert_non_null(strstr(text, "\nprocess_cpu_seconds_total "));
    assert_non_null(strstr(text, "\nprocess_resident_memory_bytes "));
    free(text);
}

static void test_histogram(void **state)
{
    (void)state;
    metrics_family_t *h = metrics_histogram("t_seconds", "Latency", "route");
    metrics_observe(h, 0.0004, "/a"); /* first bucket */
    metrics_observe(h, 0.003, "/a");  /* le 0.005 */
    metrics_observe(h, 0.005, "/a");  /* le 0.005: bounds are inclusive */
    metrics_observe(h, 60, "/a");     /* only +Inf */
    char *text = metrics_render();
    assert_non_null(text);
    assert_true(s_has_line(text, "# TYPE t_seconds histogram"));
    assert_true(s_has_line(text, "t_seconds_bucket{route=\"/a\",le=\"0.0005\"} 1"));
    assert_true(s_has_line(text, "t_seconds_bucket{route=\"/a\",le=\"0.0025\"} 1"));
    assert_true(s_has_line(text, "t_seconds_bucket{route=\"/a\",le=\"0.005\"} 3"));
    assert_true(s_has_line(text, "t_seconds_bucket{route=\"/a\",le=\"10\"} 3"));
    assert_true(s_has_line(text, "t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4"));
    assert_true(s_has_line(text, "t_seconds_count{route=\"/a\"} 4"));
    assert_non_null(strstr(text, "\nt_seconds_sum{route=\"/a\"} 60.0084"));
    free(text);
}

static void test_series_cap(void **state)
{
    (void)state;
    metrics_family_t *c = metrics_counter("t_capped_total", "Capped", "id");
    char id[32];
    for (int i = 0; i < METRICS_SERIES_MAX + 5; i++) {
        snprintf(id, sizeof id, "%d", i);
        metrics_add(c, 1, id);
    }
    char *text = metrics_render();
    assert_non_null(text);
    snprintf(id, sizeof id, "t_capped_total{id=\"%d\"} 1", METRICS_SERIES_MAX - 1);
    assert_true(s_has_line(text, id));
    snprintf(id, sizeof id, "t_capped_total{id=\"%d\"} 1", METRICS_SERIES_MAX);
    assert_false(s_has_line(text, id));
    assert_true(s_has_line(text, "berth_metrics_dropped_total{family=\"t_capped_total\"} 5"));
    free(text);
}

/* One HTTP/1.0 exchange with the listener: the whole answer. */
static char *s_http(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    size_t size = 0, cap = 65536;
    char *out = malloc(cap);
    ssize_t n;
    while ((n = read(fd, out + size, cap - size - 1)) > 0) {
        size += (size_t)n;
        if (cap - size < 1024)
            out = realloc(out, cap *= 2);
    }
    out[size] = '\0';
    close(fd);
    return out;
}

static void test_listener(void **state)
{
    (void)state;
    /* A free port: bind one, let it go, serve there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    int port = ntohs(a.sin_port);
    close(fd);
    assert_int_equal(metrics_serve("127.0.0.1", port), 0);
    metrics_set(metrics_gauge("t_served", "Served", NULL), 42);
    char *r = s_http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(r, " 200 OK\r\n"));
    assert_non_null(strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert_non_null(strstr(r, "\nt_served 42\n"));
    free(r);
    r = s_http(port, "GET /other HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(r, " 404 "));
    free(r);
    r = s_http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    assert_non_null(strstr(r, " 405 "));
    assert_non_null(strstr(r, "Allow: GET, HEAD"));
    free(r);
    /* Stopped: nobody listens any more. */
    metrics_stop();
    fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons((uint16_t)port);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_listener),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
