/*  berth request, berth dispose: ask for VMs or get rid of one, and with --wait follow the
    work to its end with a live line per VM ("name  STAGE  NN%  STATE"). The exit status says
    how it ended: 0 when every VM got where it was going, 1 when one failed (its fault is
    printed) or the wait timed out. */
#include "cli.h"

#include <unistd.h>

#define T(obj, key)       cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)
#define POLL_MS           500
#define DEFAULT_TIMEOUT_S 900

/* Where one VM stands while we wait. */
typedef struct {
    const char *state; /* VM state, "-" while unknown */
    int done;          /* reached a state it will not leave by itself */
    int failed;        /* ... and not the one we waited for */
} s_status_t;

#define BAR_WIDTH 20

/* One VM's line: its name and id, then on a terminal a bar of its task's percent, its stage,
   the percent and its state. live holds the percents task.state events brought (task id ->
   percent), which may be ahead of the task as last read. */
static void s_line(cli_progress_t *progress, const char *key, const char *name, const char *id,
                   json_t *task, const char *state, json_t *live)
{
    char line[1024], stage[128], bar[BAR_WIDTH + 3] = "";
    cli_text(json_object_get(task, "stage"), stage, sizeof stage);
    json_int_t percent = json_integer_value(json_object_get(task, "percent"));
    const char *task_id = json_string_value(json_object_get(task, "id"));
    json_t *heard = task_id ? json_object_get(live, task_id) : NULL;
    if (json_is_integer(heard) && json_integer_value(heard) > percent)
        percent = json_integer_value(heard); /* a task's percent only grows */
    if (percent < 0)
        percent = 0;
    if (percent > 100)
        percent = 100;
    json_int_t position = json_integer_value(json_object_get(task, "queue_position"));
    if (position > 0) /* a heavy task waiting for a slot on its host */
        snprintf(stage, sizeof stage, "queued #%lld", (long long)position);
    if (cli_progress_tty(progress)) {
        int filled = (int)(percent * BAR_WIDTH / 100);
        bar[0] = '[';
        for (int i = 0; i < BAR_WIDTH; i++)
            bar[1 + i] = i < filled ? '#' : '.';
        bar[BAR_WIDTH + 1] = ']';
        bar[BAR_WIDTH + 2] = '\0';
    }
    snprintf(line, sizeof line, "%-24s  %-36s  %s%s%-16s %3d%%  %s", name, id, bar,
             bar[0] ? " " : "", stage, (int)percent, state);
    cli_progress_set(progress, key, line);
}

/* The task the VM points at: from the request's tasks when it is there, else fetched.
   Borrowed; when fetched, *owned holds the body it lives in (the caller json_decrefs it). */
static json_t *s_task_of(cli_t *cli, json_t *vm, json_t *tasks, json_t **owned)
{
    *owned = NULL;
    const char *id = json_string_value(json_object_get(vm, "task"));
    const char *vm_id = json_string_value(json_object_get(vm, "id"));
    size_t i;
    json_t *t;
    json_array_foreach(tasks, i, t)
    {
        const char *tid = json_string_value(json_object_get(t, "id"));
        const char *target = json_string_value(json_object_get(t, "target"));
        if ((id && tid && streq(id, tid)) || (!id && target && vm_id && streq(target, vm_id)))
            return t;
    }
    if (!id)
        return NULL;
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "tasks", id) != 0)
        return NULL;
    long status = 0;
    json_t *body = NULL;
    if (cli_request(cli, "GET", path, NULL, &status, &body) != 0 || status != 200) {
        json_decref(body);
        return NULL;
    }
    *owned = body;
    return json_object_get(body, "task");
}

static void s_print_fault(const char *name, const char *id, const char *state, json_t *vm,
                          json_t *task)
{
    const char *fault = json_string_value(json_object_get(vm, "fault"));
    if (!fault || !*fault)
        fault = json_string_value(json_object_get(task, "fault"));
    fprintf(stderr, "berth: %s (%s) is %s: %s\n", name, id, state,
            fault && *fault ? fault : "no reason given");
}

/* Does the event concern the request id or one of its VMs (what its view shows)? */
static int s_concerns(const cli_event_t *ev, const char *id, json_t *req)
{
    const char *request = json_string_value(json_object_get(ev->data, "request"));
    const char *vm = json_string_value(json_object_get(ev->data, "vm"));
    if (request && streq(request, id))
        return 1;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(req, "vms"), i, v)
    {
        const char *vid = json_string_value(json_object_get(v, "id"));
        if (vm && vid && streq(vm, vid))
            return 1;
    }
    return 0;
}

