/*  berth onboard, berth allocate: ask for a new group (an admin decides; the asker becomes
    its manager) and, as a group's manager, for more quota (approved at once within the
    group's auto_growth_max and the platform's free capacity, else an admin decides) or for
    reservations (likewise, within auto_growth_max and what is free on the hosts). Both
    print the request they made; `berth requests` and `berth approve` take it from there. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char *const s_quota_names[] = { "vms", "vcpus", "ram_mb", "disk_gb" };

/* Print the request an ask made (or its JSON). */
static void s_print(cli_t *cli, json_t *body)
{
    if (cli->json) {
        cli_print_json(body);
        return;
    }
    json_t *r = json_object_get(body, "request");
    static const char *const first[] = { "id", "kind", "state", "awaiting", "group", NULL };
    cli_print_object(r, first);
    if (json_is_string(json_object_get(r, "awaiting")))
        printf("\nwaits for the %s level: `berth requests` shows it\n", T(r, "awaiting"));
}

/* text as a non-negative integer (a leading '+' allowed when plus), into *out. */
static int s_number(const char *text, int plus, long long *out)
{
    if (plus && *text == '+')
        text++;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || v < 0 || *text == '-')
        return -1;
    *out = v;
    return 0;
}

int cli_onboard(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "cost-centre", 1, NULL, 0 },
                         { "vms", 1, NULL, 0 },
                         { "vcpus", 1, NULL, 0 },
                         { "ram-mb", 1, NULL, 0 },
                         { "disk-gb", 1, NULL, 0 },
                         { "charging-model", 1, NULL, 0 },
                         { "description", 1, NULL, 0 },
                         { "justification", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    long long values[4] = { 0 };
    int bad = cli_parse(argc, argv, opts, pos, 1, 1) != 0 || !opts[7].set;
    for (int i = 0; !bad && i < 4; i++)
        bad = opts[1 + i].set && s_number(opts[1 + i].value, 0, &values[i]) != 0;
    if (bad) {
        fprintf(stderr, "usage: berth onboard NAME --justification TEXT [--cost-centre CC]\n"
                        "         [--vms N] [--vcpus N] [--ram-mb N] [--disk-gb N]\n"
                        "         [--charging-model allocation|reservation] [--description T]\n"
                        "  asks an admin for a new group with that quota; you become its "
                        "manager\n");
        return 2;
    }
    json_t *quota = json_object();
    for (int i = 0; i < 4; i++)
        json_object_set_new(quota, s_quota_names[i], json_integer(values[i]));
    json_t *ask = json_pack("{s:s, s:o, s:s}", "name", pos[0], "quota", quota, "justification",
                            opts[7].value);
    if (opts[0].set)
        json_object_set_new(ask, "cost_centre", json_string(opts[0].value));
    if (opts[5].set)
        json_object_set_new(ask, "charging_model", json_string(opts[5].value));
    if (opts[6].set)
        json_object_set_new(ask, "description", json_string(opts[6].value));
    json_t *body = NULL;
    int rc = cli_http(cli, "POST", "/v1/onboarding", ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    s_print(cli, body);
    json_decref(body);
    return 0;
}

/* Space-separated HOST:VCPUS,RAM_MB,DISK_GB specs as an array of reservation objects, or
   NULL (said) when one does not parse or there are none. */
static json_t *s_reserve_list(const char *text)
{
    json_t *list = json_array();
    char spec[160];
    while (list && *text) {
        size_t len = strcspn(text, " ");
        if (len >= sizeof spec) {
            fprintf(stderr, "berth allocate: reservation '%.40s...' is too long\n", text);
            json_decref(list);
            return NULL;
        }
        if (len > 0) {
            memcpy(spec, text, len);
            spec[len] = '\0';
            json_t *r = cli_reservation(spec);
            if (!r || json_array_append_new(list, r) != 0) {
                json_decref(list);
                return NULL;
            }
        }
        text += len + (text[len] == ' ');
    }
    if (list && json_array_size(list) == 0) {
        fprintf(stderr, "berth allocate: --reserve names no reservation\n");
        json_decref(list);
        return NULL;
    }
    return list;
}

static int s_ask(cli_t *cli, const char *group, json_t *ask, cli_opt_t justification);

int cli_allocate(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "vms", 1, NULL, 0 },           { "vcpus", 1, NULL, 0 },
                         { "ram-mb", 1, NULL, 0 },        { "disk-gb", 1, NULL, 0 },
                         { "justification", 1, NULL, 0 }, { "reserve", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    long long values[4] = { 0 };
    int given = 0, plus = 0;
    int bad = cli_parse(argc, argv, opts, pos, 1, 1) != 0;
    for (int i = 0; !bad && i < 4; i++) {
        if (!opts[i].set)
            continue;
        given++;
        plus += opts[i].value[0] == '+';
        bad = s_number(opts[i].value, 1, &values[i]) != 0;
    }
    json_t *reserve = opts[5].set && !bad && given == 0 ? s_reserve_list(opts[5].value) : NULL;
    if (bad || (given == 0) == !opts[5].set || (plus && plus != given) ||
        (opts[5].set && !reserve)) {
        fprintf(stderr, "usage: berth allocate GROUP [--vms N] [--vcpus N] [--ram-mb N]\n"
                        "         [--disk-gb N] [--justification TEXT]\n"
                        "  N: the new value, or +N: an increase (all of them one way); the\n"
                        "  values not named keep the group's quota\n"
                        "       berth allocate GROUP --reserve 'HOST:VCPUS,RAM_MB,DISK_GB ...'\n"
                        "         [--justification TEXT]\n"
                        "  the group's reservations become these (HOST '*': any host)\n");
        json_decref(reserve);
        return 2;
    }
    if (reserve)
        return s_ask(cli, pos[0], json_pack("{s:o}", "reservations", reserve), opts[4]);
    json_t *quota = json_object();
    if (!plus) { /* new values: the ones not named stay as the group has them */
        json_t *g = NULL;
        int rc = cli_get_one(cli, "allocate", "groups", pos[0], &g);
        if (rc != 0) {
            json_decref(quota);
            return rc;
        }
        json_t *now = json_object_get(json_object_get(g, "group"), "quota");
        for (int i = 0; i < 4; i++) {
            json_t *v = json_object_get(now, s_quota_names[i]);
            json_object_set_new(quota, s_quota_names[i],
                                json_integer(json_is_integer(v) ? json_integer_value(v) : 0));
        }
        json_decref(g);
    }
    for (int i = 0; i < 4; i++)
        if (opts[i].set)
            json_object_set_new(quota, s_quota_names[i], json_integer(values[i]));
    return s_ask(cli, pos[0], json_pack("{s:o}", plus ? "delta" : "quota", quota), opts[4]);
}

/* POST the allocation ask (taken) for group, with the justification when given. */
static int s_ask(cli_t *cli, const char *group, json_t *ask, cli_opt_t justification)
{
    if (justification.set)
        json_object_set_new(ask, "justification", json_string(justification.value));
    char path[CLI_PATH_MAX + 16];
    if (cli_path(path, CLI_PATH_MAX, "groups", group) != 0) {
        json_decref(ask);
        fprintf(stderr, "berth allocate: group name too long\n");
        return 2;
    }
    strcat(path, "/allocations");
    json_t *body = NULL;
    int rc = cli_http(cli, "POST", path, ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    s_print(cli, body);
    json_decref(body);
    return 0;
}
