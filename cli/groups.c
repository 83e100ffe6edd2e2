/*  berth groups: groups and their members (GET/POST/PATCH/DELETE /v1/groups...). A group is
    named by its id or its name; what the caller may do is the gateway's permission table
    (admins create, change and delete groups; a group's managers manage its members). */
#include "cli.h"

#include <sodium.h>

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] =
    "usage: berth groups [list] [--name N] [--parent G] [--limit N] [--marker ID]\n"
    "       berth groups show G\n"
    "       berth groups create NAME [--cost-centre C] [--description D] [--parent G]\n"
    "                               [--quota-vms N] [--quota-vcpus N] [--quota-ram-mb N]\n"
    "                               [--quota-disk-gb N] [--user-quota-vms N] (and -vcpus,\n"
    "                               -ram-mb, -disk-gb: each member's limit in the group)\n"
    "                               [--approval-policy P] [--auto-max-vcpus N]\n"
    "                               [--auto-max-ram-mb N]  (P: auto, conditional, manager,\n"
    "                               admin, manager_then_admin)\n"
    "                               [--charging-model allocation|reservation]\n"
    "                               [--auto-growth-max-vms N] (and -vcpus, -ram-mb, -disk-gb:\n"
    "                               how far `berth allocate` grows the quota without an admin)\n"
    "                               [--templates T1,T2] (the templates its members may\n"
    "                               request; '' for every template)\n"
    "                               [--max-lease-days N] [--max-extensions N]\n"
    "                               [--lease-notice-hours N]  (lease policy: beyond it an\n"
    "                               extension waits for approval; 0: the platform's)\n"
    "       berth groups update G [the options of create] [--version V]  (--parent '' moves\n"
    "                               it to the top)\n"
    "                               [--webhook-url URL [--webhook-secret-stdin]] |\n"
    "                               [--webhook-clear]  where the group's lease notices and\n"
    "                               alerts are POSTed, signed with the secret (read from\n"
    "                               stdin; omitted: the one set stays); managers may set it\n"
    "       berth groups delete G\n"
    "       berth groups members G\n"
    "       berth groups add-member G USER --role member|manager|auditor\n"
    "       berth groups set-role G USER --role member|manager|auditor\n"
    "       berth groups remove-member G USER\n"
    "       berth groups reserve G HOST:VCPUS,RAM_MB,DISK_GB ... | --clear\n"
    "                               the group's reservations become these (HOST: id or\n"
    "                               name; '*' or empty for any host), e.g.\n"
    "                               berth groups reserve eng host-1:2,4096,20 '*:0,2048,0'\n"
    "       berth groups capacity G  what the group may still use: quota left, free on the\n"
    "                               hosts (less other groups' reservations), largest VM\n";

static int s_bad_usage(void)
{
    fputs(s_usage, stderr);
    return 2;
}

