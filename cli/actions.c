/*  berth start|stop|reboot|suspend|resume|shelve|unshelve VM: a day-2 action
    (POST /v1/vms/{id}/actions), followed to the end of its task unless --no-wait. --timeout is
    the guest's time to shut down (stop, shelve); --force powers off at once (reboot: reset).
    berth vm capture VM --name NAME: a stopped VM's disk as a new model image. */
#include "cli.h"
#include "limit.h"

#define ACTION_POLL_MS 200
#define ACTION_WAIT_S  600 /* how long a task is followed, beyond a graceful shutdown's time */

/* The VM's state after its action: "web-1 (ID): ACTIVE, RUNNING on host-2". */
static void s_print_vm(cli_t *cli, const char *path)
{
    json_t *body = NULL;
    if (cli_http(cli, "GET", path, NULL, &body) != 0)
        return;
    json_t *vm = json_object_get(body, "vm");
    char name[128], id[64], state[32], power[32], host[128];
    printf("%s (%s): %s, %s on %s\n", cli_text(json_object_get(vm, "name"), name, sizeof name),
           cli_text(json_object_get(vm, "id"), id, sizeof id),
           cli_text(json_object_get(vm, "state"), state, sizeof state),
           cli_text(json_object_get(vm, "power_state"), power, sizeof power),
           cli_text(json_object_get(vm, "host"), host, sizeof host));
    json_decref(body);
}

/* Follow task task_id until it ends: 0 SUCCEEDED, 1 otherwise (the fault printed). */
static int s_follow(cli_t *cli, const char *action, const char *task_id, int wait_s)
{
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, "tasks", task_id) != 0)
        return 1;
    cli_progress_t *progress = cli_progress_new(cli->json ? stderr : stdout);
    int64_t deadline = util_mono_ms() + (int64_t)wait_s * 1000;
    json_t *body = NULL;
    int rc = -1;
    while (rc < 0) {
        json_decref(body);
        body = NULL;
        if (cli_http(cli, "GET", path, NULL, &body) != 0) {
            rc = 1;
            break;
        }
        json_t *task = json_object_get(body, "task");
        char stage[64], state[32], line[256];
        cli_text(json_object_get(task, "stage"), stage, sizeof stage);
        cli_text(json_object_get(task, "state"), state, sizeof state);
        snprintf(line, sizeof line, "%-8s task %s  %-14s %3d%%  %s", action, task_id, stage,
                 (int)json_integer_value(json_object_get(task, "percent")), state);
        cli_progress_set(progress, task_id, line);
        cli_progress_draw(progress);
        if (streq(state, "SUCCEEDED"))
            rc = 0;
        else if (streq(state, "FAILED") || streq(state, "ABORTED")) {
            char fault[1024];
            fprintf(stderr, "berth: %s %s: %s\n", action, state,
                    cli_text(json_object_get(task, "fault"), fault, sizeof fault));
            rc = 1;
        } else if (util_mono_ms() >= deadline) {
            fprintf(stderr, "berth: %s did not end within %d s (task %s is %s)\n", action, wait_s,
                    task_id, state);
            rc = 1;
        } else
            cli_pause_ms(ACTION_POLL_MS);
    }
    if (cli->json && body)
        cli_print_json(body);
    json_decref(body);
    cli_progress_destroy(&progress);
    return rc;
}

