/*  berth: the command-line client. Talks to the gateway's REST API at --url, BERTH_URL, the
    URL last logged in to, or https://127.0.0.1:8080; prints tables by default and the
    server's answer with -o json or -o yaml (anywhere on the line). Commands read noun then
    verb ("vm start"); s_commands below is every command, its short forms and its usage, from
    which help, --help, the bash completion and the man page are made. An https gateway's
    certificate is always verified: against --cacert FILE / BERTH_CA_FILE (make run's
    self-signed one), else the system's CAs, or pinned: --pin sha256:HEX / BERTH_PIN (the
    fingerprint make run prints). Exit status: 0 done, 1 failed (the server's message is
    printed), 2 bad usage. */
#include "cli.h"

#include "berth_version.h"

#include <curl/curl.h>

typedef int(cli_cmd_fn)(cli_t *cli, int argc, char **argv);

/* One command: the words typed, noun then verb ("vm start"), or one word. The first three
   fields are what every command needs, so an entry such as { "images", cli_images, "images
   ..." } is complete; call and alias_of are for entries that need them. */
typedef struct {
    const char *name;     /* the words typed, space-separated */
    cli_cmd_fn *fn;       /* the handler (NULL for an alias: the target's) */
    const char *usage;    /* "NAME ARGS   what it does"; NULL: as the entry before (or alias) */
    const char *call;     /* the words the handler sees as argv[0..] (NULL: name), so "vm list"
                             reaches cli_vms as "vms" and "group show" cli_groups as "groups
                             show" */
    const char *alias_of; /* a short form of that command */
} s_command_t;

static cli_cmd_fn s_completion, s_manpage; /* they read the table */

