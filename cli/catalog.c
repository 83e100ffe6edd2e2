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
        cli_table_t *table = cli_table_new(10, "NAME", "VCPUS", "RAM_MB", "DISK_GB", "OS", "IMAGE",
                                           "LEASE_DAYS", "APPROVAL", "POOL", "ID");
        size_t i;
        json_t *t;
        /* POOL: VMs of it kept built ahead (instant deploy). */
        json_array_foreach(json_object_get(body, "templates"), i, t)
            cli_table_add(table, T(t, "name"), T(t, "vcpus"), T(t, "ram_mb"), T(t, "disk_gb"),
                          T(t, "os"), T(t, "image"), T(t, "lease_days"),
                          json_is_true(json_object_get(t, "requires_approval")) ? "required" : "-",
                          T(t, "pool_size"), T(t, "id"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(body);
    return 0;
}

static const char s_create_usage[] =
    "usage: berth template create NAME --vcpus N --ram-mb N --disk-gb N --os OS --image IMAGE\n"
    "         [--lease-days N (30)] [--approval-policy P] [--max-lease-days N]\n"
    "         [--lease-notice-hours N] [--network NET]... [--disk linked|full] "
    "[--rebuild-on-loss]\n"
    "         [--hypervisor H]\n"
    "  (admins; P: auto, conditional, manager, admin, manager_then_admin; default auto;\n"
    "   H: the hypervisor its VMs need, e.g. qemu or test; default any)\n";

/* berth template create NAME ... (argv[0] "template", argv[1] "create"): POST /v1/templates.
   Numbers are checked here for shape only; the server checks every field and names it. */
int cli_template_create(cli_t *cli, int argc, char **argv)
{
    enum { VCPUS, RAM, DISK, LEASE, MAX_LEASE, NOTICE, OS, IMAGE, POLICY, MODE, REBUILD, HV };
    cli_opt_t opts[] = { [VCPUS] = { "vcpus", 1, NULL, 0 },
                         [RAM] = { "ram-mb", 1, NULL, 0 },
                         [DISK] = { "disk-gb", 1, NULL, 0 },
                         [LEASE] = { "lease-days", 1, NULL, 0 },
                         [MAX_LEASE] = { "max-lease-days", 1, NULL, 0 },
                         [NOTICE] = { "lease-notice-hours", 1, NULL, 0 },
                         [OS] = { "os", 1, NULL, 0 },
                         [IMAGE] = { "image", 1, NULL, 0 },
                         [POLICY] = { "approval-policy", 1, NULL, 0 },
                         [MODE] = { "disk", 1, NULL, 0 },
                         [REBUILD] = { "rebuild-on-loss", 0, NULL, 0 },
                         [HV] = { "hypervisor", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1] = { NULL };
    json_t *networks = json_array();
    int n_args = networks ? cli_take_all(argc - 1, argv + 1, "network", networks) : -1;
    if (n_args < 0 || cli_parse(n_args, argv + 1, opts, pos, 1, 1) != 0 || !opts[VCPUS].set ||
        !opts[RAM].set || !opts[DISK].set || !opts[OS].set || !opts[IMAGE].set) {
        fputs(s_create_usage, stderr);
        json_decref(networks);
        return 2;
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:I, s:b}", "name", pos[0], "os", opts[OS].value,
                             "image", opts[IMAGE].value, "lease_days", (json_int_t)30,
                             "rebuild_on_loss", opts[REBUILD].set);
    static const struct {
        int opt;
        const char *field;
    } numbers[] = { { VCPUS, "vcpus" },
                    { RAM, "ram_mb" },
                    { DISK, "disk_gb" },
                    { LEASE, "lease_days" },
                    { MAX_LEASE, "max_lease_days" },
                    { NOTICE, "lease_notice_hours" } };
    for (size_t i = 0; body && i < sizeof numbers / sizeof numbers[0]; i++) {
        int64_t v;
        if (!opts[numbers[i].opt].set)
            continue;
        if (util_parse_int(opts[numbers[i].opt].value, 0, INT64_MAX, &v) != 0) {
            fprintf(stderr, "berth template create: --%s must be a whole number\n",
                    opts[numbers[i].opt].name);
            json_decref(body);
            json_decref(networks);
            return 2;
        }
        json_object_set_new(body, numbers[i].field, json_integer(v));
    }
    static const struct {
        int opt;
        const char *field;
    } texts[] = { { POLICY, "approval_policy" }, { MODE, "disk" }, { HV, "hypervisor" } };
    for (size_t i = 0; body && i < sizeof texts / sizeof texts[0]; i++)
        if (opts[texts[i].opt].set)
            json_object_set_new(body, texts[i].field, json_string(opts[texts[i].opt].value));
    /* --network once per network, in order: one is its network, more its networks. */
    if (body && json_array_size(networks) == 1)
        json_object_set(body, "network", json_array_get(networks, 0));
    else if (body && json_array_size(networks) > 1)
        json_object_set(body, "networks", networks);
    json_decref(networks);
    json_t *answer = NULL;
    int rc = body ? cli_http(cli, "POST", "/v1/templates", body, &answer) : -1;
    json_decref(body);
    if (rc != 0)
        return 1;
    if (cli->json)
        cli_print_json(answer);
    else {
        static const char *const first[] = {
            "id",   "name",     "vcpus",      "ram_mb",          "disk_gb",    "os", "image",
            "disk", "networks", "lease_days", "approval_policy", "hypervisor", NULL
        };
        cli_print_object(json_object_get(answer, "template"), first);
    }
    json_decref(answer);
    return 0;
}

/* berth template pool TEMPLATE [SIZE]: GET /v1/templates/{id}/pool (admins, operators), or
   PUT it with SIZE (admins): how many VMs of the template are kept built ahead. */
int cli_template_pool(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { NULL } };
    const char *pos[2] = { NULL, NULL };
    char escaped[CLI_PATH_MAX], path[CLI_PATH_MAX + 32];
    int64_t size = 0;
    if (cli_parse(argc - 1, argv + 1, opts, pos, 1, 2) != 0 ||
        (pos[1] && util_parse_int(pos[1], 0, INT64_MAX, &size) != 0)) {
        fprintf(stderr, "usage: berth template pool TEMPLATE [SIZE]  (SIZE: a whole number; "
                        "admins set it, admins and operators read it)\n");
        return 2;
    }
    if (cli_escape(pos[0], escaped, sizeof escaped) != 0) {
        fprintf(stderr, "berth template pool: template name too long\n");
        return 2;
    }
    snprintf(path, sizeof path, "/v1/templates/%s/pool", escaped);
    json_t *body = pos[1] ? json_pack("{s:I}", "size", (json_int_t)size) : NULL;
    json_t *answer = NULL;
    int rc = cli_http(cli, pos[1] ? "PUT" : "GET", path, body, &answer);
    json_decref(body);
    if (rc != 0)
        return 1;
    if (cli->json)
        cli_print_json(answer);
    else {
        static const char *const first[] = { "name",     "template", "size", "ready",
                                             "building", "vms",      NULL };
        cli_print_object(json_object_get(answer, "pool"), first);
    }
    json_decref(answer);
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
