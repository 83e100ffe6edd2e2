/*  berth audit: the audit trail (GET /v1/audit), newest first, as a table or the server's
    JSON; admins read everything, a group's managers and auditors that group's records. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

#define S_USAGE                                                                                    \
    "usage: berth audit [--actor U] [--target T] [--group G] [--action A] [--since TIME]\n"        \
    "                   [--until TIME] [--limit N] [--marker ID]\n"                                \
    "  TIME: 2024-05-01T12:00:00Z, unix milliseconds, now, -30m, -2h, -7d\n"

int cli_audit(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        { "actor", 1, NULL, 0 },  { "target", 1, NULL, 0 }, { "group", 1, NULL, 0 },
        { "action", 1, NULL, 0 }, { "since", 1, NULL, 0 },  { "until", 1, NULL, 0 },
        { "limit", 1, NULL, 0 },  { "marker", 1, NULL, 0 }, { NULL }
    };
    const char *params[] = {
        "actor", "target", "group", "action", "from", "to", "limit", "marker"
    };
    const char *pos[1];
    int64_t limit;
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0 ||
        (opts[6].set && util_parse_int(opts[6].value, 1, 100000, &limit) != 0)) {
        fprintf(stderr, S_USAGE);
        return 2;
    }
    char path[2048] = "/v1/audit";
    for (int i = 0; i < 8; i++) {
        if (!opts[i].set)
            continue;
        char value[256], escaped[800];
        int is_time = i == 4 || i == 5;
        if ((is_time ? cli_time(opts[i].value, value, sizeof value)
                     : util_strlcpy(value, opts[i].value, sizeof value)) != 0 ||
            cli_escape(value, escaped, sizeof escaped) != 0) {
            fprintf(stderr, "berth audit: --%s %s is not %s\n", opts[i].name, opts[i].value,
                    is_time ? "a time I understand" : "a value I can send");
            return 2;
        }
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "%c%s=%s", strchr(path, '?') ? '&' : '?', params[i],
                 escaped);
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table =
            cli_table_new(7, "TIME", "ACTOR", "ACTION", "TARGET", "RESULT", "SOURCE", "REQUEST_ID");
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(body, "records"), i, r)
            cli_table_add(table, T(r, "at"), T(r, "actor"), T(r, "action"), T(r, "target"),
                          T(r, "result"), T(r, "source"), T(r, "request_id"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
        const char *next = json_string_value(json_object_get(body, "next_marker"));
        if (next)
            printf("more: add --marker %s\n", next);
    }
    json_decref(body);
    return 0;
}
