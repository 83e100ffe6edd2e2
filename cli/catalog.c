/*  berth templates, berth hosts: what can be asked for and where it can run. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

int cli_templates(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "group", 1, NULL, 0 }, { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0) {
        fprintf(stderr, "usage: berth templates [--group G]  (G: only what group G offers)\n");
        return 2;
    }
    char path[CLI_PATH_MAX + 32] = "/v1/templates", escaped[CLI_PATH_MAX];
    if (opts[0].set) {
        if (cli_escape(opts[0].value, escaped, sizeof escaped) != 0) {
            fprintf(stderr, "berth templates: group name too long\n");
            return 2;
        }
        snprintf(path, sizeof path, "/v1/templates?group=%s", escaped);
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table = cli_table_new(9, "NAME", "VCPUS", "RAM_MB", "DISK_GB", "OS", "IMAGE",
                                           "LEASE_DAYS", "APPROVAL", "ID");
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(body, "templates"), i, t) cli_table_add(
            table, T(t, "name"), T(t, "vcpus"), T(t, "ram_mb"), T(t, "disk_gb"), T(t, "os"),
            T(t, "image"), T(t, "lease_days"),
            json_is_true(json_object_get(t, "requires_approval")) ? "required" : "-", T(t, "id"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(body);
    return 0;
}

/* "used/capacity" of one resource of a host. */
static const char *s_used(json_t *host, const char *key, char *buf, size_t size)
{
    char used[64], cap[64];
    cli_text(json_object_get(json_object_get(host, "used"), key), used, sizeof used);
    cli_text(json_object_get(json_object_get(host, "capacity"), key), cap, sizeof cap);
    snprintf(buf, size, "%s/%s", used, cap);
    return buf;
}

/* The host's orphan domains, comma-separated ("-" when none). */
static const char *s_orphans(json_t *host, char *buf, size_t size)
{
    size_t i, at = 0;
    json_t *o;
    buf[0] = '\0';
    json_array_foreach(json_object_get(host, "orphans"), i, o)
    {
        int n = snprintf(buf + at, size - at, "%s%s", at ? "," : "", json_string_value(o) ?: "");
        if (n < 0 || (size_t)n >= size - at)
            break;
        at += (size_t)n;
    }
    return at ? buf : "-";
}

int cli_hosts(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    if (cli_parse(argc, argv, NULL, pos, 0, 0) != 0) {
        fprintf(stderr, "usage: berth hosts\n");
        return 2;
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", "/v1/hosts", NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table =
            cli_table_new(8, "NAME", "STATE", "VCPUS", "RAM_MB", "DISK_GB", "VMS", "ORPHANS", "ID");
        size_t i;
        json_t *h;
        char v[140], r[140], d[140], o[512];
        json_array_foreach(json_object_get(body, "hosts"), i, h)
            cli_table_add(table, T(h, "name"), T(h, "state"), s_used(h, "vcpus", v, sizeof v),
                          s_used(h, "ram_mb", r, sizeof r), s_used(h, "disk_gb", d, sizeof d),
                          T(h, "vms"), s_orphans(h, o, sizeof o), T(h, "id"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(body);
    return 0;
}

/* berth host maintenance HOST on|off: DISABLED (no new placements) or back to UP. */
int cli_host(cli_t *cli, int argc, char **argv)
{
    const char *pos[3];
    if (cli_parse(argc, argv, NULL, pos, 3, 3) != 0 || !streq(pos[0], "maintenance") ||
        (!streq(pos[2], "on") && !streq(pos[2], "off"))) {
        fprintf(stderr, "usage: berth host maintenance HOST on|off\n");
        return 2;
    }
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "hosts", pos[1]) != 0 ||
        strlen(path) + sizeof "/maintenance" > sizeof path) {
        fprintf(stderr, "berth host: host name too long\n");
        return 2;
    }
    strcat(path, "/maintenance");
    json_t *ask = json_pack("{s:b}", "enabled", streq(pos[2], "on"));
    json_t *body = NULL;
    int rc = ask ? cli_http(cli, "POST", path, ask, &body) : -1;
    json_decref(ask);
    if (rc != 0)
        return 1;
    json_t *host = json_object_get(body, "host");
    if (cli->json)
        cli_print_json(body);
    else
        printf("host %s is %s (maintenance %s)\n", json_string_value(json_object_get(host, "id")),
               json_string_value(json_object_get(host, "state")),
               json_is_true(json_object_get(host, "maintenance")) ? "on" : "off");
    json_decref(body);
    return 0;
}
