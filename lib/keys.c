/*  keys: the table of key kinds (name, hash tag, parts) and the one function that builds
    a key from it. docs/state.md lists the same keys for people; test_keys checks that every
    kind here appears there. */
#include "keys.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name; /* after "berth:" */
    int tagged;       /* the id goes in a hash tag: the key belongs to that aggregate */
    int parts;        /* ids in the key: 1, or 2 (joined by ':') */
} s_kind_t;

static const s_kind_t s_kinds[KEYS_KIND_COUNT] = {
    [KEYS_VM] = { "vm", 1, 1 },
    [KEYS_CLAIM] = { "claim", 1, 1 },
    [KEYS_USAGE] = { "usage", 1, 1 },
    [KEYS_TASK] = { "task", 1, 1 },
    [KEYS_REQUEST] = { "request", 1, 1 },
    [KEYS_HOST] = { "host", 0, 1 },
    [KEYS_IMAGE] = { "image", 0, 1 },
    [KEYS_IMAGE_ID] = { "image-id", 0, 1 },
    [KEYS_TEMPLATE] = { "template", 0, 1 },
    [KEYS_TEMPLATE_NAME] = { "template-name", 0, 1 },
    [KEYS_USER] = { "user", 0, 1 },
    [KEYS_TOKEN] = { "token", 0, 1 },
    [KEYS_REGISTRY] = { "registry", 0, 1 },
    [KEYS_INSTANCE] = { "instance", 0, 2 },
    [KEYS_IDEM] = { "idem", 0, 2 },
    [KEYS_GROUP] = { "group", 1, 1 },
    [KEYS_GROUP_MEMBERS] = { "group-members", 1, 1 },
    [KEYS_GROUP_NAME] = { "group-name", 0, 1 },
    [KEYS_USER_GROUPS] = { "user-groups", 0, 1 },
    [KEYS_GROUP_CHILDREN] = { "group-children", 1, 1 },
    [KEYS_GROUP_VMS] = { "group-vms", 1, 1 },
    [KEYS_LOGIN_FAIL_USER] = { "login-fail-user", 0, 1 },
    [KEYS_LOGIN_FAIL_ADDR] = { "login-fail-addr", 0, 1 },
    [KEYS_GROUP_USAGE] = { "group-usage", 1, 1 },
    [KEYS_GROUP_USER_USAGE] = { "group-user-usage", 0, 2 },
    [KEYS_HOST_RESERVATIONS] = { "host-reservations", 0, 1 },
    [KEYS_APIKEY] = { "apikey", 0, 1 },
    [KEYS_USER_APIKEYS] = { "user-apikeys", 0, 1 },
    [KEYS_GROUP_WEBHOOK] = { "group-webhook", 1, 1 },
    [KEYS_RATE] = { "rate", 0, 1 },
    [KEYS_SSH_KEY] = { "ssh-key", 0, 2 },
    [KEYS_USER_SSH_KEYS] = { "user-ssh-keys", 0, 1 },
    [KEYS_BUDGET] = { "budget", 1, 1 },
    [KEYS_BUDGET_ALERTS] = { "budget-alerts", 1, 1 },
    [KEYS_RESERVATION_LOG] = { "reservation-log", 1, 1 },
    [KEYS_CHARGE_CLOSED] = { "charge-closed", 1, 1 },
    [KEYS_CHARGE_ADJUST] = { "charge-adjust", 1, 1 },
    [KEYS_NETWORK] = { "network", 0, 1 },
    [KEYS_NETWORK_NAME] = { "network-name", 0, 1 },
    [KEYS_NETWORK_ADDRESSES] = { "network-addresses", 0, 1 },
    [KEYS_IMAGE_STAGED] = { "image-staged", 0, 1 },
    [KEYS_REQUEST_HOSTS] = { "request-hosts", 1, 1 },
    [KEYS_POOL] = { "pool", 0, 1 },
    [KEYS_POOL_READY] = { "pool-ready", 0, 1 },
};

const char *keys_build(char *buf, keys_kind_t kind, const char *id, const char *id2)
{
    assert(buf && kind >= 0 && kind < KEYS_KIND_COUNT && id);
    const s_kind_t *k = &s_kinds[kind];
    assert((k->parts == 2) == (id2 != NULL));
    if (k->parts == 2)
        snprintf(buf, KEYS_MAX, "berth:%s:%s:%s", k->name, id, id2);
    else
        snprintf(buf, KEYS_MAX, k->tagged ? "berth:%s:{%s}" : "berth:%s:%s", k->name, id);
    return buf;
}

const char *keys_vm(char *buf, const char *vm)
{
    return keys_build(buf, KEYS_VM, vm, NULL);
}

const char *keys_task(char *buf, const char *task)
{
    return keys_build(buf, KEYS_TASK, task, NULL);
}

const char *keys_host(char *buf, const char *host)
{
    return keys_build(buf, KEYS_HOST, host, NULL);
}

int keys_kind(const char *name)
{
    for (int i = 0; i < KEYS_KIND_COUNT; i++)
        if (strcmp(s_kinds[i].name, name) == 0)
            return i;
    return -1;
}

const char *keys_kind_name(keys_kind_t kind)
{
    assert(kind >= 0 && kind < KEYS_KIND_COUNT);
    return s_kinds[kind].name;
}