/* Entries leave call and alias_of out when they need neither (zero), on purpose. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const s_command_t s_commands[] = {
    { "login", cli_login, "login [USER] [--password-stdin]     get a token for later commands" },
    { "logout", cli_logout, "logout                              revoke the token and forget it" },
    { "template list", cli_templates,
      "template list [--group G]           what VMs can be made from (in group G)", "templates" },
    { "templates", .alias_of = "template list" },
    { "template create", cli_template_create,
      "template create NAME --vcpus N --ram-mb N --disk-gb N --os OS --image IMAGE\n"
      "             [--lease-days N (30)] [--approval-policy P] [--network NET]...\n"
      "             [--disk linked|full] [--rebuild-on-loss] [--max-lease-days N]\n"
      "             [--lease-notice-hours N] [--hypervisor H]\n"
      "                                    add a template to the catalog (admins)" },
    { "template pool", cli_template_pool,
      "template pool TEMPLATE [SIZE]       its instant-deploy pool: VMs built ahead, ready\n"
      "                                    and building (admins, operators); SIZE sets how\n"
      "                                    many are kept (admins)" },
    { "image list", cli_images,
      "image list [--kind model|staged]    images: kind, model, state, OS, applications",
      "images" },
    { "images", .alias_of = "image list" },
    { "image show", cli_images, "image show IMAGE                    one image (id or name)",
      "images show" },
    { "image import", cli_images,
      "image import PATH|--file LOCAL --name NAME --os OS [--os-version V] [--arch A]\n"
      "             [--apps NAME=VERSION,...] [--min-ram-mb N] [--min-disk-gb N]\n"
      "             [--kernel FILE --initrd FILE [--cmdline TEXT]]\n"
      "                                    import a file under the stager's import\n"
      "                                    directory, or upload a local file (--file,\n"
      "                                    with progress); admins, operators; inspected first",
      "images import" },
    { "image delete", cli_images,
      "image delete IMAGE                  delete an image nothing uses (template, VM, staged)",
      "images delete" },
    { "image stage", cli_images,
      "image stage MODEL [--wait]          derive a staged image (identity stripped, qcow2,\n"
      "                                    sha256; admins, operators); --wait: its stages",
      "images stage" },
    { "network list", cli_networks,
      "network list                        networks: CIDR, gateway, addresses in use", "networks" },
    { "networks", .alias_of = "network list" },
    { "network show", cli_networks, "network show NETWORK                one network (id or name)",
      "networks show" },
    { "network create", cli_networks,
      "network create NAME --cidr A.B.C.D/P --gateway IP [--dns IP,...]\n"
      "               (--bridge BR | --libvirt-network NET) [--groups G,...] [--default]\n"
      "                                    add a network VMs get addresses on (admins)",
      "networks create" },
    { "network delete", cli_networks,
      "network delete NETWORK              delete a network no VM holds an address on",
      "networks delete" },
    { "host list", cli_hosts, "host list                           hosts: state, use, orphans",
      "hosts" },
    { "hosts", .alias_of = "host list" },
    { "host maintenance", cli_host,
      "host maintenance HOST on|off        no new VMs on HOST (operators), or back",
      "host maintenance" },
    { "request create", cli_request_cmd,
      "request create TEMPLATE NAME [--count N] [--group G] [--network NET]...\n"
      "             [--placement affinity|anti-affinity] [--ssh-key K]... [--wait]\n"
      "               [--timeout S]        ask for VMs (in group G: id or name) with your\n"
      "                                    SSH keys K installed; --wait follows them to\n"
      "                                    ACTIVE\n"
      "request create NAME --os OS [--os-version V] [--app APP]... --vcpus N\n"
      "             --ram MB --disk GB [...]  a custom build: the scheduler picks the image,\n"
      "                                    APPs it lacks are installed at first boot; when\n"
      "                                    it cannot work, why and what would\n"
      "             [--dry-run]            the verdict, image and suggestions only: nothing\n"
      "                                    is created",
      "request" },
    { "request", .alias_of = "request create" },
    { "request list", cli_requests,
      "request list [--pending | --state S] [--group G] [--owner U] [--kind K]\n"
      "                                    requests you may read; --pending: those\n"
      "                                    waiting for your decision",
      "requests" },
    { "requests", .alias_of = "request list" },
    { "request approve", cli_approve,
      "request approve ID                  approve request ID at the level it waits for",
      "approve" },
    { "approve", .alias_of = "request approve" },
    { "request reject", cli_reject,
      "request reject ID --reason TEXT     reject request ID (its owner sees TEXT)", "reject" },
    { "reject", .alias_of = "request reject" },
    { "vm list", cli_vms,
      "vm list [--state S] [--owner U] [--host H] [--name N] [--group G] [--limit N]\n"
      "        [--marker ID]               the VMs you may see (DISPOSED: --state DISPOSED)",
      "vms" },
    { "vms", .alias_of = "vm list" },
    { "vm charges", cli_vm_charges,
      "vm charges VM [--month YYYY-MM | --from T --to T]\n"
      "                                    what a VM cost, by day (minor units)" },
    { "vm show", cli_vm, "vm show VM                          one VM (VM: id, or name when unique)",
      "vm show" },
    { "vm dispose", cli_dispose,
      "vm dispose VM [--wait] [--timeout S] [--force]\n"
      "                                    give a VM back (--force: its host is gone;\n"
      "                                    admins, operators)",
      "dispose" },
    { "dispose", .alias_of = "vm dispose" },
    { "vm capture", cli_capture,
      "vm capture VM --name NAME [--os OS] [--os-version V] [--min-ram-mb N]\n"
      "        [--min-disk-gb N] [--wait]  a stopped VM's disk as a new model image",
      "capture" },
    { "vm start", cli_action,
      "vm start VM [--no-wait]             power a VM on, followed to its end", "start" },
    { "vm stop", cli_action,
      "vm stop VM [--force] [--timeout S] [--no-wait]\n"
      "                                    shut a VM down (--timeout: the guest's time to\n"
      "                                    shut down; --force: off at once)",
      "stop" },
    { "vm reboot", cli_action, "vm reboot VM [--force] [--no-wait]  reboot a VM (--force: reset)",
      "reboot" },
    { "vm suspend", cli_action, "vm suspend VM [--no-wait]           pause a VM in memory",
      "suspend" },
    { "vm resume", cli_action, "vm resume VM [--no-wait]            run a suspended VM again",
      "resume" },
    { "vm shelve", cli_action,
      "vm shelve VM [--force] [--timeout S] [--no-wait]\n"
      "                                    stop a VM and free its host's resources",
      "shelve" },
    { "vm unshelve", cli_action,
      "vm unshelve VM [--no-wait]          bring a shelved VM back on a host", "unshelve" },
    { "start", .alias_of = "vm start" },
    { "stop", .alias_of = "vm stop" },
    { "reboot", .alias_of = "vm reboot" },
    { "suspend", .alias_of = "vm suspend" },
    { "resume", .alias_of = "vm resume" },
    { "shelve", .alias_of = "vm shelve" },
    { "unshelve", .alias_of = "vm unshelve" },
    { "vm watch", cli_watch,
      "vm watch VM|--all [--since ID] [--count N] [--timeout S]\n"
      "                                    follow live events (one VM: until DISPOSED)",
      "watch" },
    { "watch", .alias_of = "vm watch" },
    { "vm extend", cli_extend, "vm extend VM DAYS                   add DAYS to a VM's lease",
      "extend" },
    { "extend", .alias_of = "vm extend" },
    { "vm revive", cli_revive,
      "vm revive VM [DAYS]                 bring an EXPIRED VM back (lease: DAYS from now)",
      "revive" },
    { "revive", .alias_of = "vm revive" },
    { "task", .alias_of = "task show" },
    { "task show", cli_task, "task show ID                        a task, its stages and steps",
      "task" },
    { "task abort", cli_task,
      "task abort ID                       stop a task at its next stage and undo what it did",
      "task abort" },
    { "abort", .alias_of = "task abort" },
    { "task retry", cli_task,
      "task retry ID                       run a FAILED task's failed stage again (admins,\n"
      "                                    operators)",
      "task retry" },
    { "task force-fail", cli_task,
      "task force-fail ID                  end a stuck task FAILED now (admins, operators)",
      "task force-fail" },
    { "rate list", cli_rates,
      "rate list                           the rate cards, by effective time", "rates" },
    { "rates", .alias_of = "rate list" },
    { "rate show", cli_rates, "rate show ID                        one rate card", "rates show" },
    { "rate create", cli_rates,
      "rate create --currency CUR --vcpu-hour N --ram-gb-hour N --disk-gb-hour N\n"
      "            [--effective T] [--templates NAME=N,...] [--factors STATE=N,...]\n"
      "                                    add a rate card (admins; minor units per 1,000\n"
      "                                    hours, per day for a template; never in the past)",
      "rates create" },
    { "chargeback", cli_chargeback,
      "chargeback --group G [--month YYYY-MM | --from T --to T] [--by day|month|vm|user]\n"
      "                                    a group's charges in minor units (-o csv: CSV)" },
    { "budget show", cli_budget,
      "budget show G                       a group's monthly budget, spent so far, alerts" },
    { "budget", .alias_of = "budget show" },
    { "budget set", cli_budget,
      "budget set G --amount N [--thresholds P,...] [--hard-stop]\n"
      "                                    a group's monthly budget in minor units (alerts\n"
      "                                    at P percent, default 80,100; managers, admins)" },
    { "budget delete", cli_budget, "budget delete G                     remove a group's budget" },
    { "usage", cli_usage,
      "usage [--from T] [--to T] [--owner U] [--group G]\n"
      "                                    vCPU-, GB-RAM- and GB-disk-hours per VM" },
    { "groups", cli_groups,
      "groups [list|show G|create NAME|update G|delete G] [OPTIONS]\n"
      "                                    groups (G: id or name); `berth groups help`\n"
      "groups members G | add-member G USER --role R | set-role G USER --role R |\n"
      "       remove-member G USER          a group's members (R: member, manager, auditor)\n"
      "groups reserve G HOST:VCPUS,RAM_MB,DISK_GB ... | --clear\n"
      "                                    capacity held for the group ('*': any host)\n"
      "groups capacity G                   what the group may still use (quota left, free)" },
    { "group list", cli_groups,
      "group list [--name N] [--parent G] [--limit N] [--marker ID]  groups", "groups list" },
    { "group show", cli_groups, "group show G                        one group (G: id or name)",
      "groups show" },
    { "group create", cli_groups,
      "group create NAME [OPTIONS]         a group (admins; options: `berth groups help`)",
      "groups create" },
    { "group update", cli_groups,
      "group update G [OPTIONS]            change a group (options: `berth groups help`)",
      "groups update" },
    { "group delete", cli_groups, "group delete G                      delete an empty group",
      "groups delete" },
    { "group members", cli_groups, "group members G                     a group's members",
      "groups members" },
    { "group add-member", cli_groups,
      "group add-member G USER --role R    add USER (R: member, manager, auditor)",
      "groups add-member" },
    { "group set-role", cli_groups, "group set-role G USER --role R      change USER's role",
      "groups set-role" },
    { "group remove-member", cli_groups, "group remove-member G USER          take USER out",
      "groups remove-member" },
    { "group reserve", cli_groups,
      "group reserve G HOST:VCPUS,RAM_MB,DISK_GB ... | --clear\n"
      "                                    capacity held for the group ('*': any host)",
      "groups reserve" },
    { "group capacity", cli_groups,
      "group capacity G                    what the group may still use (quota left, free)",
      "groups capacity" },
    { "audit", cli_audit,
      "audit [--actor U] [--target T] [--group G] [--action A] [--since T]\n"
      "      [--until T] [--limit N] [--marker ID]\n"
      "                                    the audit trail, newest first" },
    { "onboard", cli_onboard,
      "onboard NAME --justification TEXT [--cost-centre CC] [--vms N] [--vcpus N]\n"
      "        [--ram-mb N] [--disk-gb N] [--charging-model allocation|reservation]\n"
      "                                    ask an admin for a new group (you manage it)" },
    { "allocate", cli_allocate,
      "allocate GROUP [--vms N|+N] [--vcpus N|+N] [--ram-mb N|+N] [--disk-gb N|+N]\n"
      "                                    ask for more quota for a group you manage\n"
      "        allocate GROUP --reserve 'HOST:VCPUS,RAM_MB,DISK_GB ...'\n"
      "                                    ask for reservations for a group you manage" },
    { "users", cli_users,
      "users list | show USER | enable USER | disable USER | delete USER | create USER ...\n"
      "                                    users (admins; show: you too)" },
    { "user list", cli_users, "user list                           users (admins)", "users list" },
    { "user show", cli_users, "user show USER                      one user (admins, or you)",
      "users show" },
    { "user create", cli_users,
      "user create USER [--role R] [--display-name N] [--email E] [--password-stdin]\n"
      "                                    make a user (admins)",
      "users create" },
    { "user enable", cli_users, "user enable USER                    let a user in (admins)",
      "users enable" },
    { "user disable", cli_users, "user disable USER                   shut a user out (admins)",
      "users disable" },
    { "user delete", cli_users, "user delete USER                    delete a user (admins)",
      "users delete" },
    { "passwd", cli_passwd, "passwd [--password-stdin]           change your password" },
    { "keys", cli_keys, "keys create NAME | list | revoke ID   your API keys for scripts" },
    { "key create", cli_keys, "key create NAME                     an API key for scripts",
      "keys create" },
    { "key list", cli_keys, "key list                            your API keys", "keys list" },
    { "key revoke", cli_keys, "key revoke ID                       revoke one of your API keys",
      "keys revoke" },
    { "ssh-key list", cli_ssh_keys,
      "ssh-key list                        your SSH public keys: type, fingerprint", "ssh-keys" },
    { "ssh-keys", .alias_of = "ssh-key list" },
    { "ssh-key add", cli_ssh_keys,
      "ssh-key add NAME FILE|--key LINE    keep an SSH public key (FILE: a .pub file, or -\n"
      "                                    for standard input) for request --ssh-key",
      "ssh-keys add" },
    { "ssh-key show", cli_ssh_keys, "ssh-key show NAME                   one of your SSH keys",
      "ssh-keys show" },
    { "ssh-key delete", cli_ssh_keys,
      "ssh-key delete NAME                 delete one of your SSH keys (VMs keep theirs)",
      "ssh-keys delete" },
    { "health", cli_health,
      "health                              every registered service instance" },
    { "completion", s_completion,
      "completion bash                     the bash completion script (source it)" },
    { "manpage", s_manpage, "manpage                             berth(1) as roff" },
    { NULL, NULL, NULL, NULL, NULL },
};
#pragma GCC diagnostic pop

/* ---- the table ---- */

