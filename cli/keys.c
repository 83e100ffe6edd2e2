/*  berth keys: one's own API keys (POST/GET /v1/auth/keys, DELETE /v1/auth/keys/{id}). The
    secret is printed once, when the key is made; a script then sends it as a bearer token
    (BERTH_TOKEN or Authorization: Bearer). */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] =
    "usage: berth keys create NAME [--days N] [--groups G1,G2]\n"
    "       berth keys list\n"
    "       berth keys revoke ID\n";

static int s_create(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "days", 1, NULL, 0 }, { "groups", 1, NULL, 0 }, { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0) {
        fputs(s_usage, stderr);
        return 2;
    }
    json_t *ask = json_pack("{s:s}", "name", pos[0]);
    if (opts[0].set) {
        int64_t days;
        if (util_parse_int(opts[0].value, 1, 100000, &days) != 0) {
            fprintf(stderr, "berth keys: --days must be a whole number of days\n");
            json_decref(ask);
            return 2;
        }
        json_object_set_new(ask, "expires_in_days", json_integer(days));
    }
    if (opts[1].set) {
        json_t *groups = json_array();
        char copy[4096];
        util_strlcpy(copy, opts[1].value, sizeof copy);
        char *save = NULL;
        for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save))
            json_array_append_new(groups, json_string(g));
        json_object_set_new(ask, "groups", groups);
    }
    json_t *body = NULL;
    int rc = cli_http(cli, "POST", "/v1/auth/keys", ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    json_t *key = json_object_get(body, "key");
    if (cli->json)
        cli_print_json(body);
    else {
        printf("API key %s (%s) made, expires %s\n", T(key, "id"), T(key, "name"),
               T(key, "expires_at"));
        printf("%s\n", json_string_value(json_object_get(body, "secret")));
        fprintf(stderr, "keep it now: it is not shown again\n");
    }
    json_t *secret = json_object_get(body, "secret");
    if (json_is_string(secret) && json_string_length(secret))
        explicit_bzero((char *)json_string_value(secret), json_string_length(secret));
    json_decref(body);
    return 0;
}

static int s_list(cli_t *cli)
{
    json_t *body = NULL;
    if (cli_http(cli, "GET", "/v1/auth/keys", NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table = cli_table_new(5, "ID", "NAME", "GROUPS", "CREATED", "EXPIRES");
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(body, "keys"), i, k)
        {
            json_t *groups = json_object_get(k, "groups");
            char buf[256];
            cli_table_add(table, T(k, "id"), T(k, "name"),
                          json_array_size(groups) ? cli_text(groups, buf, sizeof buf) : "(all)",
                          T(k, "created_at"), T(k, "expires_at"));
        }
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(body);
    return 0;
}

int cli_keys(cli_t *cli, int argc, char **argv)
{
    if (argc >= 2 && streq(argv[1], "create"))
        return s_create(cli, argc - 1, argv + 1);
    const char *pos[2];
    if (cli_parse(argc, argv, NULL, pos, 1, 2) != 0 ||
        !((streq(pos[0], "list") && !pos[1]) || (streq(pos[0], "revoke") && pos[1]))) {
        fputs(s_usage, stderr);
        return 2;
    }
    if (streq(pos[0], "list"))
        return s_list(cli);
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "auth/keys", pos[1]) != 0) {
        fprintf(stderr, "berth keys: id too long\n");
        return 2;
    }
    json_t *body = NULL;
    if (cli_http(cli, "DELETE", path, NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else
        printf("API key %s revoked\n", pos[1]);
    json_decref(body);
    return 0;
}