/* Wait until something happens to the request (an event about it or its VMs on the stream;
   what came right after it is taken too, so a burst costs one look), or until the deadline.
   Without a stream (refused, or broken and not reopened), a poll's pause instead. */
static void s_await(cli_t *cli, cli_stream_t **stream, const char *id, json_t *req,
                    int64_t deadline, json_t *live)
{
    if (!*stream) {
        cli_pause_ms(POLL_MS);
        return;
    }
    int relevant = 0;
    while (util_mono_ms() < deadline) {
        int64_t left = deadline - util_mono_ms();
        cli_event_t ev;
        int got = cli_stream_next(*stream, relevant ? 50 : (left < 1000 ? (int)left : 1000), &ev);
        if (got < 0) {
            /* Broken: reopen after the last event; failing that, poll. */
            char last[CLI_EVENT_ID_MAX];
            util_strlcpy(last, cli_stream_last_id(*stream), sizeof last);
            cli_stream_destroy(stream);
            *stream = cli_stream_open(cli, last[0] ? last : NULL, 1);
            return;
        }
        if (got == 0) {
            if (relevant)
                return;
            continue;
        }
        int concerns = s_concerns(&ev, id, req);
        relevant |= concerns || streq(ev.event, "stream.end");
        const char *task = json_string_value(json_object_get(ev.data, "task"));
        json_t *percent = json_object_get(ev.data, "percent");
        if (concerns && streq(ev.event, "task.state") && task && json_is_integer(percent))
            json_object_set(live, task, percent);
        json_decref(ev.data);
    }
}

/* Follow request id until every VM is ACTIVE (0) or one failed (1): each look at the request
   follows an event about it on the live stream (opened before the request was made, so
   nothing is missed), or a poll when the stream cannot be had. */
static int s_wait_request(cli_t *cli, const char *id, int timeout_s, cli_stream_t *stream)
{
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "requests", id) != 0)
        return 1;
    FILE *out = cli->json ? stderr : stdout;
    cli_progress_t *progress = cli_progress_new(out);
    int64_t deadline = util_mono_ms() + (int64_t)timeout_s * 1000;
    int rc = -1, told_pending = 0;
    json_t *last = NULL, *live = json_object();
    while (rc < 0) {
        json_t *body = NULL;
        if (cli_http(cli, "GET", path, NULL, &body) != 0) {
            rc = 1;
            break;
        }
        json_decref(last);
        last = body;
        json_t *req = json_object_get(body, "request");
        const char *state = json_string_value(json_object_get(req, "state"));
        json_t *vms = json_object_get(req, "vms");
        json_t *tasks = json_object_get(req, "tasks");
        int all_done = json_array_size(vms) > 0, failed = 0;
        size_t i;
        json_t *vm;
        json_array_foreach(vms, i, vm)
        {
            const char *vm_id = json_string_value(json_object_get(vm, "id"));
            const char *name = json_string_value(json_object_get(vm, "name"));
            const char *vstate = json_string_value(json_object_get(vm, "state"));
            json_t *owned = NULL;
            json_t *task = s_task_of(cli, vm, tasks, &owned);
            s_line(progress, vm_id ? vm_id : "?", name ? name : "-", vm_id ? vm_id : "-", task,
                   vstate ? vstate : "-", live);
            int ok = vstate && streq(vstate, "ACTIVE");
            int bad = vstate && (streq(vstate, "ERROR") || streq(vstate, "REJECTED") ||
                                 streq(vstate, "DISPOSED"));
            if (!ok && !bad)
                all_done = 0;
            failed |= bad;
            json_decref(owned);
        }
        /* Said before drawing: on a terminal the lines are redrawn in place below it. */
        if (state && streq(state, "PENDING_APPROVAL") && !told_pending) {
            fprintf(stderr, "berth: request %s waits for an administrator's approval\n", id);
            told_pending = 1;
        }
        cli_progress_draw(progress);
        if (state && streq(state, "REJECTED")) {
            const char *reason = json_string_value(json_object_get(req, "reason"));
            fprintf(stderr, "berth: request %s was rejected: %s\n", id,
                    reason && *reason ? reason : "no reason given");
            rc = 1;
        } else if (all_done)
            rc = failed ? 1 : 0;
        else if (util_mono_ms() >= deadline) {
            fprintf(stderr, "berth: request %s did not finish within %d s (state %s)\n", id,
                    timeout_s, state ? state : "-");
            rc = 1;
        } else
            s_await(cli, &stream, id, req, deadline, live);
    }
    cli_stream_destroy(&stream);
    json_decref(live);
    /* Say why each failed VM failed. */
    json_t *req = json_object_get(last, "request");
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(req, "vms"), i, vm)
    {
        const char *vstate = json_string_value(json_object_get(vm, "state"));
        if (vstate &&
            (streq(vstate, "ERROR") || streq(vstate, "REJECTED") || streq(vstate, "DISPOSED"))) {
            json_t *owned = NULL;
            json_t *task = s_task_of(cli, vm, json_object_get(req, "tasks"), &owned);
            s_print_fault(T(vm, "name"), T(vm, "id"), vstate, vm, task);
            json_decref(owned);
        }
    }
    if (cli->json && last)
        cli_print_json(last);
    json_decref(last);
    cli_progress_destroy(&progress);
    return rc;
}

