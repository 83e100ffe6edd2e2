/*  berth rates, rate create, rate show, chargeback: the meter's rate cards (GET and POST
    /v1/rates) and a group's chargeback report (GET /v1/chargeback) as a table, the server's
    JSON, or CSV (-o csv: the report's rows, as the gateway's text/csv has them). Amounts
    are integer minor units of the cards' currency. */
#include "cli.h"

#include <time.h>

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_rate_usage[] =
    "usage: berth rate create --currency CUR --vcpu-hour N --ram-gb-hour N --disk-gb-hour N\n"
    "                         [--effective TIME] [--templates NAME=PER_DAY,...]\n"
    "                         [--factors STATE=PERMILLE,...] [--note TEXT]\n"
    "       berth rate list | berth rate show ID\n"
    "  prices: minor units per 1,000 hours (vCPU, GB RAM, GB disk); a template's per day\n"
    "  STATE: running, stopped, shelved, expired (per mille of the price; default 1000)\n";

static void s_cards_table(json_t *cards)
{
    cli_table_t *table = cli_table_new(9, "ID", "EFFECTIVE", "CURRENCY", "VCPU_HOUR", "RAM_GB_HOUR",
                                       "DISK_GB_HOUR", "TEMPLATES", "FACTORS", "NOTE");
    size_t i;
    json_t *c;
    json_array_foreach(cards, i, c)
        cli_table_add(table, T(c, "id"), T(c, "effective"), T(c, "currency"), T(c, "vcpu_hour"),
                      T(c, "ram_gb_hour"), T(c, "disk_gb_hour"), T(c, "templates"), T(c, "factors"),
                      T(c, "note"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

/* "a=1,b=2" as {"a": 1, "b": 2}; NULL when it is not that. */
static json_t *s_pairs(const char *text)
{
    json_t *out = json_object();
    char buf[4096];
    if (!out || util_strlcpy(buf, text, sizeof buf) != 0) {
        json_decref(out);
        return NULL;
    }
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(p, '=');
        int64_t v;
        if (!eq || eq == p || util_parse_int(eq + 1, 0, INT64_MAX, &v) != 0) {
            json_decref(out);
            return NULL;
        }
        *eq = '\0';
        json_object_set_new(out, p, json_integer(v));
    }
    return out;
}

static int s_rate_create(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        { "currency", 1, NULL, 0 },     { "vcpu-hour", 1, NULL, 0 }, { "ram-gb-hour", 1, NULL, 0 },
        { "disk-gb-hour", 1, NULL, 0 }, { "effective", 1, NULL, 0 }, { "templates", 1, NULL, 0 },
        { "factors", 1, NULL, 0 },      { "note", 1, NULL, 0 },      { NULL }
    };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0 || !opts[0].set || !opts[1].set ||
        !opts[2].set || !opts[3].set) {
        fputs(s_rate_usage, stderr);
        return 2;
    }
    json_t *body = json_pack("{s:s}", "currency", opts[0].value);
    const char *fields[] = { "vcpu_hour", "ram_gb_hour", "disk_gb_hour" };
    for (int i = 0; i < 3; i++) {
        int64_t v;
        if (util_parse_int(opts[1 + i].value, 0, INT64_MAX, &v) != 0) {
            fprintf(stderr, "berth rate create: --%s must be a whole number of minor units\n",
                    opts[1 + i].name);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, fields[i], json_integer(v));
    }
    if (opts[4].set) {
        char when[64];
        if (cli_time(opts[4].value, when, sizeof when) != 0) {
            fprintf(stderr, "berth rate create: --effective %s is not a time\n", opts[4].value);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, "effective", json_string(when));
    }
    for (int i = 5; i <= 6; i++) {
        if (!opts[i].set)
            continue;
        json_t *pairs = s_pairs(opts[i].value);
        if (!pairs) {
            fprintf(stderr, "berth rate create: --%s takes NAME=NUMBER,...\n", opts[i].name);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, opts[i].name, pairs);
    }
    if (opts[7].set)
        json_object_set_new(body, "note", json_string(opts[7].value));
    json_t *answer = NULL;
    int rc = cli_http(cli, "POST", "/v1/rates", body, &answer);
    json_decref(body);
    if (rc != 0)
        return 1;
    if (cli->json)
        cli_print_json(answer);
    else {
        json_t *one = json_pack("[O]", json_object_get(answer, "rate"));
        s_cards_table(one);
        json_decref(one);
    }
    json_decref(answer);
    return 0;
}

