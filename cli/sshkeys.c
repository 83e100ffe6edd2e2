/*  berth ssh-keys, ssh-key add|show|delete: the SSH public keys kept on one's account (POST
    and GET /v1/keys, GET and DELETE /v1/keys/{name}). A request names them (berth request
    ... --ssh-key NAME) to have them installed in its VMs. */
#include "cli.h"

#include <errno.h>

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] =
    "usage: berth ssh-key list | berth ssh-key show NAME | berth ssh-key delete NAME\n"
    "       berth ssh-key add NAME FILE | berth ssh-key add NAME --key 'ssh-ed25519 AAAA...'\n"
    "  FILE: an OpenSSH public key file (~/.ssh/id_ed25519.pub), or - for standard input\n";

/* The first line of path ("-": standard input), at most max bytes, into a new string (the
   gateway checks what it is). NULL with the reason printed. */
static char *s_read_key(const char *path, size_t max)
{
    FILE *f = streq(path, "-") ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "berth ssh-key add: cannot read '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    char *text = malloc(max + 2);
    size_t len = 0;
    int c;
    while (text && (c = fgetc(f)) != EOF && c != '\n' && len <= max)
        text[len++] = (char)c;
    if (f != stdin)
        fclose(f);
    if (!text) {
        fputs("berth ssh-key add: out of memory\n", stderr);
        return NULL;
    }
    if (len > max) {
        fprintf(stderr, "berth ssh-key add: '%s' is longer than a public key\n", path);
        free(text);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

static void s_show(cli_t *cli, json_t *answer)
{
    if (cli->json) {
        cli_print_json(answer);
        return;
    }
    static const char *const first[] = { "name", "type", "fingerprint", "comment", NULL };
    cli_print_object(json_object_get(answer, "key"), first);
}

static int s_add(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "key", 1, NULL, 0 }, { NULL } };
    const char *pos[2] = { NULL, NULL };
    if (cli_parse(argc, argv, opts, pos, 1, 2) != 0 || (opts[0].set == (pos[1] != NULL))) {
        fputs(s_usage, stderr);
        return 2;
    }
    char *line = opts[0].set ? strdup(opts[0].value) : s_read_key(pos[1], 16384);
    if (!line)
        return 1;
    json_t *ask = json_pack("{s:s, s:s}", "name", pos[0], "public_key", line);
    free(line);
    if (!ask) {
        fputs("berth ssh-key add: the key is not text (UTF-8)\n", stderr);
        return 1;
    }
    json_t *body = NULL;
    int rc = cli_http(cli, "POST", "/v1/keys", ask, &body);
    json_decref(ask);
    if (rc != 0)
        return 1;
    json_t *key = json_object_get(body, "key");
    if (cli->json)
        cli_print_json(body);
    else
        printf("SSH key %s added: %s %s\n", T(key, "name"), T(key, "type"), T(key, "fingerprint"));
    json_decref(body);
    return 0;
}

static int s_list(cli_t *cli)
{
    json_t *body = NULL;
    if (cli_http(cli, "GET", "/v1/keys", NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        cli_table_t *table = cli_table_new(5, "NAME", "TYPE", "FINGERPRINT", "COMMENT", "ADDED");
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(body, "keys"), i, k)
            cli_table_add(table, T(k, "name"), T(k, "type"), T(k, "fingerprint"), T(k, "comment"),
                          T(k, "created_at"));
        cli_table_print(table, stdout);
        cli_table_destroy(&table);
    }
    json_decref(body);
    return 0;
}

int cli_ssh_keys(cli_t *cli, int argc, char **argv)
{
    const char *verb = argc > 1 && argv[1][0] != '-' ? argv[1] : "list";
    int shift = argc > 1 && argv[1][0] != '-' ? 1 : 0;
    if (streq(verb, "add"))
        return s_add(cli, argc - shift, argv + shift);
    const char *pos[1] = { NULL };
    cli_opt_t none[] = { { NULL } };
    if (streq(verb, "show") || streq(verb, "delete")) {
        if (cli_parse(argc - shift, argv + shift, none, pos, 1, 1) != 0) {
            fputs(s_usage, stderr);
            return 2;
        }
        json_t *answer = NULL;
        int rc;
        if (streq(verb, "show"))
            rc = cli_get_one(cli, "ssh-key show", "keys", pos[0], &answer);
        else {
            char path[CLI_PATH_MAX];
            if (cli_path(path, sizeof path, "keys", pos[0]) != 0) {
                fputs("berth ssh-key delete: name too long\n", stderr);
                return 2;
            }
            rc = cli_http(cli, "DELETE", path, NULL, &answer) != 0 ? 1 : 0;
        }
        if (rc != 0)
            return rc;
        if (streq(verb, "show"))
            s_show(cli, answer);
        else if (cli->json)
            cli_print_json(answer);
        else
            printf("SSH key %s deleted\n", T(json_object_get(answer, "key"), "name"));
        json_decref(answer);
        return 0;
    }
    if (!streq(verb, "list") || cli_parse(argc - shift, argv + shift, none, pos, 0, 0) != 0) {
        fputs(s_usage, stderr);
        return 2;
    }
    return s_list(cli);
}
