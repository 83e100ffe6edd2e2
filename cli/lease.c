/*  berth extend, berth revive: add days to a VM's lease (POST /v1/vms/{id}/lease). Extending
    an EXPIRED VM within its tombstone period revives it: powered on again, its lease running
    the days from now. Beyond the group's lease policy the extension becomes a request for
    approval (202): its id and what it waits for are printed. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

/* POST the extension and print the VM's new lease. */
static int s_extend(cli_t *cli, const char *who, const char *id, int64_t days)
{
    char path[CLI_PATH_MAX], lease_path[CLI_PATH_MAX + 8];
    if (cli_path(path, sizeof path, "vms", id) != 0) {
        fprintf(stderr, "berth %s: id too long\n", who);
        return 2;
    }
    snprintf(lease_path, sizeof lease_path, "%s/lease", path);
    json_t *body = NULL;
    if (cli_http(cli, "POST", lease_path, json_pack("{s:I}", "days", (json_int_t)days), &body) !=
        0)
        return 1;
    json_t *vm = json_object_get(body, "vm"), *req = json_object_get(body, "request");
    if (cli->json)
        cli_print_json(body);
    else if (req)
        printf("beyond the lease policy (%s): request %s %s%s%s\n",
               T(json_object_get(req, "extension"), "beyond"), T(req, "id"), T(req, "state"),
               streq(T(req, "state"), "PENDING_APPROVAL") ? ", awaiting " : "",
               streq(T(req, "state"), "PENDING_APPROVAL") ? T(req, "awaiting") : "");
    else
        printf("%s: %s, lease ends %s (%s extensions)\n", T(vm, "name"), T(vm, "state"),
               T(json_object_get(vm, "lease"), "expires_at"),
               T(json_object_get(vm, "lease"), "extensions"));
    json_decref(body);
    return 0;
}

int cli_extend(cli_t *cli, int argc, char **argv)
{
    const char *pos[2];
    int64_t days = 0;
    if (cli_parse(argc, argv, NULL, pos, 2, 2) != 0 ||
        util_parse_int(pos[1], 1, INT32_MAX, &days) != 0) {
        fprintf(stderr, "usage: berth extend VM DAYS\n");
        return 2;
    }
    return s_extend(cli, "extend", pos[0], days);
}

int cli_revive(cli_t *cli, int argc, char **argv)
{
    const char *pos[2] = { NULL, NULL };
    int64_t days = 1;
    if (cli_parse(argc, argv, NULL, pos, 1, 2) != 0 ||
        (pos[1] && util_parse_int(pos[1], 1, INT32_MAX, &days) != 0)) {
        fprintf(stderr, "usage: berth revive VM [DAYS]   (DAYS: 1 unless given)\n");
        return 2;
    }
    return s_extend(cli, "revive", pos[0], days);
}