static size_t s_words(const char *text, const char **word, size_t *len, size_t max)
{
    size_t n = 0;
    while (*text && n < max) {
        while (*text == ' ')
            text++;
        if (!*text)
            break;
        word[n] = text;
        while (*text && *text != ' ')
            text++;
        len[n] = (size_t)(text - word[n]);
        n++;
    }
    return n;
}

static const s_command_t *s_find(const char *name)
{
    for (const s_command_t *c = s_commands; c->name; c++)
        if (streq(c->name, name))
            return c;
    return NULL;
}

/* The command argv[0..] names: the entry whose words match the most of them (*nwords). */
static const s_command_t *s_match(int argc, char **argv, int *nwords)
{
    const s_command_t *best = NULL;
    *nwords = 0;
    for (const s_command_t *c = s_commands; c->name; c++) {
        const char *word[8];
        size_t len[8];
        int n = (int)s_words(c->name, word, len, 8);
        if (n > argc || n <= *nwords)
            continue;
        int k = 0;
        while (k < n && strlen(argv[k]) == len[k] && strncmp(argv[k], word[k], len[k]) == 0)
            k++;
        if (k == n) {
            best = c;
            *nwords = n;
        }
    }
    return best;
}

/* What an entry runs: an alias's target. */
static const s_command_t *s_target(const s_command_t *c)
{
    if (c && c->alias_of)
        c = s_find(c->alias_of);
    return c;
}

