/*  berth: the command-line client. Talks to the gateway's REST API at --url, BERTH_URL, the
    URL last logged in to, or https://127.0.0.1:8080; prints tables by default and the
    server's JSON with -o json. An https gateway's certificate is always verified: against
    --cacert FILE / BERTH_CA_FILE (make run's self-signed one), else the system's CAs, or
    pinned: --pin sha256:HEX / BERTH_PIN (the fingerprint make run prints). Exit status:
   0 done, 1 failed (the server's message is printed), 2 bad usage. */
#include "cli.h"

#include <curl/curl.h>

typedef int(cli_cmd_fn)(cli_t *cli, int argc, char **argv);

typedef struct {
    const char *name;
    cli_cmd_fn *fn;
    const char *usage;
} s_command_t;

static const s_command_t s_commands[] = {
    { "login", cli_login, "login [USER] [--password-stdin]       get a token for later commands" },
    { "logout", cli_logout, "logout                              revoke the token and forget it" },
    { "templates", cli_templates,
      "templates [--group G]               what VMs can be made from (in group G)" },
    { "hosts", cli_hosts,
      "hosts                               hosts: state, use, orphans" },
    { "host", cli_host,
      "host maintenance HOST on|off        no new VMs on HOST (operators), or back" },
    { "request", cli_request_cmd,
      "request TEMPLATE NAME [--count N] [--group G] [--wait] [--timeout S]\n"
      "                                      ask for VMs (in group G: id or name); --wait\n"
      "                                      follows them to ACTIVE" },
    { "requests", cli_requests,
      "requests [--pending | --state S] [--group G] [--owner U] [--kind K]\n"
      "                                      requests you may read; --pending: those\n"
      "                                      waiting for your decision" },
    { "approve", cli_approve,
      "approve ID                          approve request ID at the level it waits for" },
    { "reject", cli_reject,
      "reject ID --reason TEXT             reject request ID (its owner sees TEXT)" },
    { "vms", cli_vms, "vms [--limit N] [--marker ID]       your VMs" },
    { "vm", cli_vm, "vm show ID                          one VM" },
    { "dispose", cli_dispose,
      "dispose ID [--wait] [--timeout S] [--force]\n"
      "                                      give a VM back (--force: its host is gone;\n"
      "                                      admins, operators)" },
    { "start", cli_action,
      "start|stop|reboot|suspend|resume|shelve|unshelve ID [--force] [--timeout S]\n"
      "      [--no-wait]                     a day-2 action on a VM, followed to its end;\n"
      "                                      --timeout: the guest's time to shut down (stop,\n"
      "                                      shelve), --force: off at once (reboot: reset)" },
    { "stop", cli_action, NULL },
    { "reboot", cli_action, NULL },
    { "suspend", cli_action, NULL },
    { "resume", cli_action, NULL },
    { "shelve", cli_action, NULL },
    { "unshelve", cli_action, NULL },
    { "watch", cli_watch,
      "watch VM|--all [--since ID] [--count N] [--timeout S]\n"
      "                                      follow live events (one VM: until DISPOSED)" },
    { "extend", cli_extend, "extend ID DAYS                      add DAYS to a VM's lease" },
    { "revive", cli_revive,
      "revive ID [DAYS]                    bring an EXPIRED VM back (lease: DAYS from now)" },
    { "task", cli_task,
      "task ID                             a task, its stages and steps\n"
      "task retry|force-fail ID            run a FAILED task's failed stage again, or end a\n"
      "                                      stuck task FAILED now (admins, operators)" },
    { "abort", cli_abort,
      "abort TASK                          stop a task at its next stage and undo it" },
    { "usage", cli_usage,
      "usage [--from T] [--to T] [--owner U] [--group G]\n"
      "                                      vCPU-, GB-RAM- and GB-disk-hours per VM" },
    { "groups", cli_groups,
      "groups [list|show G|create NAME|update G|delete G] [OPTIONS]\n"
      "                                      groups (G: id or name); `berth groups help`\n"
      "groups members G | add-member G USER --role R | set-role G USER --role R |\n"
      "       remove-member G USER          a group's members (R: member, manager, auditor)\n"
      "groups reserve G HOST:VCPUS,RAM_MB,DISK_GB ... | --clear\n"
      "                                      capacity held for the group ('*': any host)\n"
      "groups capacity G                     what the group may still use (quota left, free)" },
    { "audit", cli_audit,
      "audit [--actor U] [--target T] [--group G] [--action A] [--since T]\n"
      "      [--until T] [--limit N] [--marker ID]\n"
      "                                      the audit trail, newest first" },
    { "onboard", cli_onboard,
      "onboard NAME --justification TEXT [--cost-centre CC] [--vms N] [--vcpus N]\n"
      "        [--ram-mb N] [--disk-gb N] [--charging-model allocation|reservation]\n"
      "                                      ask an admin for a new group (you manage it)" },
    { "allocate", cli_allocate,
      "allocate GROUP [--vms N|+N] [--vcpus N|+N] [--ram-mb N|+N] [--disk-gb N|+N]\n"
      "                                      ask for more quota for a group you manage\n"
      "        allocate GROUP --reserve 'HOST:VCPUS,RAM_MB,DISK_GB ...'\n"
      "                                      ask for reservations for a group you manage" },
    { "users", cli_users,
      "users enable USER | users disable USER  let a user in, or shut it out (admins)" },
    { "users", cli_users, "users list | show USER | delete USER   users (admins; show: you too)" },
    { "users", cli_users,
      "users create USER [--role R] [--display-name N] [--email E] [--password-stdin]\n"
      "                                      make a user (admins)" },
    { "passwd", cli_passwd, "passwd [--password-stdin]           change your password" },
    { "keys", cli_keys, "keys create NAME | list | revoke ID   your API keys for scripts" },
    { "health", cli_health,
      "health                              every registered service instance" },
    { NULL, NULL, NULL },
};

