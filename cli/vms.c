/*  berth vms, berth vm show, berth task, berth usage: reading what the platform runs, what
    it is doing and what it cost. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)
#define PAGE_LIMIT  100

static void s_vm_table(cli_t *cli, json_t *vms)
{
    json_t *templates = cli_names(cli, "/v1/templates", "templates");
    json_t *groups = cli_names(cli, "/v1/groups", "groups");
    cli_table_t *table = cli_table_new(9, "NAME", "STATE", "POWER", "HOST", "TEMPLATE", "GROUP",
                                       "OWNER", "EXPIRES", "ID");
    size_t i;
    json_t *vm;
    json_array_foreach(vms, i, vm)
        cli_table_add(table, T(vm, "name"), T(vm, "state"), T(vm, "power_state"), T(vm, "host"),
                      cli_name_of(templates, vm, "template"), cli_name_of(groups, vm, "group"),
                      T(vm, "owner"), T(json_object_get(vm, "lease"), "expires_at"), T(vm, "id"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
    json_decref(templates);
    json_decref(groups);
}

int cli_vms(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "limit", 1, NULL, 0 }, { "marker", 1, NULL, 0 },
                         { "state", 1, NULL, 0 }, { "owner", 1, NULL, 0 },
                         { "host", 1, NULL, 0 },  { "name", 1, NULL, 0 },
                         { "group", 1, NULL, 0 }, { NULL } };
    const char *pos[1];
    int64_t limit = PAGE_LIMIT;
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0 ||
        (opts[0].set && util_parse_int(opts[0].value, 1, 100000, &limit) != 0)) {
        fprintf(stderr, "usage: berth vms [--state S] [--owner U] [--host H] [--name N]\n"
                        "         [--group G] [--limit N] [--marker ID]\n"
                        "  (DISPOSED VMs are listed with --state DISPOSED only)\n");
        return 2;
    }
    /* The filters, as the gateway's query (GET /v1/vms?state=&owner=&host=&name=&group=). */
    char filters[1100] = "", escaped[256];
    for (int i = 2; opts[i].name; i++) {
        if (!opts[i].set)
            continue;
        size_t len = strlen(filters);
        if (cli_escape(opts[i].value, escaped, sizeof escaped) != 0 ||
            snprintf(filters + len, sizeof filters - len, "%c%s=%s", len ? '&' : '?', opts[i].name,
                     escaped) >= (int)(sizeof filters - len)) {
            fprintf(stderr, "berth vms: --%s too long\n", opts[i].name);
            return 2;
        }
    }
    char path[2400], marker[512];
    /* One page when asked for one (--limit/--marker); otherwise every page, following
       next_marker until the gateway says there is nothing after. */
    if (opts[0].set || opts[1].set) {
        if (opts[1].set && cli_escape(opts[1].value, marker, sizeof marker) != 0) {
            fprintf(stderr, "berth vms: marker too long\n");
            return 2;
        }
        snprintf(path, sizeof path, "/v1/vms%s%climit=%lld%s%s", filters, *filters ? '&' : '?',
                 (long long)limit, opts[1].set ? "&marker=" : "", opts[1].set ? marker : "");
        json_t *body = NULL;
        if (cli_http(cli, "GET", path, NULL, &body) != 0)
            return 1;
        if (cli->json)
            cli_print_json(body);
        else {
            s_vm_table(cli, json_object_get(body, "vms"));
            const char *next = json_string_value(json_object_get(body, "next_marker"));
            if (next)
                printf("more: berth vms --limit %lld --marker %s\n", (long long)limit, next);
        }
        json_decref(body);
        return 0;
    }
    snprintf(path, sizeof path, "/v1/vms%s", filters);
    json_t *all = cli_get_all(cli, path, PAGE_LIMIT, "vms");
    int rc = all ? 0 : 1;
    if (rc == 0) {
        if (cli->json) {
            json_t *doc = json_pack("{s:O, s:n}", "vms", all, "next_marker");
            cli_print_json(doc);
            json_decref(doc);
        } else
            s_vm_table(cli, all);
    }
    json_decref(all);
    return rc;
}