/* An entry without usage is described by the entry with usage before it. */
static const char *s_usage_of(const s_command_t *c)
{
    c = s_target(c);
    while (c && c > s_commands && !c->usage)
        c--;
    return c ? c->usage : NULL;
}

static void s_print_usage_lines(FILE *out, const char *usage)
{
    for (const char *line = usage; line && *line;) {
        const char *nl = strchr(line, '\n');
        int n = nl ? (int)(nl - line) : (int)strlen(line);
        fprintf(out, "  %.*s\n", n, line);
        line = nl ? nl + 1 : line + n;
    }
}

static void s_usage(FILE *out)
{
    fprintf(out, "usage: berth [-o table|json|yaml] [--url URL] [--cacert FILE] [--pin sha256:HEX] "
                 "COMMAND [ARGS]\n"
                 "       berth help COMMAND | berth COMMAND --help | berth --version\n"
                 "       berth help --commands (every command's name, one a line)\n\n"
                 "commands (-o may come anywhere on the line):\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        if (c->usage && !c->alias_of)
            s_print_usage_lines(out, c->usage);
    fprintf(out, "\nshort forms:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        if (c->alias_of)
            fprintf(out, "  %-22s berth %s\n", c->name, c->alias_of);
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

/* The help of the command argv[0..] names (a noun alone: each of its commands). 0 when
   printed to out, -1 when nothing goes by that name (the caller says so). */
static int s_help(FILE *out, int argc, char **argv)
{
    int n = 0;
    const s_command_t *c = s_match(argc, argv, &n);
    if (c && s_usage_of(c)) {
        fprintf(out, "usage: berth ");
        const char *usage = s_usage_of(c);
        for (const char *line = usage; *line;) {
            const char *nl = strchr(line, '\n');
            int len = nl ? (int)(nl - line) : (int)strlen(line);
            fprintf(out, "%s%.*s\n", line == usage ? "" : "  ", len, line);
            line = nl ? nl + 1 : line + len;
        }
        if (c->alias_of)
            fprintf(out, "(berth %s is short for berth %s)\n", c->name, c->alias_of);
        fprintf(out, "options anywhere: -o table|json|yaml\n");
        return 0;
    }
    /* A noun without its verb: the commands that start with it. */
    int found = 0;
    size_t len = argc > 0 ? strlen(argv[0]) : 0;
    for (const s_command_t *e = s_commands; argc > 0 && e->name; e++)
        if (e->usage && !e->alias_of && strncmp(e->name, argv[0], len) == 0 &&
            e->name[len] == ' ') {
            if (!found++)
                fprintf(out, "usage:\n");
            s_print_usage_lines(out, e->usage);
        }
    return found ? 0 : -1;
}

/* ---- generated from the table: bash completion and the man page ---- */

/* The length of name's first word; whether an entry before c starts with the same one
   (and, with verbs, has verbs too). */
static size_t s_first_len(const char *name)
{
    const char *sp = strchr(name, ' ');
    return sp ? (size_t)(sp - name) : strlen(name);
}

static int s_first_seen(const s_command_t *c, int with_verbs)
{
    size_t len = s_first_len(c->name);
    for (const s_command_t *e = s_commands; e < c; e++)
        if (s_first_len(e->name) == len && strncmp(e->name, c->name, len) == 0 &&
            (!with_verbs || e->name[len] == ' '))
            return 1;
    return 0;
}

static int s_completion(cli_t *cli, int argc, char **argv)
{
    (void)cli;
    if (argc != 2 || !streq(argv[1], "bash")) {
        fprintf(stderr, "usage: berth completion bash\n");
        return 2;
    }
    /* Words 1: every command's first word; 2: a noun's verbs; after: -o's formats. */
    printf("# bash completion for berth (generated by `berth completion bash`)\n"
           "_berth()\n{\n"
           "    local cur=${COMP_WORDS[COMP_CWORD]} first=${COMP_WORDS[1]} words\n"
           "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
           "        words='help --version --help -o");
    for (const s_command_t *c = s_commands; c->name; c++)
        if (!s_first_seen(c, 0))
            printf(" %.*s", (int)s_first_len(c->name), c->name);
    printf("'\n"
           "    elif [ \"$COMP_CWORD\" -eq 2 ]; then\n"
           "        case $first in\n");
    for (const s_command_t *c = s_commands; c->name; c++) {
        size_t len = s_first_len(c->name);
        if (!c->name[len] || s_first_seen(c, 1))
            continue;
        printf("        %.*s) words='--help", (int)len, c->name);
        for (const s_command_t *e = c; e->name; e++)
            if (strncmp(e->name, c->name, len + 1) == 0)
                printf(" %s", e->name + len + 1);
        printf("' ;;\n");
    }
    /* A one-word command whose handler takes subcommands (groups, users, keys): the verbs
       the noun-verb entries pass it. */
    for (const s_command_t *c = s_commands; c->name; c++) {
        size_t len = strlen(c->name);
        if (c->alias_of || !c->fn || strchr(c->name, ' '))
            continue;
        int any = 0;
        for (const s_command_t *e = s_commands; e->name; e++)
            if (e->fn == c->fn && e->call && strncmp(e->call, c->name, len) == 0 &&
                e->call[len] == ' ') {
                if (!any++)
                    printf("        %s) words='--help", c->name);
                printf(" %s", e->call + len + 1);
            }
        if (any)
            printf("' ;;\n");
    }
    printf("        help) words='");
    for (const s_command_t *c = s_commands; c->name; c++)
        if (!s_first_seen(c, 0))
            printf("%s%.*s", c == s_commands ? "" : " ", (int)s_first_len(c->name), c->name);
    printf("' ;;\n"
           "        *) words='--help -o' ;;\n"
           "        esac\n"
           "    elif [ \"${COMP_WORDS[COMP_CWORD-1]}\" = -o ]; then\n"
           "        words='table json yaml'\n"
           "    else\n"
           "        words='--help -o'\n"
           "    fi\n"
           "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
           "}\n"
           "complete -F _berth berth\n");
    return 0;
}

/* A roff text line: a leading '.' or '\'' would be a request, '\\' an escape, '-' a hyphen. */
static void s_roff(const char *text, int len)
{
    if (len > 0 && (text[0] == '.' || text[0] == '\''))
        printf("\\&");
    for (int i = 0; i < len; i++) {
        if (text[i] == '\\')
            printf("\\e");
        else if (text[i] == '-')
            printf("\\-");
        else
            putchar(text[i]);
    }
    putchar('\n');
}

static int s_manpage(cli_t *cli, int argc, char **argv)
{
    (void)cli;
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: berth manpage\n");
        return 2;
    }
    printf(".TH BERTH 1 \"\" \"berth %s\" \"Berth\"\n"
           ".SH NAME\nberth \\- the Berth command-line client\n"
           ".SH SYNOPSIS\n.B berth\n[\\fB\\-o\\fR table|json|yaml] [\\fB\\-\\-url\\fR URL] "
           "[\\fB\\-\\-cacert\\fR FILE] [\\fB\\-\\-pin\\fR sha256:HEX] \\fICOMMAND\\fR "
           "[\\fIARGS\\fR]\n.br\n.B berth help\n\\fICOMMAND\\fR\n"
           ".SH DESCRIPTION\nberth asks the gateway's REST API for VMs and manages them. "
           "Commands read noun then verb; the short forms listed below do the same. "
           "It prints tables; \\fB\\-o json\\fR or \\fB\\-o yaml\\fR, anywhere on the line, "
           "print the server's answer instead.\n"
           ".SH COMMANDS\n",
           BERTH_VERSION);
    for (const s_command_t *c = s_commands; c->name; c++) {
        if (!c->usage || c->alias_of)
            continue;
        printf(".PP\n.nf\n");
        for (const char *line = c->usage; *line;) {
            const char *nl = strchr(line, '\n');
            int n = nl ? (int)(nl - line) : (int)strlen(line);
            s_roff(line, n);
            line = nl ? nl + 1 : line + n;
        }
        printf(".fi\n");
    }
    printf(".SH SHORT FORMS\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        if (c->alias_of) {
            printf(".TP\n.B berth ");
            s_roff(c->name, (int)strlen(c->name));
            printf("berth ");
            s_roff(c->alias_of, (int)strlen(c->alias_of));
        }
    printf(".SH EXIT STATUS\n0 done, 1 failed (the server's message is printed), 2 bad usage.\n"
           ".SH ENVIRONMENT\n.TP\n.B BERTH_URL\nthe gateway (default: the URL logged in to, "
           "else %s)\n.TP\n.B BERTH_CA_FILE\nas \\fB\\-\\-cacert\\fR\n.TP\n.B BERTH_PIN\nas "
           "\\fB\\-\\-pin\\fR\n.TP\n.B BERTH_USER\\fR, \\fBBERTH_PASSWORD\nfor login\n"
           ".SH FILES\n$XDG_CONFIG_HOME/berth/token (default ~/.config/berth/token)\n",
           CLI_DEFAULT_URL);
    return 0;
}

/* -o FORMAT, -oFORMAT, --output FORMAT, --output=FORMAT anywhere before "--": taken out of
   argv (compacted), the format set. -1 on a format we do not print. */
static int s_take_output(int *argc, char **argv, cli_t *cli)
{
    int out = 1, only_pos = 0;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *format = NULL;
        if (!only_pos && streq(a, "--"))
            only_pos = 1;
        if (!only_pos && (streq(a, "-o") || streq(a, "--output"))) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "berth: %s needs table, json or yaml\n", a);
                return -1;
            }
            format = argv[++i];
        } else if (!only_pos && strncmp(a, "-o", 2) == 0 && a[2])
            format = a + 2;
        else if (!only_pos && strncmp(a, "--output=", 9) == 0)
            format = a + 9;
        if (!format) {
            argv[out++] = argv[i];
            continue;
        }
        cli->json = streq(format, "json") || streq(format, "yaml");
        cli->csv = streq(format, "csv");
        cli_output_yaml(streq(format, "yaml"));
        if (!cli->json && !cli->csv && !streq(format, "table")) {
            fprintf(stderr, "berth: -o takes table, json or yaml (csv: chargeback), not '%.40s'\n",
                    format);
            return -1;
        }
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