static void s_usage(FILE *out)
{
    fprintf(out, "usage: berth [-o table|json] [--url URL] [--cacert FILE] [--pin sha256:HEX] "
                 "COMMAND [ARGS]\n\n"
                 "commands:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        if (c->usage) /* NULL: described with the command before it */
            fprintf(out, "  %s\n", c->usage);
    fprintf(out,
            "\nenvironment: BERTH_URL (default: the URL logged in to, else %s),\n"
            "             BERTH_CA_FILE (as --cacert: the certificate an https gateway must\n"
            "             have, e.g. .berth/secrets/gateway.crt of make run),\n"
            "             BERTH_PIN (as --pin: the SHA-256 fingerprint of the certificate an\n"
            "             https gateway must present, which make run prints; then trusted\n"
            "             whatever CA signed it, and any other certificate is refused),\n"
            "             BERTH_USER, BERTH_PASSWORD (for login)\n"
            "token file:  $XDG_CONFIG_HOME/berth/token (default ~/.config/berth/token)\n",
            CLI_DEFAULT_URL);
}

int main(int argc, char **argv)
{
    cli_t cli = { 0 };
    const char *url_flag = NULL, *pin = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (streq(argv[i], "-o") && i + 1 < argc) {
            cli.json = streq(argv[++i], "json");
            if (!cli.json && !streq(argv[i], "table")) {
                fprintf(stderr, "berth: -o takes table or json\n");
                return 2;
            }
        } else if (strncmp(argv[i], "-o", 2) == 0 && argv[i][2]) {
            cli.json = streq(argv[i] + 2, "json");
            if (!cli.json && !streq(argv[i] + 2, "table")) {
                fprintf(stderr, "berth: -o takes table or json\n");
                return 2;
            }
        } else if (streq(argv[i], "--url") && i + 1 < argc)
            url_flag = argv[++i];
        else if (strncmp(argv[i], "--url=", 6) == 0)
            url_flag = argv[i] + 6;
        else if (streq(argv[i], "--cacert") && i + 1 < argc)
            cli.ca_file = argv[++i];
        else if (strncmp(argv[i], "--cacert=", 9) == 0)
            cli.ca_file = argv[i] + 9;
        else if ((streq(argv[i], "--pin") && i + 1 < argc) || strncmp(argv[i], "--pin=", 6) == 0)
            pin = streq(argv[i], "--pin") ? argv[++i] : argv[i] + 6;
        else if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
            s_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "berth: unknown option %s\n", argv[i]);
            s_usage(stderr);
            return 2;
        }
    }
    if (!cli.ca_file && getenv("BERTH_CA_FILE") && *getenv("BERTH_CA_FILE"))
        cli.ca_file = getenv("BERTH_CA_FILE");
    if (!pin && getenv("BERTH_PIN") && *getenv("BERTH_PIN"))
        pin = getenv("BERTH_PIN");
    if (pin && cli_pin_parse(&cli, pin) != 0) {
        fprintf(stderr,
                "berth: --pin/BERTH_PIN must be sha256: and the certificate's 64 hex "
                "digits (AA:BB:... as make run prints it), not '%.100s'\n",
                pin);
        return 2;
    }
    if (i >= argc) {
        s_usage(stderr);
        return 2;
    }
    if (streq(argv[i], "help")) {
        s_usage(stdout);
        return 0;
    }
    for (const s_command_t *c = s_commands; c->name; c++)
        if (streq(argv[i], c->name)) {
            /* login replaces an unusable token file; everything else refuses to use one. */
            if (cli_session_load(&cli, url_flag, c->fn != cli_login) != 0)
                return 1;
            curl_global_init(CURL_GLOBAL_DEFAULT);
            int rc = c->fn(&cli, argc - i, argv + i);
            curl_global_cleanup();
            explicit_bzero(cli.token, sizeof cli.token);
            return rc;
        }
    fprintf(stderr, "berth: unknown command %s\n", argv[i]);
    s_usage(stderr);
    return 2;
}