/* berth rate list | rate show ID | rate create ... (argv[0] "rates" or "rate") */
int cli_rates(cli_t *cli, int argc, char **argv)
{
    const char *verb = argc > 1 && argv[1][0] != '-' ? argv[1] : "list";
    int shift = argc > 1 && argv[1][0] != '-' ? 1 : 0;
    if (streq(verb, "create"))
        return s_rate_create(cli, argc - shift, argv + shift);
    const char *pos[1] = { NULL };
    cli_opt_t none[] = { { NULL } };
    if (streq(verb, "show")) {
        if (cli_parse(argc - shift, argv + shift, none, pos, 1, 1) != 0) {
            fputs(s_rate_usage, stderr);
            return 2;
        }
        char path[256];
        if (cli_path(path, sizeof path, "rates", pos[0]) != 0) {
            fputs(s_rate_usage, stderr);
            return 2;
        }
        json_t *card = NULL;
        if (cli_http(cli, "GET", path, NULL, &card) != 0)
            return 1;
        if (cli->json)
            cli_print_json(card);
        else {
            json_t *one = json_pack("[O]", json_object_get(card, "rate"));
            s_cards_table(one);
            json_decref(one);
        }
        json_decref(card);
        return 0;
    }
    if (!streq(verb, "list") || cli_parse(argc - shift, argv + shift, none, pos, 0, 0) != 0) {
        fputs(s_rate_usage, stderr);
        return 2;
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", "/v1/rates", NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else
        s_cards_table(json_object_get(body, "rates"));
    json_decref(body);
    return 0;
}

static const char s_chargeback_usage[] =
    "usage: berth chargeback --group G [--month YYYY-MM | --from TIME --to TIME]\n"
    "                        [--by day|month|vm|user] [-o table|json|yaml|csv]\n"
    "  amounts: integer minor units of the rate cards' currency\n";

/* --month YYYY-MM as its first instant and the next month's, ISO 8601. -1 when not one. */
static int s_month(const char *text, char *from, char *to, size_t size)
{
    int y, m;
    char extra;
    if (sscanf(text, "%4d-%2d%c", &y, &m, &extra) != 2 || y < 1970 || m < 1 || m > 12)
        return -1;
    snprintf(from, size, "%04d-%02d-01T00:00:00Z", y, m);
    snprintf(to, size, "%04d-%02d-01T00:00:00Z", m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1);
    return 0;
}

/* A row's text field as it is ("" when absent or not text). */
static const char *s_raw(json_t *row, const char *name)
{
    const char *text = json_string_value(json_object_get(row, name));
    return text ? text : "";
}

/* A CSV field, quoted when it needs to be. */
static void s_csv(const char *text)
{
    if (!strpbrk(text, ",\"\r\n")) {
        fputs(text, stdout);
        return;
    }
    putchar('"');
    for (const char *p = text; *p; p++) {
        if (*p == '"')
            putchar('"');
        putchar(*p);
    }
    putchar('"');
}

int cli_chargeback(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "group", 1, NULL, 0 }, { "month", 1, NULL, 0 }, { "from", 1, NULL, 0 },
                         { "to", 1, NULL, 0 },    { "by", 1, NULL, 0 },    { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0 || !opts[0].set ||
        (opts[1].set && (opts[2].set || opts[3].set))) {
        fputs(s_chargeback_usage, stderr);
        return 2;
    }
    char from[64] = "", to[64] = "", esc[800], path[2048];
    if (opts[1].set && s_month(opts[1].value, from, to, sizeof from) != 0) {
        fprintf(stderr, "berth chargeback: --month %s is not YYYY-MM\n", opts[1].value);
        return 2;
    }
    if ((opts[2].set && cli_time(opts[2].value, from, sizeof from) != 0) ||
        (opts[3].set && cli_time(opts[3].value, to, sizeof to) != 0)) {
        fprintf(stderr, "berth chargeback: --from/--to is not a time I understand\n");
        return 2;
    }
    const char *by = opts[4].set ? opts[4].value : "day";
    if (cli_escape(opts[0].value, esc, sizeof esc) != 0) {
        fputs(s_chargeback_usage, stderr);
        return 2;
    }
    snprintf(path, sizeof path, "/v1/chargeback?group=%s", esc);
    const char *names[] = { "from", "to", "by" };
    const char *values[] = { from, to, by };
    for (int i = 0; i < 3; i++) {
        if (!*values[i])
            continue;
        if (cli_escape(values[i], esc, sizeof esc) != 0) {
            fputs(s_chargeback_usage, stderr);
            return 2;
        }
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "&%s=%s", names[i], esc);
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    const char *key = json_string_value(json_object_get(body, "by"));
    key = key ? key : by;
    int vm = streq(key, "vm");
    int user = streq(key, "user");
    int kinds = vm || user; /* rows of a reservation-based group's own charges */
    const char *currency = json_string_value(json_object_get(body, "currency"));
    json_t *rows = json_object_get(body, "rows");
    size_t i;
    json_t *r;
    if (cli->csv) {
        printf("%s%s%s%s,currency,amount,compute_ms,disk_ms\r\n", key, vm ? ",owner,template" : "",
               kinds ? ",kind" : "", user ? ",vms" : "");
        json_array_foreach(rows, i, r)
        {
            /* The row's own text, "" where it has none: the CSV the API writes. */
            s_csv(s_raw(r, key));
            if (vm) {
                putchar(',');
                s_csv(s_raw(r, "owner"));
                putchar(',');
                s_csv(s_raw(r, "template"));
            }
            if (kinds) {
                putchar(',');
                s_csv(s_raw(r, "kind"));
            }
            if (user)
                printf(",%s", T(r, "vms"));
            printf(",%s,%s,%s,%s\r\n", currency ? currency : "", T(r, "amount"), T(r, "compute_ms"),
                   T(r, "disk_ms"));
        }
        printf("total%s%s%s,%s,%s,,\r\n", vm ? ",," : "", kinds ? "," : "", user ? "," : "",
               currency ? currency : "", T(body, "total"));
    } else if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table =
            vm     ? cli_table_new(6, "VM", "OWNER", "TEMPLATE", "AMOUNT", "COMPUTE_H", "DISK_H")
            : user ? cli_table_new(5, "USER", "VMS", "AMOUNT", "COMPUTE_H", "DISK_H")
                   : cli_table_new(4, key, "AMOUNT", "COMPUTE_H", "DISK_H");
        json_array_foreach(rows, i, r)
        {
            char ch[32], dh[32];
            snprintf(ch, sizeof ch, "%.2f",
                     (double)json_integer_value(json_object_get(r, "compute_ms")) / 3600000.0);
            snprintf(dh, sizeof dh, "%.2f",
                     (double)json_integer_value(json_object_get(r, "disk_ms")) / 3600000.0);
            /* The group's own charges (reservation-based) and adjustments: their kind in the
               key's column. */
            const char *kind = json_string_value(json_object_get(r, "kind"));
            char what[128];
            /* the row's own value, "" for the group's lines (T() would print "-") */
            const char *named = json_string_value(json_object_get(r, key));
            named = named ? named : "";
            snprintf(what, sizeof what, "%s%s(%s)", named, *named ? " " : "", kind ? kind : "");
            const char *first = kind && *kind ? what : T(r, key);
            if (vm)
                cli_table_add(table, first, T(r, "owner"), T(r, "template"), T(r, "amount"), ch,
                              dh);
            else if (user)
                cli_table_add(table, first, T(r, "vms"), T(r, "amount"), ch, dh);
            else
                cli_table_add(table, first, T(r, "amount"), ch, dh);
        }
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
        printf("total %s %s (minor units; %s charging, %s .. %s)\n", T(body, "total"),
               currency && *currency ? currency : "(no rate card)", T(body, "charging_model"),
               T(body, "from"), T(body, "to"));
    }
    json_decref(body);
    return 0;
}