/* One network of a VM as "NAME IP/PREFIX mac MAC gateway GW dns A, B" into line. */
static void s_network_line(json_t *net, char *line, size_t size)
{
    char dns[256] = "";
    size_t i, n = 0;
    json_t *d;
    json_array_foreach(json_object_get(net, "dns"), i, d)
    {
        int w = snprintf(dns + n, sizeof dns - n, "%s%s", i ? ", " : "",
                         json_string_value(d) ? json_string_value(d) : "");
        if (w < 0 || (size_t)w >= sizeof dns - n)
            break;
        n += (size_t)w;
    }
    const char *ip = json_string_value(json_object_get(net, "ip"));
    const char *mac = json_string_value(json_object_get(net, "mac"));
    const char *gw = json_string_value(json_object_get(net, "gateway"));
    const char *name = json_string_value(json_object_get(net, "name"));
    snprintf(line, size, "%s %s/%lld mac %s gateway %s dns %s", name ? name : "?",
             ip ? ip : "(not yet)", (long long)json_integer_value(json_object_get(net, "prefix")),
             mac ? mac : "-", gw ? gw : "-", dns[0] ? dns : "-");
}

int cli_vm(cli_t *cli, int argc, char **argv)
{
    const char *pos[2];
    if (cli_parse(argc, argv, NULL, pos, 2, 2) != 0 || !streq(pos[0], "show")) {
        fprintf(stderr, "usage: berth vm show ID\n");
        return 2;
    }
    json_t *body = NULL;
    int rc = cli_get_one(cli, "vm", "vms", pos[1], &body);
    if (rc != 0)
        return rc;
    if (cli->json)
        cli_print_json(body);
    else {
        static const char *const first[] = { "id",          "name",  "state",
                                             "power_state", "host",  "template",
                                             "owner",       "group", "lease.expires_at",
                                             "task",        "fault", NULL };
        /* Names for the ids a person would look up (-o json keeps the ids). */
        json_t *vm = json_deep_copy(json_object_get(body, "vm"));
        static const char *const named[][3] = { { "template", "/v1/templates", "templates" },
                                                { "group", "/v1/groups", "groups" } };
        for (size_t i = 0; vm && i < sizeof named / sizeof named[0]; i++)
            if (json_is_string(json_object_get(vm, named[i][0]))) {
                json_t *names = cli_names(cli, named[i][1], named[i][2]);
                json_object_set_new(vm, named[i][0],
                                    json_string(cli_name_of(names, vm, named[i][0])));
                json_decref(names);
            }
        /* Its SSH keys as "name (fingerprint), ...": none, "-". */
        json_t *keys = json_object_get(vm, "ssh_keys");
        if (json_is_array(keys)) {
            char line[2048] = "";
            size_t i, n = 0;
            json_t *k;
            json_array_foreach(keys, i, k)
            {
                const char *name = json_string_value(json_object_get(k, "name"));
                const char *fp = json_string_value(json_object_get(k, "fingerprint"));
                int w = snprintf(line + n, sizeof line - n, "%s%s (%s)", i ? ", " : "",
                                 name ? name : "?", fp ? fp : "?");
                if (w < 0 || (size_t)w >= sizeof line - n)
                    break;
                n += (size_t)w;
            }
            json_object_set_new(vm, "ssh_keys", json_string(line[0] ? line : "-"));
        }
        /* Its networks, each as "NAME IP/PREFIX mac MAC gateway GW dns A, B", in order and
           separated by "; "; none: "-". */
        json_t *nets = json_object_get(vm, "networks");
        if (vm && (json_object_get(vm, "network") || nets)) {
            char line[2048] = "-";
            size_t at = 0;
            json_t *one = json_array();
            if (json_array_size(nets) == 0 && json_is_object(json_object_get(vm, "network")))
                json_array_append(one, json_object_get(vm, "network"));
            size_t k;
            json_t *net;
            json_array_foreach(json_array_size(nets) ? nets : one, k, net)
            {
                if (!json_is_object(net))
                    continue;
                char entry[512];
                s_network_line(net, entry, sizeof entry);
                int w = snprintf(line + at, sizeof line - at, "%s%s", at ? "; " : "", entry);
                if (w < 0 || (size_t)w >= sizeof line - at)
                    break;
                at += (size_t)w;
            }
            json_decref(one);
            json_object_set_new(vm, "network", json_string(line));
            json_object_del(vm, "networks");
        }
        /* A custom build's applications: "from image: a, b; first boot: c"; none: "-". */
        json_t *apps = json_object_get(vm, "applications");
        if (json_is_object(apps)) {
            char line[2048] = "";
            size_t at = 0;
            static const char *const lists[][2] = { { "from_image", "from image" },
                                                    { "first_boot", "first boot" } };
            for (size_t l = 0; l < 2; l++) {
                json_t *list = json_object_get(apps, lists[l][0]);
                size_t i;
                json_t *name;
                json_array_foreach(list, i, name)
                {
                    int w = snprintf(line + at, sizeof line - at, "%s%s%s",
                                     i    ? ", "
                                     : at ? "; "
                                          : "",
                                     i ? "" : lists[l][1], i ? "" : ": ");
                    if (w < 0 || (size_t)w >= sizeof line - at)
                        break;
                    at += (size_t)w;
                    w = snprintf(line + at, sizeof line - at, "%s",
                                 json_string_value(name) ? json_string_value(name) : "?");
                    if (w < 0 || (size_t)w >= sizeof line - at)
                        break;
                    at += (size_t)w;
                }
            }
            json_object_set_new(vm, "applications", json_string(line[0] ? line : "-"));
        }
        cli_print_object(vm, first);
        json_decref(vm);
    }
    json_decref(body);
    return 0;
}