static void s_groups_table(json_t *groups)
{
    cli_table_t *table =
        cli_table_new(6, "NAME", "COST CENTRE", "PARENT", "QUOTA VMS", "DESCRIPTION", "ID");
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
        cli_table_add(table, T(g, "name"), T(g, "cost_centre"), T(g, "parent"),
                      T(json_object_get(g, "quota"), "vms"), T(g, "description"), T(g, "id"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

/* Print a {"group": ...} answer. */
static void s_print_group(cli_t *cli, json_t *body)
{
    static const char *const first[] = {
        "id",      "name",       "cost_centre", "description",     "parent",
        "quota",   "user_quota", "usage",       "approval_policy", "reservations",
        "templates", "webhook",  "version",     NULL
    };
    if (cli->json)
        cli_print_json(body);
    else
        cli_print_object(json_object_get(body, "group"), first);
}

/* /v1/groups/<g escaped><rest> into path. -1 (said) when too long. */
static int s_group_path(char *path, size_t size, const char *group, const char *rest)
{
    char id[CLI_PATH_MAX];
    if (cli_path(id, sizeof id, "groups", group) != 0 ||
        snprintf(path, size, "%s%s", id, rest) >= (int)size) {
        fprintf(stderr, "berth groups: group name too long\n");
        return -1;
    }
    return 0;
}

static int s_list(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "name", 1, NULL, 0 },
                         { "parent", 1, NULL, 0 },
                         { "limit", 1, NULL, 0 },
                         { "marker", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0)
        return s_bad_usage();
    char path[2048] = "/v1/groups", value[512];
    const char *sep = "?";
    for (int i = 0; opts[i].name; i++) {
        if (!opts[i].set)
            continue;
        size_t len = strlen(path);
        if (cli_escape(opts[i].value, value, sizeof value) != 0 ||
            snprintf(path + len, sizeof path - len, "%s%s=%s", sep, opts[i].name, value) >=
                (int)(sizeof path - len)) {
            fprintf(stderr, "berth groups: --%s too long\n", opts[i].name);
            return 2;
        }
        sep = "&";
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        s_groups_table(json_object_get(body, "groups"));
        const char *next = json_string_value(json_object_get(body, "next_marker"));
        if (next)
            printf("more: berth groups list --marker %s\n", next);
    }
    json_decref(body);
    return 0;
}

/* The fields of create and update from their options into a new body; NULL (said) when a
   number does not parse. */
static json_t *s_fields(cli_opt_t *opts)
{
    json_t *body = json_object(), *quotas[3] = { json_object(), json_object(), json_object() };
    static const char *const texts[][2] = { { "cost-centre", "cost_centre" },
                                            { "description", "description" },
                                            { "parent", "parent" },
                                            { "approval-policy", "approval_policy" },
                                            { "charging-model", "charging_model" } };
    /* option, field, which quota: 0 the group's, 1 each member's (user_quota), 2 the most it
       grows to without an admin (auto_growth_max) */
    static const struct {
        const char *option, *field;
        int which;
    } numbers[] = { { "quota-vms", "vms", 0 },
                    { "quota-vcpus", "vcpus", 0 },
                    { "quota-ram-mb", "ram_mb", 0 },
                    { "quota-disk-gb", "disk_gb", 0 },
                    { "user-quota-vms", "vms", 1 },
                    { "user-quota-vcpus", "vcpus", 1 },
                    { "user-quota-ram-mb", "ram_mb", 1 },
                    { "user-quota-disk-gb", "disk_gb", 1 },
                    { "auto-growth-max-vms", "vms", 2 },
                    { "auto-growth-max-vcpus", "vcpus", 2 },
                    { "auto-growth-max-ram-mb", "ram_mb", 2 },
                    { "auto-growth-max-disk-gb", "disk_gb", 2 } };
    int bad = !body || !quotas[0] || !quotas[1] || !quotas[2];
    for (cli_opt_t *o = opts; o->name && !bad; o++) {
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
            if (o->set && streq(o->name, texts[i][0]))
                json_object_set_new(body, texts[i][1], json_string(o->value));
        for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
            int64_t n;
            if (!o->set || !streq(o->name, numbers[i].option))
                continue;
            if (util_parse_int(o->value, 0, INT64_MAX, &n) != 0) {
                fprintf(stderr, "berth groups: --%s takes a number of 0 or more\n", o->name);
                bad = 1;
                break;
            }
            json_object_set_new(quotas[numbers[i].which], numbers[i].field, json_integer(n));
        }
        /* Top-level numbers: the conditional policy's size for approval at once, and the
           lease policy (0: the platform's setting). */
        static const char *const tops[][2] = { { "auto-max-vcpus", "auto_max_vcpus" },
                                               { "auto-max-ram-mb", "auto_max_ram_mb" },
                                               { "max-lease-days", "max_lease_days" },
                                               { "max-extensions", "max_extensions" },
                                               { "lease-notice-hours", "lease_notice_hours" } };
        for (size_t i = 0; o->set && i < sizeof tops / sizeof *tops; i++) {
            int64_t n;
            if (!streq(o->name, tops[i][0]))
                continue;
            if (util_parse_int(o->value, 0, INT64_MAX, &n) != 0) {
                fprintf(stderr, "berth groups: --%s takes a number of 0 or more\n", o->name);
                bad = 1;
            } else
                json_object_set_new(body, tops[i][1], json_integer(n));
        }
        /* --templates a,b: the names the group offers ('' for every template) */
        if (o->set && streq(o->name, "templates")) {
            json_t *names = json_array();
            for (const char *t = o->value; names && *t;) {
                size_t len = strcspn(t, ",");
                if (len > 0)
                    json_array_append_new(names, json_stringn(t, len));
                t += len + (t[len] == ',');
            }
            json_object_set_new(body, "templates", names);
        }
        if (o->set && streq(o->name, "version")) {
            int64_t v;
            if (util_parse_int(o->value, 1, INT64_MAX, &v) != 0) {
                fprintf(stderr, "berth groups: --version takes a number of 1 or more\n");
                bad = 1;
            } else
                json_object_set_new(body, "version", json_integer(v));
        }
    }
    if (!bad && json_object_size(quotas[0]))
        json_object_set(body, "quota", quotas[0]);
    if (!bad && json_object_size(quotas[1]))
        json_object_set(body, "user_quota", quotas[1]);
    if (!bad && json_object_size(quotas[2]))
        json_object_set(body, "auto_growth_max", quotas[2]);
    json_decref(quotas[0]);
    json_decref(quotas[1]);
    json_decref(quotas[2]);
    if (bad) {
        json_decref(body);
        return NULL;
    }
    return body;
}

/* The options of create and update (update adds --version). */
#define S_FIELD_OPTS(...)                                                                          \
    {                                                                                              \
        { "cost-centre", 1, NULL, 0 }, { "description", 1, NULL, 0 }, { "parent", 1, NULL, 0 },    \
            { "quota-vms", 1, NULL, 0 }, { "quota-vcpus", 1, NULL, 0 },                            \
            { "quota-ram-mb", 1, NULL, 0 }, { "quota-disk-gb", 1, NULL, 0 },                       \
            { "user-quota-vms", 1, NULL, 0 }, { "user-quota-vcpus", 1, NULL, 0 },                  \
            { "user-quota-ram-mb", 1, NULL, 0 }, { "user-quota-disk-gb", 1, NULL, 0 },             \
            { "approval-policy", 1, NULL, 0 }, { "auto-max-vcpus", 1, NULL, 0 },                   \
            { "auto-max-ram-mb", 1, NULL, 0 }, { "charging-model", 1, NULL, 0 },                   \
            { "auto-growth-max-vms", 1, NULL, 0 }, { "auto-growth-max-vcpus", 1, NULL, 0 },        \
            { "auto-growth-max-ram-mb", 1, NULL, 0 }, { "auto-growth-max-disk-gb", 1, NULL, 0 },   \
            { "templates", 1, NULL, 0 }, { "max-lease-days", 1, NULL, 0 },                         \
            { "max-extensions", 1, NULL, 0 },                                                      \
            { "lease-notice-hours", 1, NULL, 0 }, __VA_ARGS__                                      \
    }

static int s_create(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = S_FIELD_OPTS({ NULL });
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0)
        return s_bad_usage();
    json_t *ask = s_fields(opts), *body = NULL;
    if (!ask)
        return 2;
    json_object_set_new(ask, "name", json_string(pos[0]));
    int rc = cli_http(cli, "POST", "/v1/groups", ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    s_print_group(cli, body);
    json_decref(body);
    return 0;
}

/* The webhook options of update: PUT /v1/groups/{G}/webhook {url[, secret]} or DELETE it.
   0 and *body_p, 1 (the call failed, said), 2 (said). */
static int s_webhook(cli_t *cli, const char *group, const char *url, int secret_stdin, int clear,
                     json_t **body_p)
{
    char path[CLI_PATH_MAX + 64], secret[512] = "";
    if (s_group_path(path, sizeof path, group, "/webhook") != 0)
        return 2;
    if (secret_stdin && cli_secret(1, "Webhook secret: ", secret, sizeof secret) != 0) {
        fprintf(stderr, "berth groups: --webhook-secret-stdin: no secret on stdin\n");
        return 2;
    }
    json_t *ask = NULL;
    if (!clear) {
        ask = json_pack("{s:s}", "url", url);
        if (ask && *secret)
            json_object_set_new(ask, "secret", json_string(secret));
    }
    sodium_memzero(secret, sizeof secret);
    int rc = cli_http(cli, clear ? "DELETE" : "PUT", path, ask, body_p);
    json_decref(ask);
    return rc != 0 ? 1 : 0;
}

static int s_update(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = S_FIELD_OPTS({ "version", 1, NULL, 0 }, { "webhook-url", 1, NULL, 0 },
                                    { "webhook-secret-stdin", 0, NULL, 0 },
                                    { "webhook-clear", 0, NULL, 0 }, { NULL });
    const char *pos[1];
    char path[CLI_PATH_MAX + 64];
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0)
        return s_bad_usage();
    const char *url = NULL;
    int secret_stdin = 0, clear = 0;
    for (cli_opt_t *o = opts; o->name; o++) {
        if (o->set && streq(o->name, "webhook-url"))
            url = o->value;
        secret_stdin |= o->set && streq(o->name, "webhook-secret-stdin");
        clear |= o->set && streq(o->name, "webhook-clear");
    }
    if ((clear && (url || secret_stdin)) || (secret_stdin && !url))
        return s_bad_usage(); /* a URL (and its secret), or --webhook-clear */
    if (s_group_path(path, sizeof path, pos[0], "") != 0)
        return 2;
    json_t *ask = s_fields(opts), *body = NULL;
    if (!ask)
        return 2;
    /* The group's fields (an admin's PATCH), then its webhook (its managers' too). */
    int rc = 0;
    if (json_object_size(ask) > 0 || (!url && !clear))
        rc = cli_http(cli, "PATCH", path, ask, &body) != 0 ? 1 : 0;
    json_decref(ask);
    if (rc == 0 && (url || clear)) {
        json_decref(body);
        body = NULL;
        rc = s_webhook(cli, pos[0], url, secret_stdin, clear, &body);
    }
    if (rc != 0)
        return rc;
    s_print_group(cli, body);
    json_decref(body);
    return 0;
}