static void s_request_table(json_t *req)
{
    printf("request %s: %s\n", T(req, "id"), T(req, "state"));
    cli_table_t *table = cli_table_new(4, "NAME", "STATE", "TASK", "ID");
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(req, "vms"), i, vm)
        cli_table_add(table, T(vm, "name"), T(vm, "state"), T(vm, "task"), T(vm, "id"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

int cli_take_all(int argc, char **argv, const char *name, json_t *values)
{
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", name);
    size_t len = strlen(flag);
    int out = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && streq(argv[i], flag)) {
            if (i + 1 >= argc)
                return -1;
            json_array_append_new(values, json_string(argv[++i]));
        } else if (i > 0 && strncmp(argv[i], flag, len) == 0 && argv[i][len] == '=')
            json_array_append_new(values, json_string(argv[i] + len + 1));
        else
            argv[out++] = argv[i];
    }
    return out;
}

/* Print a list of strings under a label ("-" when empty). */
static void s_names(const char *label, json_t *list)
{
    printf("%-12s", label);
    if (!json_array_size(list))
        printf(" -");
    size_t i;
    json_t *name;
    json_array_foreach(list, i, name)
        printf("%s %s", i ? "," : "", json_string_value(name) ? json_string_value(name) : "?");
    printf("\n");
}

/* A dry run's verdict: the image, the applications, the need, each rule broken and the
   suggestions. 0 when the request would work, 1 when not. */
static int s_print_verdict(cli_t *cli, json_t *v)
{
    int ok = json_is_true(json_object_get(v, "ok"));
    if (cli->json) {
        cli_print_json(v);
        return ok ? 0 : 1;
    }
    json_t *image = json_object_get(v, "image"), *apps = json_object_get(v, "applications");
    json_t *need = json_object_get(v, "need");
    printf("%-12s %s\n", "verdict", ok ? "ok" : "refused");
    if (json_is_object(image))
        printf("%-12s %s (%s %s, %s)\n", "image", T(image, "name"), T(image, "os"),
               T(image, "os_version"), T(image, "kind"));
    s_names("from image", json_object_get(apps, "from_image"));
    s_names("first boot", json_object_get(apps, "first_boot"));
    printf("%-12s %lld MB RAM, %lld GB disk\n", "needs",
           (long long)json_integer_value(json_object_get(need, "ram_mb")),
           (long long)json_integer_value(json_object_get(need, "disk_gb")));
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(v, "violations"), i, x)
        printf("%-12s %s: %s\n", i ? "" : "refused by", T(x, "rule"), T(x, "message"));
    json_array_foreach(json_object_get(v, "suggestions"), i, x)
        printf("%-12s %s\n", i ? "" : "suggestions", T(x, "message"));
    return ok ? 0 : 1;
}

/* A refused custom build (422 BUILD_REFUSED): each rule with why, then the suggestions. */
static void s_print_refused(json_t *body)
{
    json_t *details = json_object_get(json_object_get(body, "error"), "details");
    const char *rules = json_string_value(json_object_get(details, "rules"));
    fprintf(stderr, "berth: the request cannot work\n");
    char list[512];
    util_strlcpy(list, rules ? rules : "", sizeof list);
    for (char *save = NULL, *rule = strtok_r(list, ",", &save); rule;
         rule = strtok_r(NULL, ",", &save)) {
        const char *why = json_string_value(json_object_get(details, rule));
        fprintf(stderr, "  %s: %s\n", rule, why ? why : "");
    }
    const char *suggestions = json_string_value(json_object_get(details, "suggestions"));
    if (!suggestions)
        return;
    fprintf(stderr, "suggestions:\n");
    char text[1024];
    util_strlcpy(text, suggestions, sizeof text);
    for (char *save = NULL, *one = strtok_r(text, ";", &save); one;
         one = strtok_r(NULL, ";", &save))
        fprintf(stderr, "  - %s\n", one + (*one == ' '));
}

