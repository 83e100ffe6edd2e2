/*  berth-gateway: the HTTP edge. Registers on the bus like every service, and serves the
    REST API from a libmicrohttpd thread pool whose workers each own a Redis connection;
    their bus calls go through one bus actor (calls.c) and never hold a worker. The service
    loop itself only heartbeats and, until it has succeeded, retries bootstrapping the admin
    user. HTTPS when http_tls_cert and http_tls_key are set;
    plain HTTP only on a loopback address. */
#include "gateway.h"
#include "user_record.h"

#include <errno.h>
#include <sodium.h>
#include <sys/stat.h>

/* Where the portal's files are when web_root is not set: the source tree's gateway/web (set
   by CMake), so a clone serves its own portal. */
#ifndef BERTH_WEB_ROOT
#define BERTH_WEB_ROOT "gateway/web"
#endif

/* Each route names its action: its row of the permission table (permissions.c). */
static const http_route_t s_routes[] = {
    { "GET", "/healthz", health_live, "health.read", NULL },
    { "GET", "/readyz", health_ready, "health.read", NULL },
    { "GET", "/v1/health", health_platform, "health.read", NULL },
    { "POST", "/v1/auth/tokens", auth_login, "auth.login", NULL },
    { "DELETE", "/v1/auth/tokens/current", auth_logout, "auth.logout", NULL },
    { "POST", "/v1/users", auth_create_user, "user.create", NULL },
    { "PATCH", "/v1/users/{name}", auth_update_user, "user.update", NULL },
    { "GET", "/v1/users", auth_list_users, "user.list", "limit marker state role name" },
    { "GET", "/v1/users/{name}", auth_get_user, "user.get", NULL },
    { "DELETE", "/v1/users/{name}", auth_delete_user, "user.delete", NULL },
    { "POST", "/v1/auth/password", auth_change_password, "auth.password", NULL },
    { "POST", "/v1/auth/keys", apikey_create, "apikey.create", NULL },
    { "GET", "/v1/auth/keys", apikey_list, "apikey.list", NULL },
    { "DELETE", "/v1/auth/keys/{id}", apikey_revoke, "apikey.revoke", NULL },
    { "POST", "/v1/keys", sshkeys_create, "sshkey.create", NULL },
    { "GET", "/v1/keys", sshkeys_list, "sshkey.list", NULL },
    { "GET", "/v1/keys/{name}", sshkeys_get, "sshkey.get", NULL },
    { "DELETE", "/v1/keys/{name}", sshkeys_delete, "sshkey.delete", NULL },
    { "GET", "/v1/templates", catalog_list_templates, "template.list", "group" },
    { "POST", "/v1/templates", catalog_create_template, "template.create", NULL },
    { "GET", "/v1/templates/{id}/pool", catalog_get_pool, "template.pool.get", NULL },
    { "PUT", "/v1/templates/{id}/pool", catalog_set_pool, "template.pool.set", NULL },
    { "POST", "/v1/images", images_import, "image.import",
      "name os os_version arch applications min_ram_mb min_disk_gb" },
    { "GET", "/v1/images", images_list, "image.list", "kind" },
    { "GET", "/v1/images/{id}", images_get, "image.get", NULL },
    { "DELETE", "/v1/images/{id}", images_delete, "image.delete", NULL },
    { "POST", "/v1/images/{id}/stage", images_stage, "image.stage", NULL },
    { "POST", "/v1/networks", networks_create, "network.create", NULL },
    { "GET", "/v1/networks", networks_list, "network.list", NULL },
    { "GET", "/v1/networks/{id}", networks_get, "network.get", NULL },
    { "DELETE", "/v1/networks/{id}", networks_delete, "network.delete", NULL },
    { "GET", "/v1/hosts", catalog_list_hosts, "host.list", NULL },
    { "GET", "/v1/hosts/{id}", catalog_get_host, "host.get", NULL },
    { "POST", "/v1/hosts/{id}/maintenance", catalog_host_maintenance, "host.maintenance", NULL },
    { "POST", "/v1/requests", requests_create, "request.create", "validate_only" },
    { "GET", "/v1/requests/{id}", requests_get, "request.get", NULL },
    { "GET", "/v1/requests", requests_list, "request.list", "limit marker state owner group kind" },
    { "POST", "/v1/requests/{id}/approve", requests_approve, "request.approve", NULL },
    { "POST", "/v1/requests/{id}/reject", requests_reject, "request.reject", NULL },
    { "POST", "/v1/onboarding", requests_onboard, "onboarding.create", NULL },
    { "GET", "/v1/vms", vms_list, "vm.list", "limit marker state owner host name group" },
    { "GET", "/v1/vms/{id}", vms_get, "vm.get", NULL },
    { "GET", "/v1/vms/{id}/charges", charge_vm_get, "vm.get", "from to" },
    { "DELETE", "/v1/vms/{id}", vms_dispose, "vm.dispose", "force" },
    { "POST", "/v1/vms/{id}/actions", vms_action, "vm.action", NULL },
    { "POST", "/v1/vms/{id}/capture", vms_capture, "vm.capture", NULL },
    { "POST", "/v1/vms/{id}/lease", vms_extend_lease, "vm.extend", NULL },
    { "GET", "/v1/tasks/{id}", vms_get_task, "task.get", NULL },
    { "POST", "/v1/tasks/{id}/abort", vms_task_abort, "task.abort", NULL },
    { "POST", "/v1/tasks/{id}/retry", vms_task_retry, "task.retry", NULL },
    { "POST", "/v1/tasks/{id}/force-fail", vms_task_force_fail, "task.force_fail", NULL },
    { "GET", "/v1/events", events_stream, "event.stream", "since" },
    { "GET", "/v1/usage", vms_usage, "usage.read", "from to owner group" },
    { "POST", "/v1/rates", charge_create_rate, "rate.create", NULL },
    { "GET", "/v1/rates", charge_list_rates, "rate.list", NULL },
    { "GET", "/v1/rates/{id}", charge_get_rate, "rate.get", NULL },
    { "GET", "/v1/chargeback", charge_report_get, "chargeback.read", "group from to by" },
    { "GET", "/v1/audit", trail_list, "audit.read",
      "actor target group action from to limit marker" },
    { "POST", "/v1/groups", groups_create, "group.create", NULL },
    { "GET", "/v1/groups", groups_list, "group.list", "limit marker name parent" },
    { "GET", "/v1/groups/{id}", groups_get, "group.get", NULL },
    { "PATCH", "/v1/groups/{id}", groups_update, "group.update", NULL },
    { "DELETE", "/v1/groups/{id}", groups_delete, "group.delete", NULL },
    { "GET", "/v1/groups/{id}/members", groups_list_members, "group.members.list", "limit marker" },
    { "POST", "/v1/groups/{id}/members", groups_add_member, "group.members.change", NULL },
    { "PUT", "/v1/groups/{id}/members/{user}", groups_set_role, "group.members.change", NULL },
    { "DELETE", "/v1/groups/{id}/members/{user}", groups_remove_member, "group.members.change",
      NULL },
    { "POST", "/v1/groups/{id}/allocations", groups_allocate, "group.allocate", NULL },
    { "GET", "/v1/groups/{id}/capacity", groups_capacity, "group.capacity", NULL },
    { "PUT", "/v1/groups/{id}/reservations", groups_set_reservations, "group.reservations.set",
      NULL },
    { "PUT", "/v1/groups/{id}/webhook", groups_set_webhook, "group.webhook.set", NULL },
    { "DELETE", "/v1/groups/{id}/webhook", groups_clear_webhook, "group.webhook.set", NULL },
    { "GET", "/v1/groups/{id}/budget", charge_budget_get, "budget.get", NULL },
    { "PUT", "/v1/groups/{id}/budget", charge_budget_set, "budget.set", NULL },
    { "DELETE", "/v1/groups/{id}/budget", charge_budget_clear, "budget.set", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

/* http_options_t.fallback: the portal's files. */
static void s_web(http_req_t *req)
{
    gateway_t *gw = req->app;
    web_serve(gw->web, req);
}

/* Load the portal from web_root. Set by the operator, it must load; the default (the source
   tree's gateway/web, where `make run` and the tests find it) may be absent in an install
   that sets none: then the API runs without a portal, said once in the log. */
static int s_web_load(config_t *c, gateway_t *gw)
{
    const char *root = config_get(c, "web_root");
    int set = !streq(config_origin(c, "web_root"), "default");
    struct stat sb;
    if (!set && (!root || stat(root, &sb) != 0)) {
        log_warn(NULL, "no portal: the default web_root does not exist (set web_root)", "{s:s}",
                 "web_root", root ? root : "");
        return 0;
    }
    gw->web = root ? web_new(root) : NULL;
    if (!gw->web)
        return -1;
    log_info(NULL, "portal loaded", "{s:s, s:I}", "web_root", root, "files",
             (json_int_t)web_count(gw->web));
    return 0;
}
/* Query flags that make a route's call another action of the permission table: a forced
   disposal (the VM's host is gone) is for admins and operators only. */
/* Routes whose body is streamed to their handler instead of gathered (http_stream_t). */
static const http_stream_t s_streams[] = {
    { "POST", "/v1/images", images_upload_begin, images_upload_data, images_upload_end,
      images_upload_release },
    { NULL, NULL, NULL, NULL, NULL, NULL },
};

static const http_flag_t s_flags[] = {
    { "DELETE", "/v1/vms/{id}", "force", "vm.force_dispose" },
    { NULL, NULL, NULL, NULL },
};

/* The admin bootstrap, retried on the service loop until Redis has taken it. */
typedef struct {
    gateway_t *gw;
    const char *user;
    const char *password;
    int done;
} s_bootstrap_t;

static int s_bootstrap(service_t *service, void *arg)
{
    s_bootstrap_t *boot = arg;
    if (!boot->done)
        boot->done =
            auth_bootstrap(boot->gw, service_store(service), boot->user, boot->password) == 0;
    return 0;
}

static int s_health(service_t *service, void *arg)
{
    (void)arg;
    health_refresh(service_store(service));
    return 0;
}

/* The rate limits: per client address and per user, each a token bucket of `burst`
   requests refilled at `per_s` a second (0: no limit of that kind), in tables of
   rate_table_entries buckets. -1 (logged) when a setting is out of range. */
static int s_rate_limits(config_t *c, ratelimit_t **address, ratelimit_t **user)
{
    int64_t addr_rate, addr_burst, user_rate, user_burst, entries;
    if (config_int(c, "rate_address_per_s", 0, 10000000, &addr_rate) ||
        config_int(c, "rate_address_burst", 1, 10000000, &addr_burst) ||
        config_int(c, "rate_user_per_s", 0, 10000000, &user_rate) ||
        config_int(c, "rate_user_burst", 1, 10000000, &user_burst) ||
        config_int(c, "rate_table_entries", 8, 16777216, &entries))
        return -1;
    if (addr_rate &&
        !(*address = ratelimit_new((size_t)entries, (double)addr_rate, (double)addr_burst)))
        return -1;
    if (user_rate &&
        !(*user = ratelimit_new((size_t)entries, (double)user_rate, (double)user_burst)))
        return -1;
    return 0;
}

/* The PEM file at path as a new string; NULL (logged) when it cannot be read or is too
   large to be a certificate or key. */
static char *s_read_pem(const char *setting, const char *path)
{
    enum { PEM_MAX = 1024 * 1024 };
    FILE *f = fopen(path, "re");
    char *text = f ? malloc(PEM_MAX + 1) : NULL;
    size_t n = text ? fread(text, 1, PEM_MAX + 1, f) : 0;
    int bad = !f || !text || ferror(f) || n == 0 || n > PEM_MAX;
    int err = errno;
    if (f)
        fclose(f);
    if (bad) {
        log_error(NULL, "cannot read a TLS file", "{s:s, s:s, s:s}", "setting", setting, "path",
                  path, "reason",
                  !f            ? strerror(err)
                  : n > PEM_MAX ? "larger than 1 MiB"
                  : n == 0      ? "empty"
                                : "read error");
        free(text);
        return NULL;
    }
    text[n] = '\0';
    return text;
}

/* Read the gateway's settings into gw; -1 (logged) when one is out of range. */
static int s_settings(service_t *service, gateway_t *gw)
{
    config_t *c = service_config(service);
    int64_t call_timeout, calls_per_service, ttl, cache, host_cache, down, list_default, list_max,
        scan_max, pw_min, pw_max, window_days, groups_cache, catalog_cache, fail_user, fail_address,
        fail_window, key_days, key_days_max, keys_max, ssh_keys_max, upload_max, upload_chunk;
    if (config_int(c, "http_call_timeout_ms", 100, 600000, &call_timeout) ||
        config_int(c, "http_calls_per_service", 1, 100000, &calls_per_service) ||
        config_int(c, "token_ttl_s", 60, 366LL * 24 * 3600, &ttl) ||
        config_int(c, "token_cache_ms", 0, 60000, &cache) ||
        config_int(c, "groups_cache_ms", 0, 60000, &groups_cache) ||
        config_int(c, "catalog_cache_ms", 0, 60000, &catalog_cache) ||
        config_int(c, "host_cache_ms", 0, 60000, &host_cache) ||
        config_int(c, "list_limit_default", 1, 10000, &list_default) ||
        config_int(c, "list_limit_max", 1, 10000, &list_max) ||
        config_int(c, "list_scan_max", 1, 10000000, &scan_max) ||
        config_int(c, "password_min_length", 1, 1024, &pw_min) ||
        config_int(c, "password_max_length", 8, 65536, &pw_max) ||
        config_int(c, "usage_window_max_days", 1, 36500, &window_days) ||
        config_int(c, "login_fail_user_max", 1, 1000000, &fail_user) ||
        config_int(c, "login_fail_address_max", 1, 1000000, &fail_address) ||
        config_int(c, "login_fail_window_s", 1, 86400, &fail_window) ||
        config_int(c, "apikey_days_max", 1, LIMIT_APIKEY_DAYS_MAX, &key_days_max) ||
        config_int(c, "apikey_days_default", 1, LIMIT_APIKEY_DAYS_MAX, &key_days) ||
        config_int(c, "apikeys_per_user_max", 1, 10000, &keys_max) ||
        config_int(c, "ssh_keys_per_user_max", 1, LIMIT_SSH_KEYS_PER_USER, &ssh_keys_max) ||
        config_int(c, "image_upload_max_bytes", 1, LIMIT_IMAGE_UPLOAD_MAX, &upload_max) ||
        config_int(c, "image_upload_chunk_bytes", TRANSFER_CHUNK_MIN, TRANSFER_CHUNK_MAX,
                   &upload_chunk))
        return -1;
    gw->upload_max_bytes = upload_max;
    gw->upload_chunk_bytes = upload_chunk;
    if (key_days > key_days_max) {
        log_error(NULL, "apikey_days_default must not exceed apikey_days_max", NULL);
        return -1;
    }
    /* A host is DOWN after three missed heartbeats unless configured otherwise. */
    if (!config_get(c, "host_down_ms"))
        down = 3LL * service_heartbeat_ms(service);
    else if (config_int(c, "host_down_ms", 100, 86400000, &down))
        return -1;
    if (list_default > list_max || pw_min > pw_max) {
        log_error(NULL,
                  "list_limit_default must not exceed list_limit_max, nor "
                  "password_min_length password_max_length",
                  NULL);
        return -1;
    }
    gw->call_timeout_ms = (int)call_timeout;
    gw->calls_per_service = (int)calls_per_service;
    gw->token_ttl_ms = ttl * 1000;
    gw->token_cache_ms = cache;
    gw->groups_cache_ms = groups_cache;
    gw->catalog_cache_ms = catalog_cache;
    gw->host_down_ms = down;
    gw->host_cache_ms = host_cache;
    gw->list_default = (int)list_default;
    gw->list_max = (int)list_max;
    gw->scan_max = (int)scan_max;
    gw->password_min = (int)pw_min;
    gw->password_max = (int)pw_max;
    gw->usage_window_max_ms = window_days * 24 * 3600 * 1000;
    gw->login_user_max = (int)fail_user;
    gw->login_address_max = (int)fail_address;
    gw->login_window_ms = fail_window * 1000;
    gw->apikey_days_default = (int)key_days;
    gw->apikey_days_max = (int)key_days_max;
    gw->apikeys_per_user_max = (int)keys_max;
    gw->ssh_keys_per_user_max = (int)ssh_keys_max;
    return 0;
}

int main(int argc, char **argv)
{
    service_t *service = service_new("gateway", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "http_bind", "127.0.0.1", 0);
    config_declare(c, "http_port", "8080", 0);
    config_declare(c, "http_threads", "4", 0);
    config_declare(c, "http_max_connections", "400", 0);
    config_declare(c, "http_per_ip_connections", "64", 0);
    config_declare(c, "http_timeout_s", "30", 0);
    config_declare(c, "http_header_timeout_ms", "5000", 0);
    config_declare(c, "http_body_timeout_ms", "10000", 0);
    /* Image uploads (POST /v1/images, application/octet-stream): the largest file taken, and
       the chunks it is sent to the stager in. */
    config_declare(c, "image_upload_max_bytes", "274877906944", 0);
    config_declare(c, "image_upload_chunk_bytes", "1048576", 0);
    config_declare(c, "rate_address_per_s", "20000", 0);
    config_declare(c, "rate_address_burst", "20000", 0);
    config_declare(c, "rate_user_per_s", "20000", 0);
    config_declare(c, "rate_user_burst", "20000", 0);
    config_declare(c, "rate_table_entries", "16384", 0);
    config_declare(c, "http_body_max", "1048576", 0);
    config_declare(c, "http_call_timeout_ms", "5000", 0);
    config_declare(c, "http_calls_per_service", "256", 0);
    config_declare(c, "http_tls_cert", NULL, 0); /* PEM certificate (chain): HTTPS when set */
    config_declare(c, "http_tls_key", NULL, 0);  /* its PEM private key */
    /* The portal's static files (HTML, CSS, JavaScript modules), read once at start. */
    config_declare(c, "web_root", BERTH_WEB_ROOT, 0);
    config_declare(c, "admin_user", "admin", 0);
    config_declare(c, "admin_password", NULL, 1);
    config_declare(c, "token_ttl_s", "86400", 0);
    config_declare(c, "token_cache_ms", "1000", 0);
    /* A membership change made through another gateway instance reaches this one's checks
       within this long (0: at once; one made here holds at once). */
    config_declare(c, "groups_cache_ms", "1000", 0);
    /* The template catalog is rendered once and reused this long at most (0: read on every
       listing); a template.* event on the stream or a template created here drops it at once. */
    config_declare(c, "catalog_cache_ms", "1000", 0);
    /* Failed sign-ins per username and per client address in a window, then 429 until the
       window ends (counted in Redis: every gateway instance sees the same counts). */
    config_declare(c, "login_fail_user_max", "5", 0);
    config_declare(c, "login_fail_address_max", "20", 0);
    config_declare(c, "login_fail_window_s", "60", 0);
    /* API keys: lifetime when not asked for, longest asked for, and most held per user. */
    config_declare(c, "apikey_days_default", "90", 0);
    config_declare(c, "apikey_days_max", "366", 0);
    config_declare(c, "apikeys_per_user_max", "20", 0);
    /* SSH public keys one user keeps (at most LIMIT_SSH_KEYS_PER_USER). */
    config_declare(c, "ssh_keys_per_user_max", "16", 0);
    config_declare(c, "password_min_length", "8", 0);
    config_declare(c, "password_max_length", "1024", 0);
    config_declare(c, "host_down_ms", NULL, 0);
    config_declare(c, "host_cache_ms", "250", 0);
    config_declare(c, "list_limit_default", "50", 0);
    config_declare(c, "list_limit_max", "500", 0);
    config_declare(c, "list_scan_max", "10000", 0);
    config_declare(c, "usage_window_max_days", "366", 0);
    /* The audit trail (berth:audit): records waiting for the writer at most (past it they are
       dropped, counted and logged), sent per round trip at most, and the retention: entries
       kept at most and days kept at most (0: no bound), applied every audit_trim_every_ms. */
    config_declare(c, "audit_queue_max", "10000", 0);
    config_declare(c, "audit_batch_max", "256", 0);
    config_declare(c, "audit_max_entries", "1000000", 0);
    config_declare(c, "audit_retention_days", "90", 0);
    config_declare(c, "audit_trim_every_ms", "10000", 0);
    /* Live event streams (GET /v1/events): a keepalive comment this often, streams open at
       once per gateway, per bearer token and per client address (then 429), bytes waiting
       for one client before it is dropped as too slow, how often open streams' tokens,
       users and group roles are checked again, and the reconnect delay asked of clients. */
    config_declare(c, "events_keepalive_s", "15", 0);
    config_declare(c, "events_max_streams", "200", 0);
    config_declare(c, "events_per_token", "4", 0);
    config_declare(c, "events_per_address", "32", 0);
    config_declare(c, "events_queue_max", "262144", 0);
    config_declare(c, "events_check_ms", "5000", 0);
    config_declare(c, "events_retry_ms", "2000", 0);

    int rc = 1;
    http_t *http = NULL;
    ratelimit_t *rate_address = NULL, *rate_user = NULL;
    char *tls_cert = NULL, *tls_key = NULL;
    gateway_t gw = { 0 };
    int64_t port, threads, maxconn, perip, timeout, header_timeout, body_timeout, body, redis_port;
    if (service_start(service) != 0)
        goto done;
    if (config_int(c, "http_port", 0, 65535, &port) ||
        config_int(c, "http_threads", 1, 256, &threads) ||
        config_int(c, "http_max_connections", 1, 100000, &maxconn) ||
        config_int(c, "http_per_ip_connections", 1, 100000, &perip) ||
        config_int(c, "http_timeout_s", 1, 3600, &timeout) ||
        config_int(c, "http_header_timeout_ms", 100, 3600000, &header_timeout) ||
        config_int(c, "http_body_timeout_ms", 100, 3600000, &body_timeout) ||
        config_int(c, "http_body_max", 1024, 64 * 1024 * 1024, &body) ||
        config_int(c, "redis_port", 1, 65535, &redis_port) || s_settings(service, &gw))
        goto done;
    if (maxconn > threads * HTTP_THREAD_CONNECTIONS_CAP) {
        log_error(NULL, "http_max_connections may be at most 112 per http thread", "{s:I, s:I}",
                  "http_max_connections", (json_int_t)maxconn, "http_threads", (json_int_t)threads);
        goto done;
    }

    const char *admin_user = config_get(c, "admin_user");
    const char *admin_password = config_get(c, "admin_password");
    if (!auth_username_ok(admin_user)) {
        log_error(NULL, "admin_user is not a valid user name", "{s:s}", "admin_user",
                  admin_user ? admin_user : "");
        goto done;
    }
    if (!admin_password || strlen(admin_password) < (size_t)gw.password_min ||
        strlen(admin_password) > (size_t)gw.password_max) {
        log_error(NULL,
                  "admin_password must be set (BERTH_ADMIN_PASSWORD) and satisfy "
                  "password_min_length and password_max_length",
                  "{s:i, s:i}", "password_min_length", gw.password_min, "password_max_length",
                  gw.password_max);
        goto done;
    }
    if (auth_init(&gw, config_get(c, "secrets_dir")) != 0 ||
        s_rate_limits(c, &rate_address, &rate_user) != 0)
        goto done;
    /* User records carry a MAC only the gateway can make: it brings older records to that
       layout (lib/user_record.h) before the admin is checked or any request is served. */
    if (user_record_migrate(service_store(service), gw.user_key, service_instance(service),
                            30000) != 0)
        goto done;
    berth_error_t key_error = { 0 };
    gw.signer = assertion_signer_new(config_get(c, "secrets_dir"), &key_error);
    if (!gw.signer) {
        log_error(NULL, "cannot load the user assertion key", "{s:s}", "reason", key_error.message);
        goto done;
    }
    const char *cert_path = config_get(c, "http_tls_cert"),
               *key_path = config_get(c, "http_tls_key");
    if (!cert_path != !key_path) {
        log_error(NULL, "http_tls_cert and http_tls_key go together: set both for HTTPS", NULL);
        goto done;
    }
    gw.tls = cert_path != NULL;
    if (cert_path && (!(tls_cert = s_read_pem("http_tls_cert", cert_path)) ||
                      !(tls_key = s_read_pem("http_tls_key", key_path))))
        goto done;

    char sender[192];
    snprintf(sender, sizeof sender, "gateway/%s", service_instance(service));
    http_options_t options = { .bind = config_get(c, "http_bind"),
                               .port = (int)port,
                               .threads = (int)threads,
                               .max_connections = (int)maxconn,
                               .per_ip_connections = (int)perip,
                               .timeout_s = (int)timeout,
                               .header_timeout_ms = (int)header_timeout,
                               .body_timeout_ms = (int)body_timeout,
                               .body_max = (size_t)body,
                               .redis_host = config_get(c, "redis_host"),
                               .redis_port = (int)redis_port,
                               .secrets_dir = config_get(c, "secrets_dir"),
                               .tls_cert_pem = tls_cert,
                               .tls_key_pem = tls_key,
                               .authenticate = auth_authenticate,
                               .rate_address = rate_address,
                               .rate_user = rate_user };
    /* The admin exists before the first request can ask for a token (when Redis is up;
       otherwise the loop keeps trying). */
    s_bootstrap_t boot = { .gw = &gw, .user = admin_user, .password = admin_password };
    s_bootstrap(service, &boot);
    health_refresh(service_store(service));
    gw.calls = calls_new(options.redis_host, options.redis_port, options.secrets_dir, sender,
                         service_auth(service));
    if (!gw.calls)
        goto done;
    int64_t aq, ab, amax, adays, atrim;
    if (config_int(c, "audit_queue_max", 1, 10000000, &aq) ||
        config_int(c, "audit_batch_max", 1, 100000, &ab) ||
        config_int(c, "audit_max_entries", 0, INT64_MAX / 2, &amax) ||
        config_int(c, "audit_retention_days", 0, 36500, &adays) ||
        config_int(c, "audit_trim_every_ms", 10, 86400000, &atrim))
        goto done;
    audit_log_options_t audit = { .redis_host = options.redis_host,
                                  .redis_port = options.redis_port,
                                  .secrets_dir = options.secrets_dir,
                                  .queue_max = (size_t)aq,
                                  .batch_max = (size_t)ab,
                                  .max_entries = amax,
                                  .retention_ms = adays * 24 * 3600 * 1000,
                                  .trim_every_ms = (int)atrim };
    gw.audit = audit_log_new(&audit);
    if (!gw.audit)
        goto done;
    int64_t ek, emax, etok, eaddr, equeue, echeck, eretry;
    if (config_int(c, "events_keepalive_s", 1, 3600, &ek) ||
        config_int(c, "events_max_streams", 0, 100000, &emax) ||
        config_int(c, "events_per_token", 1, 100000, &etok) ||
        config_int(c, "events_per_address", 1, 100000, &eaddr) ||
        config_int(c, "events_queue_max", 4096, 1024LL * 1024 * 1024, &equeue) ||
        config_int(c, "events_check_ms", 100, 3600000, &echeck) ||
        config_int(c, "events_retry_ms", 0, 3600000, &eretry))
        goto done;
    /* A stream holds its connection for good: streams must leave room for every other client. */
    /* The default leaves half the connections to other clients when there are few. */
    if (emax >= maxconn && streq(config_origin(c, "events_max_streams"), "default"))
        emax = maxconn / 2;
    if (emax >= maxconn) {
        log_error(NULL, "events_max_streams must be below http_max_connections", "{s:I, s:I}",
                  "events_max_streams", (json_int_t)emax, "http_max_connections",
                  (json_int_t)maxconn);
        goto done;
    }
    events_options_t eo = { .redis_host = options.redis_host,
                            .redis_port = options.redis_port,
                            .secrets_dir = options.secrets_dir,
                            .keepalive_ms = (int)ek * 1000,
                            .max_streams = (int)emax,
                            .per_token = (int)etok,
                            .per_address = (int)eaddr,
                            .queue_max = (size_t)equeue,
                            .check_ms = (int)echeck,
                            .retry_ms = (int)eretry };
    gw.events = events_new(&eo);
    if (!gw.events)
        goto done;
    if (s_web_load(c, &gw) != 0)
        goto done;
    options.fallback = s_web;
    options.done = trail_done;
    options.flags = s_flags;
    options.streams = s_streams;
    http = http_new(&options, s_routes, &gw);
    if (!http)
        goto done;
    log_info(NULL, "http listening", "{s:s, s:I, s:s}", "bind", options.bind, "port",
             (json_int_t)port, "scheme", tls_cert ? "https" : "http");
    service_every(service, 2000, s_bootstrap, &boot);
    service_every(service, HEALTH_REFRESH_MS, s_health, NULL);
    rc = service_run(service);
done:
    /* Calls in flight end first (their requests answer 503), so no connection is left
       suspended when the HTTP server stops; the actor goes last. */
    calls_stop(gw.calls);
    events_stop(gw.events); /* streams end: none is left suspended */
    http_destroy(&http);
    events_destroy(&gw.events); /* after the HTTP server: its responses held the clients */
    calls_destroy(&gw.calls);
    web_destroy(&gw.web);         /* after the HTTP server: responses point into its files */
    audit_log_destroy(&gw.audit); /* after the HTTP server: every record is queued */
    health_cleanup();
    ratelimit_destroy(&rate_address);
    ratelimit_destroy(&rate_user);
    if (tls_key)
        sodium_memzero(tls_key, strlen(tls_key));
    free(tls_key);
    free(tls_cert);
    auth_cleanup(&gw);
    assertion_destroy(&gw.signer);
    service_destroy(&service);
    return rc;
}