static const char s_vm_charges_usage[] =
    "usage: berth vm charges VM [--month YYYY-MM | --from TIME --to TIME]\n"
    "  VM: id, or name when unique; default: this UTC month so far\n";

/* berth vm charges VM ... (argv[0] "vm", argv[1] "charges"): GET /v1/vms/{id}/charges. */
int cli_vm_charges(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        { "month", 1, NULL, 0 }, { "from", 1, NULL, 0 }, { "to", 1, NULL, 0 }, { NULL }
    };
    const char *pos[1] = { NULL };
    if (cli_parse(argc - 1, argv + 1, opts, pos, 1, 1) != 0 ||
        (opts[0].set && (opts[1].set || opts[2].set))) {
        fputs(s_vm_charges_usage, stderr);
        return 2;
    }
    char from[64] = "", to[64] = "", esc[800], path[2048];
    if (opts[0].set && s_month(opts[0].value, from, to, sizeof from) != 0) {
        fprintf(stderr, "berth vm charges: --month %s is not YYYY-MM\n", opts[0].value);
        return 2;
    }
    if ((opts[1].set && cli_time(opts[1].value, from, sizeof from) != 0) ||
        (opts[2].set && cli_time(opts[2].value, to, sizeof to) != 0)) {
        fprintf(stderr, "berth vm charges: --from/--to is not a time I understand\n");
        return 2;
    }
    if (cli_path(path, CLI_PATH_MAX, "vms", pos[0]) != 0) {
        fputs(s_vm_charges_usage, stderr);
        return 2;
    }
    strcat(path, "/charges");
    const char *names[] = { "from", "to" };
    const char *values[] = { from, to };
    for (int i = 0, first = 1; i < 2; i++) {
        if (!*values[i])
            continue;
        if (cli_escape(values[i], esc, sizeof esc) != 0) {
            fputs(s_vm_charges_usage, stderr);
            return 2;
        }
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "%c%s=%s", first ? '?' : '&', names[i], esc);
        first = 0;
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    json_t *c = json_object_get(body, "charges");
    if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table = cli_table_new(4, "DAY", "AMOUNT", "COMPUTE_H", "DISK_H");
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(c, "days"), i, d)
        {
            char ch[32], dh[32];
            snprintf(ch, sizeof ch, "%.2f",
                     (double)json_integer_value(json_object_get(d, "compute_ms")) / 3600000.0);
            snprintf(dh, sizeof dh, "%.2f",
                     (double)json_integer_value(json_object_get(d, "disk_ms")) / 3600000.0);
            cli_table_add(table, T(d, "day"), T(d, "amount"), ch, dh);
        }
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
        const char *currency = json_string_value(json_object_get(c, "currency"));
        printf("total %s %s (minor units; %s charging, %s .. %s)\n", T(c, "total"),
               currency && *currency ? currency : "(no rate card)", T(c, "charging_model"),
               T(c, "from"), T(c, "to"));
    }
    json_decref(body);
    return 0;
}

