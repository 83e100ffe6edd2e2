/*  berth users: admins list, show, enable, disable and delete users (GET /v1/users,
    GET/PATCH/DELETE /v1/users/{name}); anyone may show themself. A disabled user cannot sign
    in and their tokens and API keys are refused at once; a deleted one takes their keys and
    memberships along. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] = "usage: berth users list [--state S] [--role R] [--name PREFIX]\n"
                              "       berth users create USER [--role user|operator|admin]\n"
                              "             [--display-name TEXT] [--email ADDR] "
                              "[--password-stdin]\n"
                              "       berth users show USER\n"
                              "       berth users enable USER | disable USER | delete USER\n";

static int s_list(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "state", 1, NULL, 0 },
                         { "role", 1, NULL, 0 },
                         { "name", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0) {
        fputs(s_usage, stderr);
        return 2;
    }
    char path[1024] = "/v1/users", value[256 * 3 + 1];
    const char *names[] = { "state", "role", "name" };
    for (int i = 0; i < 3; i++) {
        if (!opts[i].set)
            continue;
        if (cli_escape(opts[i].value, value, sizeof value) != 0) {
            fprintf(stderr, "berth users: --%s too long\n", names[i]);
            return 2;
        }
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "%s%s=%s", strchr(path, '?') ? "&" : "?",
                 names[i], value);
    }
    json_t *all = cli_get_all(cli, path, 500, "users");
    if (!all)
        return 1;
    if (cli->json) {
        json_t *doc = json_pack("{s:O, s:n}", "users", all, "next_marker");
        cli_print_json(doc);
        json_decref(doc);
    } else {
        cli_table_t *table = cli_table_new(6, "USER", "ROLE", "STATE", "DISPLAY NAME", "EMAIL",
                                           "CREATED");
        size_t i;
        json_t *u;
        json_array_foreach(all, i, u)
            cli_table_add(table, T(u, "username"), T(u, "role"), T(u, "state"),
                          T(u, "display_name"), T(u, "email"), T(u, "created_at"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(all);
    return 0;
}

static int s_show(cli_t *cli, const char *path)
{
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return 1;
    json_t *user = json_object_get(body, "user");
    if (cli->json)
        cli_print_json(body);
    else {
        static const char *const first[] = { "username", "display_name", "email", "role",
                                             "state",    "created_at",   NULL };
        json_t *groups = json_incref(json_object_get(user, "groups"));
        json_object_del(user, "groups");
        cli_print_object(user, first);
        size_t i;
        json_t *m;
        json_array_foreach(groups, i, m) printf("group %s: %s\n", T(m, "group"), T(m, "role"));
        json_decref(groups);
    }
    json_decref(body);
    return 0;
}

/* berth users create: POST /v1/users (admins). The password is asked for twice without echo,
   or read from one line of stdin. */
static int s_create(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "role", 1, NULL, 0 },
                         { "display-name", 1, NULL, 0 },
                         { "email", 1, NULL, 0 },
                         { "password-stdin", 0, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0) {
        fputs(s_usage, stderr);
        return 2;
    }
    char password[1024] = "", again[1024] = "";
    int from_stdin = opts[3].set;
    if (cli_secret(from_stdin, "Password: ", password, sizeof password) != 0 ||
        (!from_stdin && isatty(STDIN_FILENO) &&
         (cli_secret(0, "Password again: ", again, sizeof again) != 0 ||
          !streq(password, again)))) {
        fprintf(stderr, "berth users create: no password given, or the two differ\n");
        explicit_bzero(password, sizeof password);
        explicit_bzero(again, sizeof again);
        return 2;
    }
    explicit_bzero(again, sizeof again);
    json_t *ask = json_pack("{s:s, s:s}", "username", pos[0], "password", password);
    explicit_bzero(password, sizeof password);
    const char *fields[] = { "role", "display_name", "email" };
    for (int i = 0; ask && i < 3; i++)
        if (opts[i].set)
            json_object_set_new(ask, fields[i], json_string(opts[i].value));
    json_t *body = NULL;
    int rc = ask ? cli_http(cli, "POST", "/v1/users", ask, &body) : -1;
    json_decref(ask);
    if (rc != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else
        printf("user %s created (%s)\n", T(json_object_get(body, "user"), "username"),
               T(json_object_get(body, "user"), "role"));
    json_decref(body);
    return 0;
}

int cli_users(cli_t *cli, int argc, char **argv)
{
    if (argc >= 2 && streq(argv[1], "list"))
        return s_list(cli, argc - 1, argv + 1);
    if (argc >= 2 && streq(argv[1], "create"))
        return s_create(cli, argc - 1, argv + 1);
    const char *pos[2];
    if (cli_parse(argc, argv, NULL, pos, 2, 2) != 0 ||
        (!streq(pos[0], "enable") && !streq(pos[0], "disable") && !streq(pos[0], "show") &&
         !streq(pos[0], "delete"))) {
        fputs(s_usage, stderr);
        return 2;
    }
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "users", pos[1]) != 0) {
        fprintf(stderr, "berth users: user name too long\n");
        return 2;
    }
    if (streq(pos[0], "show"))
        return s_show(cli, path);
    json_t *body = NULL;
    if (streq(pos[0], "delete")) {
        if (cli_http(cli, "DELETE", path, NULL, &body) != 0)
            return 1;
        if (cli->json)
            cli_print_json(body);
        else
            printf("user %s deleted\n", pos[1]);
        json_decref(body);
        return 0;
    }
    json_t *ask = json_pack("{s:s}", "state", streq(pos[0], "enable") ? "ACTIVE" : "DISABLED");
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