/* berth abort TASK, berth task abort|retry|force-fail TASK: POST /v1/tasks/{id}/<verb>;
   prints the task as the call left it. */
static int s_task_verb(cli_t *cli, const char *verb, int argc, char **argv)
{
    const char *pos[1];
    char path[CLI_PATH_MAX];
    if (cli_parse(argc, argv, NULL, pos, 1, 1) != 0) {
        fprintf(stderr, "usage: berth task %s TASK\n", verb);
        return 2;
    }
    if (cli_path(path, sizeof path, "tasks", pos[0]) != 0 ||
        strlen(path) + strlen(verb) + 2 > sizeof path) {
        fprintf(stderr, "berth task %s: id too long\n", verb);
        return 2;
    }
    strcat(path, "/");
    strcat(path, verb);
    json_t *body = NULL;
    if (cli_http(cli, "POST", path, NULL, &body) != 0)
        return 1;
    json_t *task = json_object_get(body, "task");
    if (cli->json)
        cli_print_json(body);
    else
        printf("task %s (%s): %s%s%s\n", T(task, "id"), T(task, "kind"), T(task, "state"),
               json_string_value(json_object_get(task, "fault")) ? ": " : "",
               json_string_value(json_object_get(task, "fault"))
                   ? json_string_value(json_object_get(task, "fault"))
                   : "");
    json_decref(body);
    return 0;
}

