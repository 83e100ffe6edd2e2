/*  cli args: the options and positional arguments of one command, and the time formats
    `berth usage` accepts. */
#include "cli.h"

#include <time.h>

static cli_opt_t *s_find(cli_opt_t *opts, const char *name, size_t len)
{
    for (cli_opt_t *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

int cli_parse(int argc, char **argv, cli_opt_t *opts, const char **pos, int min_pos, int max_pos)
{
    int npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && streq(arg, "--")) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && arg[0] == '-' && arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            cli_opt_t *o = s_find(opts, name, len);
            if (!o) {
                fprintf(stderr, "berth %s: unknown option --%.*s\n", argv[0], (int)len, name);
                return -1;
            }
            if (o->has_value) {
                if (eq)
                    o->value = eq + 1;
                else if (i + 1 < argc)
                    o->value = argv[++i];
                else {
                    fprintf(stderr, "berth %s: --%s needs a value\n", argv[0], o->name);
                    return -1;
                }
            } else if (eq) {
                fprintf(stderr, "berth %s: --%s takes no value\n", argv[0], o->name);
                return -1;
            }
            o->set = 1;
            continue;
        }
        if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
            fprintf(stderr, "berth %s: unknown option %s\n", argv[0], arg);
            return -1;
        }
        if (npos >= max_pos) {
            fprintf(stderr, "berth %s: unexpected argument %s\n", argv[0], arg);
            return -1;
        }
        pos[npos++] = arg;
    }
    if (npos < min_pos) {
        fprintf(stderr, "berth %s: missing argument\n", argv[0]);
        return -1;
    }
    for (int i = npos; i < max_pos; i++)
        pos[i] = NULL;
    return 0;
}

int cli_time(const char *text, char *out, size_t size)
{
    int64_t now = util_now_ms() / 1000;
    int64_t at;
    if (streq(text, "now"))
        at = now;
    else if (text[0] == '-' && text[1] >= '0' && text[1] <= '9') {
        char *end = NULL;
        long long n = strtoll(text + 1, &end, 10);
        int64_t unit = 0;
        if (end && end[0] && !end[1])
            unit = end[0] == 's'   ? 1
                   : end[0] == 'm' ? 60
                   : end[0] == 'h' ? 3600
                   : end[0] == 'd' ? 86400
                                   : 0;
        if (!unit || n < 0 || n > 100LL * 365 * 86400 / unit)
            return -1;
        at = now - n * unit;
    } else
        return util_strlcpy(out, text, size);
    time_t t = (time_t)at;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return -1;
    return 0;
}