/* How many times a request is sent again after a lost answer or a 503 (1, 2, 4 s apart). */
#define S_SEND_RETRIES 3

int cli_request_cmd(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "count", 1, NULL, 0 },      { "wait", 0, NULL, 0 },
                         { "timeout", 1, NULL, 0 },    { "group", 1, NULL, 0 },
                         { "network", 1, NULL, 0 }, /* unused: --network is taken first */
                         { "placement", 1, NULL, 0 },  { "os", 1, NULL, 0 },
                         { "os-version", 1, NULL, 0 }, { "vcpus", 1, NULL, 0 },
                         { "ram", 1, NULL, 0 },        { "disk", 1, NULL, 0 },
                         { "dry-run", 0, NULL, 0 },    { NULL } };
    const char *pos[2] = { NULL, NULL };
    int64_t count = 1, timeout = DEFAULT_TIMEOUT_S, vcpus = 0, ram = 0, disk = 0;
    json_t *ssh_keys = json_array(), *networks = json_array(), *apps = json_array();
    argc = ssh_keys ? cli_take_all(argc, argv, "ssh-key", ssh_keys) : -1;
    argc = argc >= 0 && networks ? cli_take_all(argc, argv, "network", networks) : -1;
    argc = argc >= 0 && apps ? cli_take_all(argc, argv, "app", apps) : -1;
    int parsed = argc >= 0 ? cli_parse(argc, argv, opts, pos, 0, 2) : -1;
    int custom = opts[6].set, dry = opts[11].set;
    /* A template's request names TEMPLATE NAME; a custom build (--os) NAME only; a dry run
       may leave the name out. */
    int npos = (pos[0] != NULL) + (pos[1] != NULL);
    int want_min = (custom ? 1 : 2) - dry, want_max = custom ? 1 : 2;
    if (parsed != 0 || npos < want_min || npos > want_max ||
        (opts[0].set && util_parse_int(opts[0].value, INT32_MIN, INT32_MAX, &count) != 0) ||
        (opts[2].set && util_parse_int(opts[2].value, 1, 86400, &timeout) != 0) ||
        (opts[8].set && util_parse_int(opts[8].value, INT32_MIN, INT32_MAX, &vcpus) != 0) ||
        (opts[9].set && util_parse_int(opts[9].value, INT32_MIN, INT64_MAX, &ram) != 0) ||
        (opts[10].set && util_parse_int(opts[10].value, INT32_MIN, INT64_MAX, &disk) != 0) ||
        (dry && opts[1].set)) {
        fprintf(stderr,
                "usage: berth request TEMPLATE NAME [--count N] [--group GROUP] "
                "[--network NET]... [--placement affinity|anti-affinity] [--ssh-key NAME]... "
                "[--wait] [--timeout SECONDS] [--dry-run]\n"
                "       berth request NAME --os OS [--os-version V] [--app APP]... --vcpus N "
                "--ram MB --disk GB [...] [--dry-run]\n");
        json_decref(ssh_keys);
        json_decref(networks);
        json_decref(apps);
        return 2;
    }
    const char *template_ = custom ? NULL : pos[0];
    const char *name = custom ? pos[0] : pos[1];
    /* The count goes to the gateway as given: it owns the limits and says what is wrong. */
    json_t *ask = json_pack("{s:I}", "count", (json_int_t)count);
    if (template_)
        json_object_set_new(ask, "template", json_string(template_));
    if (name)
        json_object_set_new(ask, "name", json_string(name));
    if (custom) { /* the machine described; the gateway and approval check each field */
        json_object_set_new(ask, "os", json_string(opts[6].value));
        if (opts[7].set)
            json_object_set_new(ask, "os_version", json_string(opts[7].value));
        json_object_set(ask, "applications", apps);
        if (opts[8].set)
            json_object_set_new(ask, "vcpus", json_integer(vcpus));
        if (opts[9].set)
            json_object_set_new(ask, "ram_mb", json_integer(ram));
        if (opts[10].set)
            json_object_set_new(ask, "disk_gb", json_integer(disk));
    } else if (json_array_size(apps) || opts[7].set || opts[8].set || opts[9].set || opts[10].set) {
        fprintf(stderr, "berth request: --app, --os-version, --vcpus, --ram and --disk describe "
                        "a custom build: give --os too, and no template\n");
        json_decref(ask);
        json_decref(ssh_keys);
        json_decref(networks);
        json_decref(apps);
        return 2;
    }
    json_decref(apps);
    if (opts[3].set) /* id or name; the gateway and approval say what is wrong with it */
        json_object_set_new(ask, "group", json_string(opts[3].value));
    /* Instead of the template's, in order; approval says what is wrong with one. */
    if (json_array_size(networks) == 1)
        json_object_set(ask, "network", json_array_get(networks, 0));
    else if (json_array_size(networks) > 1)
        json_object_set(ask, "networks", networks);
    json_decref(networks);
    if (opts[5].set) /* the VMs' rule between them; the gateway says what is wrong with it */
        json_object_set_new(ask, "placement", json_string(opts[5].value));
    if (json_array_size(ssh_keys))
        json_object_set(ask, "ssh_keys", ssh_keys);
    json_decref(ssh_keys);
    if (dry) { /* the verdict only: nothing is created */
        json_t *verdict = NULL;
        int rc = cli_http(cli, "POST", "/v1/requests?validate_only=true", ask, &verdict);
        json_decref(ask);
        if (rc != 0)
            return 1;
        rc = s_print_verdict(cli, verdict);
        json_decref(verdict);
        return rc;
    }
    /* --wait follows the live events from before the request exists. */
    cli_stream_t *stream = opts[1].set ? cli_stream_open(cli, NULL, 1) : NULL;
    /* Sent again with the same Idempotency-Key when the answer was lost or the platform could
       not confirm the write (503: a Redis failover, a service restarting): the request is made
       once however many times it is sent. */
    util_uuid(cli->idempotency_key);
    json_t *body = NULL;
    long status = 0;
    int rc = -1;
    for (int attempt = 0;; attempt++) {
        rc = cli_request(cli, "POST", "/v1/requests", ask, &status, &body);
        if ((rc == 0 && status != 503) || attempt == S_SEND_RETRIES)
            break;
        json_decref(body);
        body = NULL;
        fprintf(stderr, "berth request: %s; sending it again in %d s (Idempotency-Key %s)\n",
                rc == 0 ? "the platform is unavailable (503)" : "no answer", 1 << attempt,
                cli->idempotency_key);
        sleep(1u << attempt);
    }
    cli->idempotency_key[0] = '\0';
    json_decref(ask);
    if (rc == 0 && status == 422 && custom && !cli->json) {
        const char *code =
            json_string_value(json_object_get(json_object_get(body, "error"), "code"));
        if (code && streq(code, "BUILD_REFUSED")) {
            s_print_refused(body);
            json_decref(body);
            cli_stream_destroy(&stream);
            return 1;
        }
    }
    if (rc != 0 || status < 200 || status >= 300 || !json_is_object(body)) {
        if (rc == 0)
            cli_print_error(cli, "berth", status, body);
        json_decref(body);
        cli_stream_destroy(&stream);
        return 1;
    }
    json_t *req = json_object_get(body, "request");
    const char *id = json_string_value(json_object_get(req, "id"));
    if (!id) {
        fprintf(stderr, "berth: the gateway answered without a request id\n");
        json_decref(body);
        cli_stream_destroy(&stream);
        return 1;
    }
    if (opts[1].set) {
        if (!cli->json)
            printf("request %s: %s\n", id, T(req, "state"));
        char copy[256];
        util_strlcpy(copy, id, sizeof copy);
        json_decref(body);
        return s_wait_request(cli, copy, (int)timeout, stream);
    }
    if (cli->json)
        cli_print_json(body);
    else
        s_request_table(req);
    json_decref(body);
    return 0;
}