/* show and delete: one group, its answer printed. */
static int s_one(cli_t *cli, int argc, char **argv, const char *method)
{
    const char *pos[1];
    char path[CLI_PATH_MAX + 64];
    if (cli_parse(argc, argv, NULL, pos, 1, 1) != 0)
        return s_bad_usage();
    if (s_group_path(path, sizeof path, pos[0], "") != 0)
        return 2;
    json_t *body = NULL;
    if (cli_http(cli, method, path, NULL, &body) != 0)
        return 1;
    if (streq(method, "DELETE") && !cli->json)
        printf("deleted group %s\n", T(json_object_get(body, "group"), "name"));
    else
        s_print_group(cli, body);
    json_decref(body);
    return 0;
}

static int s_members(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    char path[CLI_PATH_MAX + 64];
    if (cli_parse(argc, argv, NULL, pos, 1, 1) != 0)
        return s_bad_usage();
    if (s_group_path(path, sizeof path, pos[0], "/members") != 0)
        return 2;
    json_t *all = cli_get_all(cli, path, 500, "members");
    int rc = all ? 0 : 1;
    if (rc == 0 && cli->json) {
        json_t *doc = json_pack("{s:O, s:n}", "members", all, "next_marker");
        cli_print_json(doc);
        json_decref(doc);
    } else if (rc == 0) {
        cli_table_t *table = cli_table_new(2, "USER", "ROLE");
        size_t i;
        json_t *m;
        json_array_foreach(all, i, m) cli_table_add(table, T(m, "user"), T(m, "role"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(all);
    return rc;
}

/* add-member, set-role, remove-member. */
static int s_member(cli_t *cli, int argc, char **argv, const char *method)
{
    cli_opt_t opts[] = { { "role", 1, NULL, 0 }, { NULL } };
    const char *pos[2];
    int needs_role = !streq(method, "DELETE");
    char path[CLI_PATH_MAX + 700], user[512], rest[600];
    if (cli_parse(argc, argv, needs_role ? opts : NULL, pos, 2, 2) != 0 ||
        needs_role != opts[0].set)
        return s_bad_usage();
    if (cli_escape(pos[1], user, sizeof user) != 0) {
        fprintf(stderr, "berth groups: user name too long\n");
        return 2;
    }
    snprintf(rest, sizeof rest, streq(method, "POST") ? "/members" : "/members/%s", user);
    if (s_group_path(path, sizeof path, pos[0], rest) != 0)
        return 2;
    json_t *ask = NULL, *body = NULL;
    if (streq(method, "POST"))
        ask = json_pack("{s:s, s:s}", "user", pos[1], "role", opts[0].value);
    else if (needs_role)
        ask = json_pack("{s:s}", "role", opts[0].value);
    int rc = cli_http(cli, method, path, ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    json_t *m = json_object_get(body, "member");
    if (cli->json)
        cli_print_json(body);
    else if (streq(method, "DELETE"))
        printf("removed %s from group %s\n", T(m, "user"), pos[0]);
    else
        printf("%s is %s of group %s\n", T(m, "user"), T(m, "role"), pos[0]);
    json_decref(body);
    return 0;
}

/* ---- reservations (reserve) ---- */

#define S_RESERVE_MAX 32 /* reservations one group may hold (LIMIT_RESERVATIONS_MAX) */

json_t *cli_reservation(const char *arg)
{
    const char *colon = strrchr(arg, ':');
    long long v[3];
    char end;
    if (!colon || sscanf(colon + 1, "%lld,%lld,%lld%c", &v[0], &v[1], &v[2], &end) != 3 ||
        v[0] < 0 || v[1] < 0 || v[2] < 0 || v[0] > INT32_MAX) {
        fprintf(stderr, "berth: '%s' is not HOST:VCPUS,RAM_MB,DISK_GB\n", arg);
        return NULL;
    }
    size_t len = (size_t)(colon - arg);
    int any = len == 0 || (len == 1 && arg[0] == '*');
    json_t *host = any ? json_null() : json_stringn(arg, len);
    return json_pack("{s:o, s:I, s:I, s:I}", "host", host, "vcpus", (json_int_t)v[0], "ram_mb",
                     (json_int_t)v[1], "disk_gb", (json_int_t)v[2]);
}

/* Print a group's reservations as a table. */
static void s_reservations_table(json_t *group)
{
    cli_table_t *table = cli_table_new(7, "HOST", "VCPUS", "RAM MB", "DISK GB", "USED VCPUS",
                                       "USED RAM MB", "USED DISK GB");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(group, "reservations"), i, r)
    {
        json_t *used = json_object_get(r, "used");
        cli_table_add(table, json_is_string(json_object_get(r, "host")) ? T(r, "host") : "(any)",
                      T(r, "vcpus"), T(r, "ram_mb"), T(r, "disk_gb"), T(used, "vcpus"),
                      T(used, "ram_mb"), T(used, "disk_gb"));
    }
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

/* berth groups reserve G SPEC... | --clear: PUT /v1/groups/{G}/reservations. */
static int s_reserve(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "clear", 0, NULL, 0 }, { NULL } };
    const char *pos[1 + S_RESERVE_MAX] = { 0 };
    char path[CLI_PATH_MAX + 64];
    if (cli_parse(argc, argv, opts, pos, 1, 1 + S_RESERVE_MAX) != 0)
        return s_bad_usage();
    int given = 0;
    while (given < S_RESERVE_MAX && pos[1 + given])
        given++;
    if (opts[0].set == (given > 0))
        return s_bad_usage(); /* either specs or --clear */
    if (s_group_path(path, sizeof path, pos[0], "/reservations") != 0)
        return 2;
    json_t *list = json_array();
    for (int i = 0; i < given; i++) {
        json_t *r = cli_reservation(pos[1 + i]);
        if (!r) {
            json_decref(list);
            return 2;
        }
        json_array_append_new(list, r);
    }
    json_t *ask = json_pack("{s:o}", "reservations", list), *body = NULL;
    int rc = cli_http(cli, "PUT", path, ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else
        s_reservations_table(json_object_get(body, "group"));
    json_decref(body);
    return 0;
}

/* berth groups capacity G: GET /v1/groups/{G}/capacity as a table, one row a resource. */
static int s_capacity(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    char path[CLI_PATH_MAX + 64];
    if (cli_parse(argc, argv, (cli_opt_t[]){ { NULL } }, pos, 1, 1) != 0)
        return s_bad_usage();
    if (s_group_path(path, sizeof path, pos[0], "/capacity") != 0)
        return 2;
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    if (cli->json) {
        cli_print_json(body);
        json_decref(body);
        return 0;
    }
    json_t *c = json_object_get(body, "capacity");
    static const char *const names[] = { "vms", "vcpus", "ram_mb", "disk_gb" };
    static const char *const columns[] = { "quota", "used", "left", "free", "largest", "usable" };
    cli_table_t *table = cli_table_new(7, "RESOURCE", "QUOTA", "USED", "LEFT", "FREE ON HOSTS",
                                       "LARGEST VM", "USABLE");
    for (int i = 0; i < 4; i++) {
        char cell[6][32];
        for (int k = 0; k < 6; k++) {
            json_t *part = json_object_get(c, columns[k]);
            json_t *v = json_object_get(part, names[i]);
            /* a null quota or left: no limit; vms: hosts have no VM count */
            snprintf(cell[k], sizeof cell[k], "%s",
                     json_is_integer(v)   ? T(part, names[i])
                     : json_is_null(part) ? "no limit"
                                          : "-");
        }
        cli_table_add(table, names[i], cell[0], cell[1], cell[2], cell[3], cell[4], cell[5]);
    }
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
    printf("hosts taking placements: %s\n", T(c, "hosts"));
    if (json_array_size(json_object_get(c, "reservations")) > 0)
        s_reservations_table(c);
    json_decref(body);
    return 0;
}

int cli_groups(cli_t *cli, int argc, char **argv)
{
    /* "berth groups" and "berth groups --name x" list; otherwise argv[1] is the command,
       which then sees itself as argv[0]. */
    if (argc < 2 || argv[1][0] == '-')
        return s_list(cli, argc, argv);
    const char *sub = argv[1];
    argc--;
    argv++;
    if (streq(sub, "help")) {
        fputs(s_usage, stdout);
        return 0;
    }
    if (streq(sub, "list"))
        return s_list(cli, argc, argv);
    if (streq(sub, "show"))
        return s_one(cli, argc, argv, "GET");
    if (streq(sub, "delete"))
        return s_one(cli, argc, argv, "DELETE");
    if (streq(sub, "create"))
        return s_create(cli, argc, argv);
    if (streq(sub, "update"))
        return s_update(cli, argc, argv);
    if (streq(sub, "members"))
        return s_members(cli, argc, argv);
    if (streq(sub, "add-member"))
        return s_member(cli, argc, argv, "POST");
    if (streq(sub, "set-role"))
        return s_member(cli, argc, argv, "PUT");
    if (streq(sub, "remove-member"))
        return s_member(cli, argc, argv, "DELETE");
    if (streq(sub, "reserve"))
        return s_reserve(cli, argc, argv);
    if (streq(sub, "capacity"))
        return s_capacity(cli, argc, argv);
    fprintf(stderr, "berth groups: unknown command %s\n", sub);
    return s_bad_usage();
}