static const char s_budget_usage[] =
    "usage: berth budget show G\n"
    "       berth budget set G --amount N [--thresholds P,P,...] [--hard-stop]\n"
    "       berth budget delete G\n"
    "  G: a group's id or name; N: minor units a month; P: percent of N (default 80,100);\n"
    "  --hard-stop: refuse new VM requests while the month's charges reach N\n";

static void s_budget_print(json_t *answer)
{
    json_t *b = json_object_get(answer, "budget");
    if (!json_is_object(b)) {
        puts("no budget");
        return;
    }
    cli_table_t *table = cli_table_new(2, "FIELD", "VALUE");
    const char *fields[] = { "group",   "amount",     "currency", "thresholds", "hard_stop",
                             "month",   "spent",      "blocked",  "checked",    "version",
                             "updated", "updated_by", NULL };
    for (int i = 0; fields[i]; i++)
        cli_table_add(table, fields[i], T(b, fields[i]));
    json_t *a;
    size_t i;
    json_array_foreach(json_object_get(b, "alerts"), i, a)
    {
        char what[64];
        snprintf(what, sizeof what, "alert %lld%%",
                 (long long)json_integer_value(json_object_get(a, "threshold")));
        char when[160];
        snprintf(when, sizeof when, "%s (spent %lld)", T(a, "at"),
                 (long long)json_integer_value(json_object_get(a, "spent")));
        cli_table_add(table, what, when);
    }
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

/* berth budget show|set|delete G ... (argv[0] "budget") */
int cli_budget(cli_t *cli, int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";
    cli_opt_t opts[] = { { "amount", 1, NULL, 0 },
                         { "thresholds", 1, NULL, 0 },
                         { "hard-stop", 0, NULL, 0 },
                         { NULL } };
    cli_opt_t none[] = { { NULL } };
    const char *pos[1] = { NULL };
    int set = streq(verb, "set");
    if ((!set && !streq(verb, "show") && !streq(verb, "delete")) ||
        cli_parse(argc - 1, argv + 1, set ? opts : none, pos, 1, 1) != 0 || (set && !opts[0].set)) {
        fputs(s_budget_usage, stderr);
        return 2;
    }
    char path[CLI_PATH_MAX + 16];
    if (cli_path(path, CLI_PATH_MAX, "groups", pos[0]) != 0) {
        fputs(s_budget_usage, stderr);
        return 2;
    }
    strcat(path, "/budget");
    json_t *body = NULL, *answer = NULL;
    if (set) {
        int64_t amount;
        if (util_parse_int(opts[0].value, 1, INT64_MAX, &amount) != 0) {
            fprintf(stderr, "berth budget set: --amount must be a whole number of minor units\n");
            return 2;
        }
        body = json_pack("{s:I, s:b}", "amount", (json_int_t)amount, "hard_stop", opts[2].set);
        if (opts[1].set) {
            json_t *list = json_array();
            char buf[256];
            if (util_strlcpy(buf, opts[1].value, sizeof buf) != 0) {
                fputs(s_budget_usage, stderr);
                json_decref(list);
                json_decref(body);
                return 2;
            }
            char *save = NULL;
            for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                int64_t t;
                if (util_parse_int(p, 0, INT32_MAX, &t) != 0) {
                    fprintf(stderr, "berth budget set: --thresholds takes percents: 50,80,100\n");
                    json_decref(list);
                    json_decref(body);
                    return 2;
                }
                json_array_append_new(list, json_integer(t));
            }
            json_object_set_new(body, "thresholds", list);
        }
    }
    int rc = cli_http(cli,
                      set                     ? "PUT"
                      : streq(verb, "delete") ? "DELETE"
                                              : "GET",
                      path, body, &answer);
    json_decref(body);
    if (rc != 0)
        return 1;
    if (cli->json)
        cli_print_json(answer);
    else
        s_budget_print(answer);
    json_decref(answer);
    return 0;
}
