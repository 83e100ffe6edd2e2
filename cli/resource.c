/*  resource: the verbs every listed kind of resource has (berth image|network|ssh-key list,
    show, delete), one way: GET /v1/<collection>, GET and DELETE /v1/<collection>/<ref>. */
#include "cli.h"

int cli_resource(cli_t *cli, const cli_resource_t *r, int argc, char **argv)
{
    const char *verb = argc > 1 && argv[1][0] != '-' ? argv[1] : "list";
    int shift = argc > 1 && argv[1][0] != '-' ? 1 : 0;
    if (streq(verb, r->make_verb))
        return r->make(cli, argc - shift, argv + shift);
    const char *pos[1] = { NULL };
    cli_opt_t none[] = { { NULL } };
    int one = streq(verb, "show") || streq(verb, "delete");
    if ((!one && !streq(verb, "list")) ||
        cli_parse(argc - shift, argv + shift, none, pos, one, one) != 0) {
        fputs(r->usage, stderr);
        return 2;
    }
    char path[CLI_PATH_MAX], command[64];
    json_t *answer = NULL;
    if (!one) {
        snprintf(path, sizeof path, "/v1/%s", r->collection);
        if (cli_http(cli, "GET", path, NULL, &answer) != 0)
            return 1;
        if (cli->json)
            cli_print_json(answer);
        else
            r->table(json_object_get(answer, r->collection));
        json_decref(answer);
        return 0;
    }
    snprintf(command, sizeof command, "%s %s", r->noun, verb);
    if (streq(verb, "show")) {
        int rc = cli_get_one(cli, command, r->collection, pos[0], &answer);
        if (rc != 0)
            return rc;
        r->show(cli, answer);
    } else {
        if (cli_path(path, sizeof path, r->collection, pos[0]) != 0) {
            fprintf(stderr, "berth %s: %s too long\n", command, r->ref);
            return 2;
        }
        if (cli_http(cli, "DELETE", path, NULL, &answer) != 0)
            return 1;
        if (cli->json)
            cli_print_json(answer);
        else
            printf("%s %s deleted\n", r->label,
                   cli_text(json_object_get(json_object_get(answer, r->one), "name"),
                            (char[256]){ 0 }, 256));
    }
    json_decref(answer);
    return 0;
}
