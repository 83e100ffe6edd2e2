/*  berth requests, berth approve, berth reject: the requests one may read, the approvals
    inbox (--pending: exactly what one may decide now) and deciding the level a request
    waits for (services/approval/decide.h says who may). */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)
#define PAGE_LIMIT  100
#define S_QUERY_MAX 1024

static void s_table(cli_t *cli, json_t *requests)
{
    json_t *groups = cli_names(cli, "/v1/groups", "groups");
    cli_table_t *table = cli_table_new(9, "ID", "KIND", "STATE", "AWAITING", "POLICY", "NAME",
                                       "COUNT", "OWNER", "GROUP");
    size_t i;
    json_t *r;
    json_array_foreach(requests, i, r)
    {
        char count[16];
        snprintf(count, sizeof count, "%lld",
                 (long long)json_integer_value(json_object_get(r, "count")));
        cli_table_add(table, T(r, "id"), T(r, "kind"), T(r, "state"), T(r, "awaiting"),
                      T(r, "policy"), T(r, "name"), count, T(r, "owner"), cli_name_of(groups, r, "group"));
    }
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
    json_decref(groups);
}

/* "&name=value" (value escaped) appended to query. -1 when it does not fit. */
static int s_add(char *query, size_t size, const char *name, const char *value)
{
    char escaped[512];
    size_t len = strlen(query);
    if (cli_escape(value, escaped, sizeof escaped) != 0)
        return -1;
    int n = snprintf(query + len, size - len, "&%s=%s", name, escaped);
    return n < 0 || (size_t)n >= size - len ? -1 : 0;
}

int cli_requests(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "pending", 0, NULL, 0 }, { "state", 1, NULL, 0 },
                         { "group", 1, NULL, 0 },   { "owner", 1, NULL, 0 },
                         { "kind", 1, NULL, 0 },    { NULL } };
    const char *pos[1];
    char query[S_QUERY_MAX] = "";
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0 || (opts[0].set && opts[1].set) ||
        (opts[0].set && s_add(query, sizeof query, "state", "PENDING_APPROVAL") != 0) ||
        (opts[1].set && s_add(query, sizeof query, "state", opts[1].value) != 0) ||
        (opts[2].set && s_add(query, sizeof query, "group", opts[2].value) != 0) ||
        (opts[3].set && s_add(query, sizeof query, "owner", opts[3].value) != 0) ||
        (opts[4].set && s_add(query, sizeof query, "kind", opts[4].value) != 0)) {
        fprintf(stderr, "usage: berth requests [--pending | --state S] [--group G] [--owner U]\n"
                        "         [--kind vm|onboarding|allocation]\n"
                        "  --pending: the requests waiting for your decision\n");
        return 2;
    }
    char path[S_QUERY_MAX + 32];
    snprintf(path, sizeof path, "/v1/requests%s%s", query[0] ? "?" : "", query[0] ? query + 1 : "");
    json_t *all = cli_get_all(cli, path, PAGE_LIMIT, "requests");
    int rc = all ? 0 : 1;
    if (rc == 0) {
        if (cli->json) {
            json_t *doc = json_pack("{s:O, s:n}", "requests", all, "next_marker");
            cli_print_json(doc);
            json_decref(doc);
        } else
            s_table(cli, all);
    }
    json_decref(all);
    return rc;
}

/* POST /v1/requests/ID/approve or reject (with reason), then the request as decided. */
static int s_decide(cli_t *cli, const char *id, int approve, const char *reason)
{
    char path[CLI_PATH_MAX + 16];
    if (cli_path(path, CLI_PATH_MAX, "requests", id) != 0) {
        fprintf(stderr, "berth %s: request id too long\n", approve ? "approve" : "reject");
        return 2;
    }
    strcat(path, approve ? "/approve" : "/reject");
    json_t *ask = reason ? json_pack("{s:s}", "reason", reason) : json_object();
    json_t *body = NULL;
    int rc = cli_http(cli, "POST", path, ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    json_t *r = json_object_get(body, "request");
    if (cli->json)
        cli_print_json(body);
    else if (json_is_string(json_object_get(r, "awaiting")))
        printf("request %s: your step is recorded; it now waits for the %s level\n", T(r, "id"),
               T(r, "awaiting"));
    else
        printf("request %s: %s by %s\n", T(r, "id"), T(r, "state"), T(r, "decided_by"));
    json_decref(body);
    return 0;
}

int cli_approve(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    if (cli_parse(argc, argv, NULL, pos, 1, 1) != 0) {
        fprintf(stderr, "usage: berth approve ID\n");
        return 2;
    }
    return s_decide(cli, pos[0], 1, NULL);
}

int cli_reject(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "reason", 1, NULL, 0 }, { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0 || !opts[0].set || !*opts[0].value) {
        fprintf(stderr, "usage: berth reject ID --reason TEXT   (the requester sees TEXT)\n");
        return 2;
    }
    return s_decide(cli, pos[0], 0, opts[0].value);
}
