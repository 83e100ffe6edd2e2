/*  berth users: an admin enables and disables users (PATCH /v1/users/{name}). A disabled user
    cannot sign in and its tokens are refused at once. */
#include "cli.h"

static const char s_usage[] = "usage: berth users enable USER\n"
                              "       berth users disable USER\n";

int cli_users(cli_t *cli, int argc, char **argv)
{
    const char *pos[2];
    if (cli_parse(argc, argv, NULL, pos, 2, 2) != 0 ||
        (!streq(pos[0], "enable") && !streq(pos[0], "disable"))) {
        fputs(s_usage, stderr);
        return 2;
    }
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "users", pos[1]) != 0) {
        fprintf(stderr, "berth users: user name too long\n");
        return 2;
    }
    json_t *ask = json_pack("{s:s}", "state", streq(pos[0], "enable") ? "ACTIVE" : "DISABLED");
    json_t *body = NULL;
    int rc = ask ? cli_http(cli, "PATCH", path, ask, &body) : -1;
    json_decref(ask);
    if (rc != 0)
        return 1;
    json_t *user = json_object_get(body, "user");
    if (cli->json)
        cli_print_json(body);
    else
        printf("user %s is %s\n", json_string_value(json_object_get(user, "username")),
               json_string_value(json_object_get(user, "state")));
    json_decref(body);
    return 0;
}
