/*  bench-mhd: the gateway's baseline. A libmicrohttpd server started with exactly the daemon
    flags and options gateway/http.c uses (internal polling thread, epoll, thread pool,
    connection and per-IP limits, timeout, memory limit, completion callback) that answers
    every request with a fixed JSON body and the gateway's response headers. What the gateway
    adds on top of this is its own cost.

    bench-mhd port threads max_connections per_ip_connections timeout_s [body_bytes] */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *s_body;
static size_t s_body_len;

static enum MHD_Result s_access(void *cls, struct MHD_Connection *connection, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    /* Same two-step handshake as the gateway: first call sets up, the last one answers. */
    if (!*con_cls) {
        *con_cls = calloc(1, 64);
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    char *text = malloc(s_body_len + 1);
    if (!text)
        return MHD_NO;
    memcpy(text, s_body, s_body_len + 1);
    struct MHD_Response *response =
        MHD_create_response_from_buffer(s_body_len, text, MHD_RESPMEM_MUST_FREE);
    if (!response) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(response, "Content-Type", "application/json");
    MHD_add_response_header(response, "X-Request-Id", "00000000-0000-0000-0000-000000000000");
    MHD_add_response_header(response, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(connection, 200, response);
    MHD_destroy_response(response);
    return rc;
}

static void s_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)connection;
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: bench-mhd port threads max_connections per_ip timeout_s "
                        "[body_bytes]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    unsigned threads = (unsigned)atoi(argv[2]), maxconn = (unsigned)atoi(argv[3]),
             perip = (unsigned)atoi(argv[4]), timeout = (unsigned)atoi(argv[5]);
    size_t size = argc > 6 ? (size_t)atol(argv[6]) : 0;
    const char *fixed = "{\"status\":\"ok\"}";
    if (size < strlen(fixed) + 16)
        s_body = strdup(fixed);
    else {
        /* {"pad":"xxx...x"} of exactly size bytes */
        s_body = malloc(size + 1);
        if (!s_body)
            return 1;
        memset(s_body, 'x', size);
        memcpy(s_body, "{\"pad\":\"", 8);
        memcpy(s_body + size - 2, "\"}", 2);
        s_body[size] = '\0';
    }
    s_body_len = strlen(s_body);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    struct MHD_Daemon *daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, (uint16_t)port, NULL,
        NULL, s_access, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, maxconn,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, perip, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_NOTIFY_COMPLETED,
        s_completed, NULL, MHD_OPTION_END);
    if (!daemon) {
        fprintf(stderr, "bench-mhd: cannot listen on port %d\n", port);
        return 1;
    }
    printf("listening %d\n", port);
    fflush(stdout);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(daemon);
    free(s_body);
    return 0;
}
