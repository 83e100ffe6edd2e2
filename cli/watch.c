/*  berth watch: follow the live events (GET /v1/events) of one VM or of everything the user
    may see, a line each as they arrive (-o json: one JSON object a line). A broken stream is
    reopened after the last event received (Last-Event-ID), so nothing is missed; watching one
    VM ends when it is DISPOSED. */
#include "cli.h"

#define RECONNECT_MS 1000

/* "12:04:05" of the event's at_ms (local time), "--:--:--" without one. */
static const char *s_clock(json_t *data, char out[16])
{
    json_int_t ms = json_integer_value(json_object_get(data, "at_ms"));
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !localtime_r(&t, &tm) || strftime(out, 16, "%H:%M:%S", &tm) == 0)
        snprintf(out, 16, "--:--:--");
    return out;
}

static const char *s_str(json_t *data, const char *key)
{
    const char *s = json_string_value(json_object_get(data, key));
    return s && *s ? s : "-";
}

/* One event as a line a person reads. */
static void s_print(const cli_event_t *ev)
{
    json_t *d = ev->data;
    char when[16];
    s_clock(d, when);
    if (streq(ev->event, "vm.state"))
        printf("%s  vm %s  %s -> %s%s%s\n", when, s_str(d, "vm"), s_str(d, "from"),
               s_str(d, "state"), json_object_get(d, "host") ? "  host " : "",
               json_object_get(d, "host") ? s_str(d, "host") : "");
    else if (streq(ev->event, "vm.power"))
        printf("%s  vm %s  power %s -> %s\n", when, s_str(d, "vm"), s_str(d, "from"),
               s_str(d, "power_state"));
    else if (streq(ev->event, "task.state")) {
        json_t *percent = json_object_get(d, "percent");
        printf("%s  task %s  vm %s  %s  %s", when, s_str(d, "task"), s_str(d, "vm"),
               s_str(d, "state"), s_str(d, "stage"));
        if (json_is_integer(percent))
            printf("  %d%%", (int)json_integer_value(percent));
        printf("\n");
    } else if (streq(ev->event, "request.state"))
        printf("%s  request %s  %s -> %s\n", when, s_str(d, "request"), s_str(d, "from"),
               s_str(d, "state"));
    else {
        char *text = json_dumps(d, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s  %s  %s\n", when, ev->event, text ? text : "{}");
        free(text);
    }
}

int cli_watch(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "all", 0, NULL, 0 },
                         { "since", 1, NULL, 0 },
                         { "count", 1, NULL, 0 },
                         { "timeout", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1] = { NULL };
    int64_t count = 0, timeout = 0;
    if (cli_parse(argc, argv, opts, pos, 0, 1) != 0 || (!pos[0] && !opts[0].set) ||
        (pos[0] && opts[0].set) ||
        (opts[2].set && util_parse_int(opts[2].value, 1, INT32_MAX, &count) != 0) ||
        (opts[3].set && util_parse_int(opts[3].value, 1, 86400 * 366, &timeout) != 0)) {
        fprintf(stderr, "usage: berth watch VM|--all [--since EVENT-ID] [--count N] "
                        "[--timeout SECONDS]\n");
        return 2;
    }
    /* The VM by id or name, as the gateway resolves it. */
    char vm_id[128] = "";
    if (pos[0]) {
        json_t *body = NULL;
        int rc = cli_get_one(cli, "watch", "vms", pos[0], &body);
        if (rc != 0)
            return rc;
        const char *id = json_string_value(json_object_get(json_object_get(body, "vm"), "id"));
        util_strlcpy(vm_id, id ? id : "", sizeof vm_id);
        json_decref(body);
        if (!vm_id[0]) {
            fprintf(stderr, "berth: the gateway answered without the VM's id\n");
            return 1;
        }
    }
    char last[CLI_EVENT_ID_MAX] = "";
    if (opts[1].set)
        util_strlcpy(last, opts[1].value, sizeof last);
    int64_t deadline = timeout ? util_mono_ms() + timeout * 1000 : INT64_MAX;
    int64_t seen = 0;
    int rc = -1, failures = 0, connected = 0;
    while (rc < 0) {
        /* The first open says why it failed and stops; reopening after a break is quiet
           while the gateway may be restarting, then says why too. */
        int quiet = connected && failures < 30 && util_mono_ms() < deadline;
        cli_stream_t *stream = cli_stream_open(cli, last[0] ? last : NULL, quiet);
        if (!stream) {
            if (!quiet)
                rc = 1;
            else {
                failures++;
                cli_pause_ms(RECONNECT_MS);
            }
            continue;
        }
        if (!connected)
            fprintf(stderr, "berth: watching %s%s (Ctrl-C to stop)\n", vm_id[0] ? "VM " : "",
                    vm_id[0] ? vm_id : "everything you may see");
        connected = 1;
        failures = 0;
        for (;;) {
            int64_t left = deadline - util_mono_ms();
            if (left <= 0) {
                rc = 0;
                break;
            }
            cli_event_t ev;
            int got = cli_stream_next(stream, left < 1000 ? (int)left : 1000, &ev);
            if (got < 0)
                break; /* reopen after the last event */
            if (got == 0)
                continue;
            util_strlcpy(last, cli_stream_last_id(stream), sizeof last);
            if (streq(ev.event, "stream.end")) {
                const char *reason = json_string_value(json_object_get(ev.data, "reason"));
                fprintf(stderr, "berth: the gateway ended the stream: %s\n", reason ? reason : "-");
                /* Auth is over: reconnecting would only be refused. */
                if (reason && (strstr(reason, "token") || strstr(reason, "user")))
                    rc = 1;
                json_decref(ev.data);
                break;
            }
            const char *ev_vm = json_string_value(json_object_get(ev.data, "vm"));
            int shown = !streq(ev.event, "stream.open") &&
                        (!vm_id[0] || (ev_vm && streq(ev_vm, vm_id)));
            if (shown) {
                if (cli->json) {
                    json_t *line = json_pack("{s:s, s:s, s:O}", "id", ev.id, "event", ev.event,
                                             "data", ev.data);
                    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
                    if (text)
                        puts(text);
                    free(text);
                    json_decref(line);
                } else
                    s_print(&ev);
                fflush(stdout);
                seen++;
            }
            const char *state = json_string_value(json_object_get(ev.data, "state"));
            int gone = shown && vm_id[0] && streq(ev.event, "vm.state") && state &&
                       streq(state, "DISPOSED");
            json_decref(ev.data);
            if (gone || (count && seen >= count)) {
                rc = 0;
                break;
            }
        }
        cli_stream_destroy(&stream);
        if (rc < 0)
            cli_pause_ms(RECONNECT_MS);
    }
    return rc;
}
