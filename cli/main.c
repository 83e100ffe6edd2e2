/*  berth: the command-line client. Talks to the gateway's REST API at BERTH_URL
    (default http://127.0.0.1:8080); prints tables by default and JSON with -o json.
    Errors print the server's message and exit non-zero. */
#include "cli.h"

#include <curl/curl.h>
#include <getopt.h>

typedef int(cli_cmd_fn)(cli_t *cli, int argc, char **argv);

typedef struct {
    const char *name;
    cli_cmd_fn *fn;
    const char *usage;
} s_command_t;

static const s_command_t s_commands[] = {
    { "health", cli_health, "health                      every registered service instance" },
    { NULL, NULL, NULL },
};

static void s_usage(FILE *out)
{
    fprintf(out, "usage: berth [-o table|json] COMMAND [ARGS]\n\ncommands:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        fprintf(out, "  %s\n", c->usage);
    fprintf(out, "\nenvironment: BERTH_URL (default http://127.0.0.1:8080)\n");
}

int main(int argc, char **argv)
{
    cli_t cli = { .url = getenv("BERTH_URL") ? getenv("BERTH_URL") : "http://127.0.0.1:8080" };
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (streq(argv[i], "-o") && i + 1 < argc) {
            cli.json = streq(argv[++i], "json");
            if (!cli.json && !streq(argv[i], "table")) {
                fprintf(stderr, "berth: -o takes table or json\n");
                return 2;
            }
        } else if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
            s_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "berth: unknown option %s\n", argv[i]);
            s_usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        s_usage(stderr);
        return 2;
    }
    for (const s_command_t *c = s_commands; c->name; c++)
        if (streq(argv[i], c->name)) {
            curl_global_init(CURL_GLOBAL_DEFAULT);
            int rc = c->fn(&cli, argc - i, argv + i);
            curl_global_cleanup();
            return rc;
        }
    fprintf(stderr, "berth: unknown command %s\n", argv[i]);
    s_usage(stderr);
    return 2;
}
