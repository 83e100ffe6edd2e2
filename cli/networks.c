/*  berth networks, network show, network create, network delete: the networks VMs get
    addresses on (GET, POST and DELETE /v1/networks). Admins add and delete them; everyone
    reads them, with how many of each pool's addresses are in use. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] =
    "usage: berth network list | berth network show NETWORK | berth network delete NETWORK\n"
    "       berth network create NAME --cidr A.B.C.D/P --gateway IP [--dns IP,...]\n"
    "                            (--bridge BR | --libvirt-network NET) [--groups G,...]\n"
    "                            [--default]\n"
    "  NETWORK: id or name\n";

/* A JSON array of strings as "a, b" into buf ("-" when empty). */
static const char *s_join(json_t *items, char *buf, size_t size)
{
    size_t i, n = 0;
    json_t *it;
    buf[0] = '\0';
    json_array_foreach(items, i, it)
    {
        int w = snprintf(buf + n, size - n, "%s%s", i ? ", " : "",
                         json_string_value(it) ? json_string_value(it) : "");
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
    return buf[0] ? buf : "-";
}

/* Where a network attaches: "bridge BR" or "network NET". */
static const char *s_attach(json_t *net, char *buf, size_t size)
{
    const char *bridge = json_string_value(json_object_get(net, "bridge"));
    const char *lv = json_string_value(json_object_get(net, "libvirt_network"));
    if (bridge && *bridge)
        snprintf(buf, size, "bridge %s", bridge);
    else
        snprintf(buf, size, "network %s", lv ? lv : "-");
    return buf;
}

static void s_table(json_t *nets)
{
    cli_table_t *table = cli_table_new(9, "ID", "NAME", "CIDR", "GATEWAY", "DNS", "ATTACH",
                                       "DEFAULT", "IN_USE", "ADDRESSES");
    size_t i;
    json_t *n;
    char dns[256], attach[128];
    json_array_foreach(nets, i, n) cli_table_add(
        table, T(n, "id"), T(n, "name"), T(n, "cidr"), T(n, "gateway"),
        s_join(json_object_get(n, "dns"), dns, sizeof dns), s_attach(n, attach, sizeof attach),
        json_is_true(json_object_get(n, "is_default")) ? "yes" : "no", T(n, "allocated"),
        T(n, "addresses"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

/* One network: -o json/yaml as answered, else its fields one per line. */
static void s_show(cli_t *cli, json_t *answer)
{
    if (cli->json) {
        cli_print_json(answer);
        return;
    }
    static const char *const first[] = {
        "id",     "name",       "cidr",      "gateway",   "dns", "bridge", "libvirt_network",
        "groups", "is_default", "allocated", "addresses", NULL
    };
    json_t *n = json_deep_copy(json_object_get(answer, "network"));
    char buf[2048];
    if (n) {
        json_object_set_new(n, "dns",
                            json_string(s_join(json_object_get(n, "dns"), buf, sizeof buf)));
        json_object_set_new(n, "groups",
                            json_string(s_join(json_object_get(n, "groups"), buf, sizeof buf)));
        cli_print_object(n, first);
    }
    json_decref(n);
}

/* "a,b" as ["a", "b"]; NULL when too long. */
static json_t *s_list_arg(const char *text)
{
    json_t *out = json_array();
    char buf[4096];
    if (!out || util_strlcpy(buf, text, sizeof buf) != 0) {
        json_decref(out);
        return NULL;
    }
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save))
        json_array_append_new(out, json_string(p));
    return out;
}

static int s_create(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "cidr", 1, NULL, 0 },
                         { "gateway", 1, NULL, 0 },
                         { "dns", 1, NULL, 0 },
                         { "bridge", 1, NULL, 0 },
                         { "libvirt-network", 1, NULL, 0 },
                         { "groups", 1, NULL, 0 },
                         { "default", 0, NULL, 0 },
                         { NULL } };
    const char *pos[1] = { NULL };
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0 || !opts[0].set || !opts[1].set) {
        fputs(s_usage, stderr);
        return 2;
    }
    json_t *body = json_pack("{s:s, s:s, s:s}", "name", pos[0], "cidr", opts[0].value, "gateway",
                             opts[1].value);
    const char *lists[] = { NULL, NULL, "dns", NULL, NULL, "groups" }; /* by option */
    for (int i = 2; i <= 5; i++) {
        if (!opts[i].set)
            continue;
        if (lists[i]) {
            json_t *items = s_list_arg(opts[i].value);
            if (!items) {
                fprintf(stderr, "berth network create: --%s is too long\n", opts[i].name);
                json_decref(body);
                return 2;
            }
            json_object_set_new(body, lists[i], items);
        } else
            json_object_set_new(body, i == 3 ? "bridge" : "libvirt_network",
                                json_string(opts[i].value));
    }
    if (opts[6].set)
        json_object_set_new(body, "is_default", json_true());
    json_t *answer = NULL;
    int rc = cli_http(cli, "POST", "/v1/networks", body, &answer);
    json_decref(body);
    if (rc != 0)
        return 1;
    s_show(cli, answer);
    json_decref(answer);
    return 0;
}

/* berth network list | show NETWORK | create NAME ... | delete NETWORK (argv[0] "networks") */
int cli_networks(cli_t *cli, int argc, char **argv)
{
    static const cli_resource_t networks = { .noun = "network",
                                             .label = "network",
                                             .collection = "networks",
                                             .one = "network",
                                             .ref = "id",
                                             .make_verb = "create",
                                             .make = s_create,
                                             .show = s_show,
                                             .table = s_table,
                                             .usage = s_usage };
    return cli_resource(cli, &networks, argc, argv);
}