int cli_task(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    if (argc >= 2 &&
        (streq(argv[1], "abort") || streq(argv[1], "retry") || streq(argv[1], "force-fail")))
        return s_task_verb(cli, argv[1], argc - 1, argv + 1);
    if (cli_parse(argc, argv, NULL, pos, 1, 1) != 0) {
        fprintf(stderr, "usage: berth task ID | berth task abort|retry|force-fail ID\n");
        return 2;
    }
    json_t *body = NULL;
    int rc = cli_get_one(cli, "task", "tasks", pos[0], &body);
    if (rc != 0)
        return rc;
    if (cli->json)
        cli_print_json(body);
    else {
        json_t *task = json_deep_copy(json_object_get(body, "task"));
        json_t *steps = json_incref(json_object_get(task, "steps"));
        json_object_del(task, "steps");
        static const char *const first[] = { "id",      "kind",   "state", "stage",
                                             "percent", "target", "fault", NULL };
        cli_print_object(task, first);
        if (json_array_size(steps) > 0) {
            printf("\n");
            cli_table_t *table = cli_table_new(5, "STEP", "STATE", "STARTED", "FINISHED", "RESULT");
            size_t i;
            json_t *s;
            json_array_foreach(steps, i, s)
                cli_table_add(table, T(s, "name"), T(s, "state"), T(s, "started_at"),
                              T(s, "finished_at"), T(s, "result"));
            cli_table_print(table, stdout);
            cli_table_destroy(&table);
        }
        json_decref(steps);
        json_decref(task);
    }
    json_decref(body);
    return 0;
}

int cli_usage(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "from", 1, NULL, 0 },
                         { "to", 1, NULL, 0 },
                         { "owner", 1, NULL, 0 },
                         { "group", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0) {
        fprintf(stderr, "usage: berth usage [--from TIME] [--to TIME] [--owner USER] "
                        "[--group G]\n"
                        "  TIME: 2024-05-01T12:00:00Z, 2024-05-01, unix seconds, now, -30m, "
                        "-2h, -7d\n");
        return 2;
    }
    char path[1024] = "/v1/usage";
    const char *names[] = { "from", "to", "owner", "group" };
    for (int i = 0; i < 4; i++) {
        if (!opts[i].set)
            continue;
        char value[128], escaped[400];
        if ((i < 2 ? cli_time(opts[i].value, value, sizeof value)
                   : util_strlcpy(value, opts[i].value, sizeof value)) != 0 ||
            cli_escape(value, escaped, sizeof escaped) != 0) {
            fprintf(stderr, "berth usage: --%s %s is not a time I understand\n", names[i],
                    opts[i].value);
            return 2;
        }
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "%c%s=%s", strchr(path, '?') ? '&' : '?', names[i],
                 escaped);
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        printf("usage from %s to %s\n\n", T(body, "from"), T(body, "to"));
        /* HOURS: compute hours (running); DISK_ONLY_HOURS: stopped, shelved or expired. */
        cli_table_t *table =
            cli_table_new(9, "VM", "OWNER", "TEMPLATE", "HOST", "HOURS", "DISK_ONLY_HOURS",
                          "VCPU_HOURS", "RAM_GB_HOURS", "DISK_GB_HOURS");
        json_t *templates = cli_names(cli, "/v1/templates", "templates");
        double total[5] = { 0 };
        const char *keys[5] = { "active_hours", "disk_only_hours", "vcpu_hours", "ram_gb_hours",
                                "disk_gb_hours" };
        size_t i;
        json_t *u;
        json_array_foreach(json_object_get(body, "usage"), i, u)
        {
            for (int k = 0; k < 5; k++)
                total[k] += json_number_value(json_object_get(u, keys[k]));
            cli_table_add(table, T(u, "vm"), T(u, "owner"), cli_name_of(templates, u, "template"),
                          T(u, "host"), T(u, "active_hours"), T(u, "disk_only_hours"),
                          T(u, "vcpu_hours"), T(u, "ram_gb_hours"), T(u, "disk_gb_hours"));
        }
        char sums[5][64];
        for (int k = 0; k < 5; k++)
            snprintf(sums[k], sizeof sums[k], "%.3f", total[k]);
        cli_table_add(table, "TOTAL", "", "", "", sums[0], sums[1], sums[2], sums[3], sums[4]);
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
        json_decref(templates);
    }
    json_decref(body);
    return 0;
}