int cli_action(cli_t *cli, int argc, char **argv)
{
    const char *action = argv[0];
    cli_opt_t opts[] = {
        { "force", 0, NULL, 0 }, { "timeout", 1, NULL, 0 }, { "no-wait", 0, NULL, 0 }, { NULL }
    };
    const char *pos[1];
    int64_t timeout = 0;
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0 ||
        (opts[1].set &&
         util_parse_int(opts[1].value, 0, LIMIT_STOP_TIMEOUT_MAX_S, &timeout) != 0)) {
        fprintf(stderr,
                "usage: berth %s VM [--force] [--timeout SECONDS] [--no-wait]\n"
                "  --timeout: seconds the guest has to shut down (stop, shelve; 0..%d)\n",
                action, LIMIT_STOP_TIMEOUT_MAX_S);
        return 2;
    }
    char vm_path[CLI_PATH_MAX], path[CLI_PATH_MAX + 16];
    if (cli_path(vm_path, sizeof vm_path, "vms", pos[0]) != 0) {
        fprintf(stderr, "berth %s: id too long\n", action);
        return 2;
    }
    snprintf(path, sizeof path, "%s/actions", vm_path);
    json_t *ask = json_pack("{s:s}", "action", action);
    if (opts[0].set)
        json_object_set_new(ask, "force", json_true());
    if (opts[1].set)
        json_object_set_new(ask, "timeout_s", json_integer(timeout));
    json_t *body = NULL;
    int failed = cli_http(cli, "POST", path, ask, &body);
    json_decref(ask);
    if (failed)
        return 1;
    json_t *task = json_object_get(body, "task");
    char task_id[64];
    cli_text(json_object_get(task, "id"), task_id, sizeof task_id);
    int rc = 0;
    if (opts[2].set) {
        if (cli->json)
            cli_print_json(body);
        else
            printf("%s %s: task %s (QUEUED)\n", action, pos[0], task_id);
    } else {
        rc = s_follow(cli, action, task_id, (int)timeout + ACTION_WAIT_S);
        if (rc == 0 && !cli->json)
            s_print_vm(cli, vm_path);
    }
    json_decref(body);
    return rc;
}

/* berth vm capture VM --name NAME [--os OS] [--os-version V] [--min-ram-mb N]
   [--min-disk-gb N] [--wait]: the stopped VM's disk as a new model image
   (POST /v1/vms/{id}/capture); --wait follows the task's stages to its end. */
int cli_capture(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "name", 1, NULL, 0 },
                         { "os", 1, NULL, 0 },
                         { "os-version", 1, NULL, 0 },
                         { "min-ram-mb", 1, NULL, 0 },
                         { "min-disk-gb", 1, NULL, 0 },
                         { "wait", 0, NULL, 0 },
                         { NULL } };
    const char *pos[1];
    int64_t ram = 0, disk = 0;
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0 || !opts[0].set ||
        (opts[3].set && util_parse_int(opts[3].value, 0, LIMIT_RAM_MB_MAX, &ram) != 0) ||
        (opts[4].set && util_parse_int(opts[4].value, 0, LIMIT_DISK_GB_MAX, &disk) != 0)) {
        fprintf(stderr, "usage: berth vm capture VM --name NAME [--os OS] [--os-version V]\n"
                        "       [--min-ram-mb N] [--min-disk-gb N] [--wait]\n");
        return 2;
    }
    char vm_path[CLI_PATH_MAX], path[CLI_PATH_MAX + 16];
    if (cli_path(vm_path, sizeof vm_path, "vms", pos[0]) != 0) {
        fprintf(stderr, "berth vm capture: id too long\n");
        return 2;
    }
    snprintf(path, sizeof path, "%s/capture", vm_path);
    json_t *ask = json_pack("{s:s}", "name", opts[0].value);
    if (opts[1].set)
        json_object_set_new(ask, "os", json_string(opts[1].value));
    if (opts[2].set)
        json_object_set_new(ask, "os_version", json_string(opts[2].value));
    if (opts[3].set)
        json_object_set_new(ask, "min_ram_mb", json_integer(ram));
    if (opts[4].set)
        json_object_set_new(ask, "min_disk_gb", json_integer(disk));
    json_t *body = NULL;
    int failed = cli_http(cli, "POST", path, ask, &body);
    json_decref(ask);
    if (failed)
        return 1;
    char task_id[64];
    cli_text(json_object_get(json_object_get(body, "task"), "id"), task_id, sizeof task_id);
    int rc = 0;
    if (opts[5].set) {
        rc = s_follow(cli, "capture", task_id, ACTION_WAIT_S);
        if (rc == 0 && !cli->json)
            printf("image %s captured from %s\n", opts[0].value, pos[0]);
    } else if (cli->json)
        cli_print_json(body);
    else
        printf("capture %s: task %s (QUEUED)\n", pos[0], task_id);
    json_decref(body);
    return rc;
}