/* Follow the disposal task of vm until the VM is DISPOSED (0) or the task failed (1). */
static int s_wait_dispose(cli_t *cli, const char *vm_id, const char *name, const char *task_id,
                          int timeout_s)
{
    char vm_path[CLI_PATH_MAX], task_path[CLI_PATH_MAX];
    if (cli_path(vm_path, sizeof vm_path, "vms", vm_id) != 0 ||
        cli_path(task_path, sizeof task_path, "tasks", task_id) != 0)
        return 1;
    cli_progress_t *progress = cli_progress_new(cli->json ? stderr : stdout);
    int64_t deadline = util_mono_ms() + (int64_t)timeout_s * 1000;
    int rc = -1;
    json_t *task_body = NULL, *vm_body = NULL;
    while (rc < 0) {
        json_decref(task_body);
        json_decref(vm_body);
        task_body = vm_body = NULL;
        if (cli_http(cli, "GET", task_path, NULL, &task_body) != 0) {
            rc = 1;
            break;
        }
        long status = 0;
        if (cli_request(cli, "GET", vm_path, NULL, &status, &vm_body) != 0) {
            rc = 1;
            break;
        }
        json_t *task = json_object_get(task_body, "task");
        json_t *vm = json_object_get(vm_body, "vm");
        /* A disposed VM may no longer be shown at all: that is gone too. */
        const char *vstate =
            status == 404 ? "DISPOSED" : json_string_value(json_object_get(vm, "state"));
        if (status != 200 && status != 404) {
            cli_print_error(cli, "berth", status, vm_body);
            rc = 1;
            break;
        }
        const char *tstate = json_string_value(json_object_get(task, "state"));
        s_line(progress, vm_id, name, vm_id, task, vstate ? vstate : "-", NULL);
        cli_progress_draw(progress);
        if (vstate && streq(vstate, "DISPOSED"))
            rc = 0;
        else if (tstate && (streq(tstate, "FAILED") || streq(tstate, "ABORTED"))) {
            s_print_fault(name, vm_id, vstate ? vstate : tstate, vm, task);
            rc = 1;
        } else if (util_mono_ms() >= deadline) {
            fprintf(stderr, "berth: %s was not disposed within %d s (task %s)\n", name, timeout_s,
                    tstate ? tstate : "-");
            rc = 1;
        } else
            cli_pause_ms(POLL_MS);
    }
    if (cli->json && task_body)
        cli_print_json(task_body);
    json_decref(task_body);
    json_decref(vm_body);
    cli_progress_destroy(&progress);
    return rc;
}

