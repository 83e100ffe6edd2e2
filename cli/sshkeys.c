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

/* The caller's keys as a table. */
static void s_table(json_t *keys)
{
    cli_table_t *table = cli_table_new(5, "NAME", "TYPE", "FINGERPRINT", "COMMENT", "ADDED");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
        cli_table_add(table, T(k, "name"), T(k, "type"), T(k, "fingerprint"), T(k, "comment"),
                      T(k, "created_at"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

int cli_ssh_keys(cli_t *cli, int argc, char **argv)
{
    static const cli_resource_t keys = { .noun = "ssh-key",
                                         .label = "SSH key",
                                         .collection = "keys",
                                         .one = "key",
                                         .ref = "name",
                                         .make_verb = "add",
                                         .make = s_add,
                                         .show = s_show,
                                         .table = s_table,
                                         .usage = s_usage };
    return cli_resource(cli, &keys, argc, argv);
}