/* --help or -h among the command's arguments (before "--"). */
static int s_wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc && !streq(argv[i], "--"); i++)
        if (streq(argv[i], "--help") || streq(argv[i], "-h"))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    cli_t cli = { 0 };
    const char *url_flag = NULL, *pin = NULL;
    if (s_take_output(&argc, argv, &cli) != 0) {
        s_usage(stderr);
        return 2;
    }
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (streq(argv[i], "--url") && i + 1 < argc)
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
        } else if (streq(argv[i], "--version")) {
            printf("berth %s\n", BERTH_VERSION);
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
        if (i + 2 == argc && streq(argv[i + 1], "--commands")) {
            /* Every name of the table, one a line, for scripts (and the tests). */
            for (const s_command_t *c = s_commands; c->name; c++)
                printf("%s\n", c->name);
            return 0;
        }
        if (i + 1 >= argc) {
            s_usage(stdout);
            return 0;
        }
        if (s_help(stdout, argc - i - 1, argv + i + 1) == 0)
            return 0;
        fprintf(stderr, "berth help: no command %s\n", argv[i + 1]);
        s_usage(stderr);
        return 2;
    }
    if (s_wants_help(argc - i, argv + i) && s_help(stdout, argc - i, argv + i) == 0)
        return 0;
    int nwords = 0;
    const s_command_t *run = s_target(s_match(argc - i, argv + i, &nwords));
    if (!run || !run->fn) {
        /* A noun without a verb it has: its commands, as bad usage. */
        if (s_help(stderr, argc - i, argv + i) == 0)
            fprintf(stderr, "berth: %s needs one of the commands above\n", argv[i]);
        else {
            fprintf(stderr, "berth: unknown command %s\n", argv[i]);
            s_usage(stderr);
        }
        return 2;
    }
    /* The handler sees its call words as argv[0..], then the arguments after the command. */
    const char *word[8];
    size_t len[8];
    char words[256];
    const char *call = run->call ? run->call : run->name;
    util_strlcpy(words, call, sizeof words);
    size_t ncall = s_words(words, word, len, 8);
    for (size_t k = 0; k < ncall; k++)
        words[word[k] - words + len[k]] = '\0';
    int sub_argc = (int)ncall + (argc - i - nwords);
    char **sub_argv = calloc((size_t)sub_argc + 1, sizeof *sub_argv);
    if (!sub_argv)
        return 1;
    for (size_t k = 0; k < ncall; k++)
        sub_argv[k] = (char *)word[k];
    for (int k = i + nwords; k < argc; k++)
        sub_argv[ncall + (size_t)(k - i - nwords)] = argv[k];
    int rc = 1;
    if (run->fn == s_completion || run->fn == s_manpage)
        rc = run->fn(&cli, sub_argc, sub_argv);
    /* login replaces an unusable token file; everything else refuses to use one. */
    else if (cli_session_load(&cli, url_flag, run->fn != cli_login) == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = run->fn(&cli, sub_argc, sub_argv);
        curl_global_cleanup();
    }
    explicit_bzero(cli.token, sizeof cli.token);
    free(sub_argv);
    return rc;
}