int cli_dispose(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        { "wait", 0, NULL, 0 }, { "timeout", 1, NULL, 0 }, { "force", 0, NULL, 0 }, { NULL }
    };
    const char *pos[1];
    int64_t timeout = DEFAULT_TIMEOUT_S;
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0 ||
        (opts[1].set && util_parse_int(opts[1].value, 1, 86400, &timeout) != 0)) {
        fprintf(stderr, "usage: berth dispose ID [--wait] [--timeout SECONDS] [--force]\n");
        return 2;
    }
    char path[CLI_PATH_MAX], del[CLI_PATH_MAX + 16];
    if (cli_path(path, sizeof path, "vms", pos[0]) != 0) {
        fprintf(stderr, "berth dispose: id too long\n");
        return 2;
    }
    /* The name, for the progress line; the VM must exist for anything else to make sense. */
    json_t *vm_body = NULL;
    if (opts[0].set && cli_http(cli, "GET", path, NULL, &vm_body) != 0)
        return 1;
    char name[256];
    util_strlcpy(name,
                 json_string_value(json_object_get(json_object_get(vm_body, "vm"), "name"))
                     ? json_string_value(json_object_get(json_object_get(vm_body, "vm"), "name"))
                     : pos[0],
                 sizeof name);
    json_decref(vm_body);
    json_t *body = NULL;
    /* --force: the VM's host is gone; the agent is not asked. */
    snprintf(del, sizeof del, "%s%s", path, opts[2].set ? "?force=true" : "");
    if (cli_http(cli, "DELETE", del, NULL, &body) != 0)
        return 1;
    json_t *task = json_object_get(body, "task");
    const char *task_id = json_string_value(json_object_get(task, "id"));
    if (!task_id) {
        fprintf(stderr, "berth: the gateway answered without a task id\n");
        json_decref(body);
        return 1;
    }
    int rc = 0;
    if (opts[0].set) {
        char copy[256];
        util_strlcpy(copy, task_id, sizeof copy);
        if (!cli->json)
            printf("disposing %s: task %s\n", name, copy);
        rc = s_wait_dispose(cli, pos[0], name, copy, (int)timeout);
    } else if (cli->json)
        cli_print_json(body);
    else
        printf("disposing %s: task %s (%s)\n", name, task_id, T(task, "state"));
    json_decref(body);
    return rc;
}
