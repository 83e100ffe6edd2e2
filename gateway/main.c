/*  berth-gateway: the HTTP edge. Registers on the bus like every service, and serves the
    REST API from a libmicrohttpd thread pool whose workers each own a Redis connection
    and a bus client. */
#include "gateway.h"

static const http_route_t s_routes[] = {
    { "GET", "/healthz", health_live },
    { "GET", "/readyz", health_ready },
    { "GET", "/v1/health", health_platform },
    { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
    service_t *service = service_new("gateway", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "http_bind", "127.0.0.1", 0);
    config_declare(c, "http_port", "8080", 0);
    config_declare(c, "http_threads", "4", 0);
    config_declare(c, "http_max_connections", "512", 0);
    config_declare(c, "http_per_ip_connections", "64", 0);
    config_declare(c, "http_timeout_s", "30", 0);
    config_declare(c, "http_body_max", "1048576", 0);
    config_declare(c, "admin_user", "admin", 0);
    config_declare(c, "admin_password", NULL, 1);

    int rc = 1;
    http_t *http = NULL;
    int64_t port, threads, maxconn, perip, timeout, body, redis_port;
    if (service_start(service) != 0)
        goto done;
    if (config_int(c, "http_port", 0, 65535, &port) || config_int(c, "http_threads", 1, 256, &threads)
        || config_int(c, "http_max_connections", 1, 100000, &maxconn)
        || config_int(c, "http_per_ip_connections", 1, 100000, &perip)
        || config_int(c, "http_timeout_s", 1, 3600, &timeout)
        || config_int(c, "http_body_max", 1024, 64 * 1024 * 1024, &body)
        || config_int(c, "redis_port", 1, 65535, &redis_port))
        goto done;
    char sender[192];
    snprintf(sender, sizeof sender, "gateway/%s", service_instance(service));
    http_options_t options = { .bind = config_get(c, "http_bind"),
                               .port = (int)port,
                               .threads = (int)threads,
                               .max_connections = (int)maxconn,
                               .per_ip_connections = (int)perip,
                               .timeout_s = (int)timeout,
                               .body_max = (size_t)body,
                               .redis_host = config_get(c, "redis_host"),
                               .redis_port = (int)redis_port,
                               .sender = sender };
    http = http_new(&options, s_routes, NULL);
    if (!http)
        goto done;
    log_info(NULL, "http listening", "{s:s, s:I}", "bind", options.bind, "port", (json_int_t)port);
    rc = service_run(service);
done:
    http_destroy(&http);
    service_destroy(&service);
    return rc;
}
