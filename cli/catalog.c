/*  berth templates, berth hosts: what can be asked for and where it can run. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

int cli_templates(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    if (cli_parse(argc, argv, NULL, pos, 0, 0) != 0) {
        fprintf(stderr, "usage: berth templates\n");
        return 2;
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", "/v1/templates", NULL, &body) != 0)
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
            cli_table_new(7, "NAME", "STATE", "VCPUS", "RAM_MB", "DISK_GB", "VMS", "ID");
        size_t i;
        json_t *h;
        char v[140], r[140], d[140];
        json_array_foreach(json_object_get(body, "hosts"), i, h)
            cli_table_add(table, T(h, "name"), T(h, "state"), s_used(h, "vcpus", v, sizeof v),
                          s_used(h, "ram_mb", r, sizeof r), s_used(h, "disk_gb", d, sizeof d),
                          T(h, "vms"), T(h, "id"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(body);
    return 0;
}
