/*  networks: networks in Redis. A network is the hash berth:network:<id>; the zset
    berth:networks lists the ids, berth:network-name:<name> (field id) maps a name to its id
    and berth:network-default (field id) names the default one. The add transaction checks
    that the name is free and, for a default network, that none is the default yet; the
    delete transaction checks that the network's address hash (berth:network-addresses:<id>,
    which only the scheduler's claim and release scripts write) is empty, so a VM placed at
    the same moment either got its address first (the delete is refused) or finds the
    network gone (its claim is refused). */
#include "networks.h"
#include "clock.h"
#include "groups.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "model.h"
#include "policy.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* text as an IPv4 address: four decimal octets, no leading zeros. 0 and *out, or -1. */
static int s_ip4(const char *text, uint32_t *out)
{
    uint32_t v = 0;
    const char *p = text;
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        unsigned octet = 0;
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 4) {
            octet = octet * 10 + (unsigned)(*p++ - '0');
            digits++;
        }
        if (digits > 3 || octet > 255 || (digits > 1 && p[-digits] == '0'))
            return -1;
        v = (v << 8) | octet;
        if (i < 3 && *p++ != '.')
            return -1;
    }
    if (*p)
        return -1;
    *out = v;
    return 0;
}

/* cidr as base and prefix (LIMIT_NETWORK_PREFIX_MIN to _MAX, no host bits set). 0, or -1
   with a reason in why. */
static int s_cidr(const char *cidr, uint32_t *base, int *prefix, const char **why)
{
    char addr[32];
    const char *slash = cidr ? strchr(cidr, '/') : NULL;
    *why = "cidr must be an IPv4 network as a.b.c.d/prefix";
    if (!slash || (size_t)(slash - cidr) >= sizeof addr)
        return -1;
    memcpy(addr, cidr, (size_t)(slash - cidr));
    addr[slash - cidr] = '\0';
    char *end = NULL;
    long p = strtol(slash + 1, &end, 10);
    if (s_ip4(addr, base) != 0 || !isdigit((unsigned char)slash[1]) || *end)
        return -1;
    if (p < LIMIT_NETWORK_PREFIX_MIN || p > LIMIT_NETWORK_PREFIX_MAX) {
        *why = "cidr's prefix must be from /16 to /30";
        return -1;
    }
    uint32_t mask = p == 0 ? 0 : 0xffffffffu << (32 - p);
    if (*base & ~mask) {
        *why = "cidr must name the network address (no host bits set, e.g. 10.0.0.0/24)";
        return -1;
    }
    *prefix = (int)p;
    return 0;
}

int64_t networks_pool_size(const char *cidr, const char *gateway)
{
    uint32_t base, gw;
    int prefix;
    const char *why;
    if (s_cidr(cidr, &base, &prefix, &why) != 0)
        return -1;
    int64_t span = (int64_t)1 << (32 - prefix);
    int64_t size = span - 2;
    if (gateway && s_ip4(gateway, &gw) == 0 && gw > base && (int64_t)gw < (int64_t)base + span - 1)
        size--;
    return size;
}

/* 1 if text is 1 to max of [A-Za-z0-9._-] (a bridge's or libvirt network's name). */
static int s_attach_name(const char *text, size_t max)
{
    size_t len = text ? strlen(text) : 0;
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)text[i]) && !strchr("._-", text[i]))
            return 0;
    return 1;
}

int networks_check(store_t *store, const Berth__Network *net, char ***groups_p, size_t *n_groups,
                   fault_t *fault)
{
    *groups_p = NULL;
    *n_groups = 0;
    if (!net)
        return error_field(fault, "network", "network is required");
    if (!net->name || strlen(net->name) > LIMIT_NETWORK_NAME_MAX ||
        !policy_is_template_name(net->name))
        return error_field(fault, "name",
                           "name must be 1 to %d of a-z, 0-9, '.', '_' and '-', starting with a "
                           "letter or digit, and not a UUID",
                           LIMIT_NETWORK_NAME_MAX);
    uint32_t base, gw, dns;
    int prefix;
    const char *why;
    if (s_cidr(net->cidr, &base, &prefix, &why) != 0)
        return error_field(fault, "cidr", "%s", why);
    uint64_t last = (uint64_t)base + ((uint64_t)1 << (32 - prefix)) - 1;
    if (!net->gateway || s_ip4(net->gateway, &gw) != 0)
        return error_field(fault, "gateway", "gateway must be an IPv4 address");
    if (gw <= base || gw >= last)
        return error_field(fault, "gateway",
                           "gateway must be an address inside cidr, neither the network "
                           "address nor the broadcast");
    if (net->n_dns > LIMIT_NETWORK_DNS_MAX)
        return error_field(fault, "dns", "at most %d name servers", LIMIT_NETWORK_DNS_MAX);
    for (size_t i = 0; i < net->n_dns; i++)
        if (!net->dns[i] || s_ip4(net->dns[i], &dns) != 0)
            return error_field(fault, "dns", "dns[%zu] must be an IPv4 address", i);
    int bridge = net->bridge && *net->bridge, lvnet = net->libvirt_network && *net->libvirt_network;
    if (bridge == lvnet)
        return error_field(fault, bridge ? "libvirt_network" : "bridge",
                           "give exactly one of bridge (a host bridge) and libvirt_network");
    if (bridge && !s_attach_name(net->bridge, LIMIT_NETWORK_BRIDGE_MAX))
        return error_field(fault, "bridge",
                           "bridge must be 1 to %d of A-Z, a-z, 0-9, '.', '_', '-'",
                           LIMIT_NETWORK_BRIDGE_MAX);
    if (lvnet && !s_attach_name(net->libvirt_network, LIMIT_NETWORK_ATTACH_MAX))
        return error_field(fault, "libvirt_network",
                           "libvirt_network must be 1 to %d of A-Z, a-z, 0-9, '.', '_', '-'",
                           LIMIT_NETWORK_ATTACH_MAX);
    if (net->n_groups > LIMIT_NETWORK_GROUPS_MAX)
        return error_field(fault, "groups", "at most %d groups", LIMIT_NETWORK_GROUPS_MAX);
    char **ids = calloc(net->n_groups + 1, sizeof *ids);
    if (!ids)
        return error_set(fault, "INTERNAL", "out of memory");
    for (size_t i = 0; i < net->n_groups; i++) {
        Berth__Group *g = NULL;
        if (!net->groups[i] || !*net->groups[i] || groups_find(store, net->groups[i], &g, fault)) {
            if (!net->groups[i] || !*net->groups[i])
                error_set(fault, "BAD_REQUEST", "groups[%zu] must name a group", i);
            error_detail(fault, "field", "groups");
            for (size_t k = 0; k < i; k++)
                free(ids[k]);
            free(ids);
            return -1;
        }
        ids[i] = strdup(g->id);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        if (!ids[i]) {
            for (size_t k = 0; k < i; k++)
                free(ids[k]);
            free(ids);
            return error_set(fault, "INTERNAL", "out of memory");
        }
    }
    *groups_p = ids;
    *n_groups = net->n_groups;
    return 0;
}

/* The pool's size and how many addresses are held, into net (as read). */
static int s_counts(store_t *store, Berth__Network *net, fault_t *fault)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(store, "HLEN %s", keys_build(key, KEYS_NETWORK_ADDRESSES, net->id, NULL));
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    net->allocated = r->integer;
    freeReplyObject(r);
    int64_t size = networks_pool_size(net->cidr, net->gateway);
    net->addresses = size > 0 ? size : 0;
    return 0;
}

/* Load the network with id (NOT_FOUND naming ref when absent), with its counts. */
static int s_load(store_t *store, const char *id, const char *ref, Berth__Network **out_p,
                  fault_t *fault)
{
    char key[KEYS_MAX];
    ProtobufCMessage *msg = NULL;
    int rc = model_load(store, &berth__network__descriptor, keys_build(key, KEYS_NETWORK, id, NULL),
                        &msg);
    if (rc == MODEL_NOT_FOUND)
        return error_set(fault, "NOT_FOUND", "unknown network '%.64s'", ref);
    if (rc != 0)
        return fault_store(fault, store);
    Berth__Network *net = (Berth__Network *)msg;
    if (s_counts(store, net, fault) != 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return -1;
    }
    *out_p = net;
    return 0;
}

int networks_find(store_t *store, const char *ref, Berth__Network **out_p, fault_t *fault)
{
    char id[UTIL_ID_LEN] = "";
    if (ref && util_is_uuid(ref))
        util_strlcpy(id, ref, sizeof id);
    else if (ref && strlen(ref) <= LIMIT_NETWORK_NAME_MAX && policy_is_template_name(ref)) {
        char key[KEYS_MAX];
        redisReply *r =
            store_command(store, "HGET %s id", keys_build(key, KEYS_NETWORK_NAME, ref, NULL));
        if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
            if (r)
                freeReplyObject(r);
            return fault_store(fault, store);
        }
        if (r->type == REDIS_REPLY_STRING)
            util_strlcpy(id, r->str, sizeof id);
        freeReplyObject(r);
    }
    if (!*id)
        return error_set(fault, "NOT_FOUND", "unknown network '%.64s'", ref ? ref : "");
    return s_load(store, id, ref, out_p, fault);
}

int networks_create(store_t *store, const Berth__Network *in, const char *actor,
                    Berth__Network **out_p, fault_t *fault)
{
    char **groups = NULL;
    size_t n_groups = 0;
    if (networks_check(store, in, &groups, &n_groups, fault) != 0)
        return -1;
    char id[UTIL_ID_LEN], key[KEYS_MAX], name_key[KEYS_MAX], at[24];
    util_uuid(id);
    Berth__Network net = BERTH__NETWORK__INIT;
    net.id = id;
    net.name = in->name;
    net.cidr = in->cidr;
    net.gateway = in->gateway;
    net.n_dns = in->n_dns;
    net.dns = in->dns;
    net.bridge = in->bridge ? in->bridge : "";
    net.libvirt_network = in->libvirt_network ? in->libvirt_network : "";
    net.n_groups = n_groups;
    net.groups = groups;
    net.is_default = in->is_default;
    net.created_ms = clock_now_ms();
    net.created_by = (char *)actor;
    keys_build(key, KEYS_NETWORK, id, NULL);
    keys_build(name_key, KEYS_NETWORK_NAME, net.name, NULL);
    snprintf(at, sizeof at, "%lld", (long long)net.created_ms);
    model_tx_t *tx = model_tx_new();
    int rc = -1, oom = !tx;
    if (tx) {
        model_tx_check(tx, name_key, "id", "");
        model_tx_check_size(tx, KEYS_NETWORKS, LIMIT_NETWORKS_MAX);
        if (net.is_default) {
            model_tx_check(tx, KEYS_NETWORK_DEFAULT, "id", "");
            model_tx_hset(tx, KEYS_NETWORK_DEFAULT, "id", id);
        }
        model_tx_put(tx, key, &net.base);
        model_tx_hset(tx, name_key, "id", id);
        model_tx_zadd(tx, KEYS_NETWORKS, 0, id);
        model_tx_event(tx, "network.created", "key", key, "network", id, "name", net.name, "cidr",
                       net.cidr, "actor", actor, "at_ms", at, NULL);
        rc = model_tx_commit(tx, store, NULL);
    }
    model_tx_destroy(&tx);
    if (oom)
        error_set(fault, "INTERNAL", "out of memory");
    else if (rc == MODEL_CONFLICT) {
        /* Which check failed: say the likeliest first. */
        Berth__Network *other = NULL;
        fault_t ignore = { 0 };
        if (networks_find(store, net.name, &other, &ignore) == 0) {
            protobuf_c_message_free_unpacked(&other->base, NULL);
            error_set(fault, "CONFLICT", "network '%s' already exists", net.name);
            error_detail(fault, "field", "name");
        } else if (net.is_default) {
            error_set(fault, "CONFLICT", "another network is already the default");
            error_detail(fault, "field", "is_default");
        } else
            error_set(fault, "CONFLICT", "the platform has %d networks already",
                      LIMIT_NETWORKS_MAX);
    } else if (rc != 0)
        fault_store(fault, store);
    else
        rc = s_load(store, id, id, out_p, fault);
    for (size_t i = 0; i < n_groups; i++)
        free(groups[i]);
    free(groups);
    return rc == 0 ? 0 : -1;
}

static int s_by_name(const void *a, const void *b)
{
    const Berth__Network *x = *(Berth__Network *const *)a, *y = *(Berth__Network *const *)b;
    return strcmp(x->name, y->name);
}

void networks_list_destroy(Berth__NetworkList **list_p)
{
    if (list_p && *list_p) {
        Berth__NetworkList *list = *list_p;
        for (size_t i = 0; i < list->n_networks; i++)
            protobuf_c_message_free_unpacked(&list->networks[i]->base, NULL);
        free(list->networks);
        free(list);
        *list_p = NULL;
    }
}

int networks_list(store_t *store, Berth__NetworkList **list_p, fault_t *fault)
{
    redisReply *ids = store_command(store, "ZRANGE %s 0 -1", KEYS_NETWORKS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return fault_store(fault, store);
    }
    Berth__NetworkList *list = malloc(sizeof *list);
    if (list) {
        berth__network_list__init(list);
        list->networks = calloc(ids->elements ? ids->elements : 1, sizeof *list->networks);
    }
    if (!list || !list->networks) {
        free(list);
        freeReplyObject(ids);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    int rc = 0;
    for (size_t i = 0; i < ids->elements && rc == 0; i++) {
        if (ids->element[i]->type != REDIS_REPLY_STRING)
            continue;
        Berth__Network *net = NULL;
        fault_t miss = { 0 };
        if (s_load(store, ids->element[i]->str, ids->element[i]->str, &net, &miss) == 0)
            list->networks[list->n_networks++] = net;
        else if (streq(miss.code, "NOT_FOUND"))
            log_debug(NULL, "network listed but missing", "{s:s}", "network", ids->element[i]->str);
        else {
            *fault = miss;
            rc = -1;
        }
    }
    freeReplyObject(ids);
    if (rc != 0) {
        networks_list_destroy(&list);
        return -1;
    }
    qsort(list->networks, list->n_networks, sizeof *list->networks, s_by_name);
    *list_p = list;
    return 0;
}

int networks_delete(store_t *store, const char *ref, const char *actor, Berth__Network **out_p,
                    fault_t *fault)
{
    Berth__Network *net = NULL;
    if (networks_find(store, ref, &net, fault) != 0)
        return -1;
    char key[KEYS_MAX], name_key[KEYS_MAX], addrs_key[KEYS_MAX], at[24];
    keys_build(key, KEYS_NETWORK, net->id, NULL);
    keys_build(name_key, KEYS_NETWORK_NAME, net->name, NULL);
    keys_build(addrs_key, KEYS_NETWORK_ADDRESSES, net->id, NULL);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        protobuf_c_message_free_unpacked(&net->base, NULL);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    model_tx_check(tx, key, "id", net->id);
    model_tx_check_size(tx, addrs_key, 1); /* no VM holds an address on it */
    if (net->is_default) {
        model_tx_check(tx, KEYS_NETWORK_DEFAULT, "id", net->id);
        model_tx_del(tx, KEYS_NETWORK_DEFAULT);
    }
    model_tx_del(tx, key);
    model_tx_del(tx, name_key);
    model_tx_zrem(tx, KEYS_NETWORKS, net->id);
    model_tx_event(tx, "network.deleted", "key", key, "network", net->id, "name", net->name,
                   "actor", actor, "at_ms", at, NULL);
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT) {
        Berth__Network *now = NULL;
        fault_t ignore = { 0 };
        int64_t held = net->allocated;
        if (s_load(store, net->id, ref, &now, &ignore) == 0) {
            held = now->allocated;
            protobuf_c_message_free_unpacked(&now->base, NULL);
        }
        error_set(fault, "CONFLICT", "network '%s' is in use: %lld of its addresses are allocated",
                  net->name, (long long)held);
        protobuf_c_message_free_unpacked(&net->base, NULL);
        return -1;
    }
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&net->base, NULL);
        return fault_store(fault, store);
    }
    *out_p = net;
    return 0;
}

/* 1 if group may use net (its groups list is empty or names the group). */
static int s_allows(const Berth__Network *net, const char *group)
{
    if (net->n_groups == 0)
        return 1;
    for (size_t i = 0; i < net->n_groups; i++)
        if (group && streq(net->groups[i], group))
            return 1;
    return 0;
}

/* networks_for_vm, a bad or forbidden requested network named field. */
static int s_for_vm(store_t *store, const char *requested, const char *template_network,
                    const char *group, const char *field, Berth__VmNetwork **out_p, fault_t *fault)
{
    *out_p = NULL;
    Berth__Network *net = NULL;
    if (requested && *requested) {
        if (networks_find(store, requested, &net, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_field(fault, field, "there is no network '%.64s'", requested);
            return -1;
        }
        if (!s_allows(net, group)) {
            error_set(fault, "FORBIDDEN", "the group may not use network '%s'", net->name);
            error_detail(fault, "field", "%s", field);
            protobuf_c_message_free_unpacked(&net->base, NULL);
            return -1;
        }
    } else if (template_network && *template_network) {
        if (networks_find(store, template_network, &net, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_set(fault, "NOT_FOUND", "the template's network '%.64s' no longer exists",
                          template_network);
            return -1;
        }
        if (!s_allows(net, group)) {
            error_set(fault, "FORBIDDEN", "the group may not use network '%s'", net->name);
            error_detail(fault, "field", "template");
            protobuf_c_message_free_unpacked(&net->base, NULL);
            return -1;
        }
    } else {
        redisReply *r = store_command(store, "HGET %s id", KEYS_NETWORK_DEFAULT);
        if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
            if (r)
                freeReplyObject(r);
            return fault_store(fault, store);
        }
        char id[UTIL_ID_LEN] = "";
        if (r->type == REDIS_REPLY_STRING)
            util_strlcpy(id, r->str, sizeof id);
        freeReplyObject(r);
        if (!*id)
            return 0;
        fault_t miss = { 0 };
        if (s_load(store, id, id, &net, &miss) != 0) {
            if (streq(miss.code, "NOT_FOUND"))
                return 0; /* deleted meanwhile: no default */
            *fault = miss;
            return -1;
        }
        if (!s_allows(net, group)) {
            protobuf_c_message_free_unpacked(&net->base, NULL);
            return 0; /* the default is not this group's: no address, as without one */
        }
    }
    Berth__VmNetwork *v = malloc(sizeof *v);
    uint32_t base;
    int prefix = 0;
    const char *why;
    if (v) {
        berth__vm_network__init(v);
        s_cidr(net->cidr, &base, &prefix, &why);
        v->network = strdup(net->id);
        v->name = strdup(net->name);
        v->prefix = prefix;
        v->gateway = strdup(net->gateway);
        v->bridge = strdup(net->bridge ? net->bridge : "");
        v->libvirt_network = strdup(net->libvirt_network ? net->libvirt_network : "");
        v->ip = strdup("");
        v->mac = strdup("");
        v->dns = calloc(net->n_dns + 1, sizeof *v->dns);
        for (size_t i = 0; v->dns && i < net->n_dns; i++)
            if ((v->dns[i] = strdup(net->dns[i])))
                v->n_dns++;
    }
    protobuf_c_message_free_unpacked(&net->base, NULL);
    if (!v || !v->network || !v->name || !v->gateway || !v->bridge || !v->libvirt_network ||
        !v->ip || !v->mac || !v->dns) {
        if (v)
            protobuf_c_message_free_unpacked(&v->base, NULL);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    *out_p = v;
    return 0;
}

int networks_for_vm(store_t *store, const char *requested, const char *template_network,
                    const char *group, Berth__VmNetwork **out_p, fault_t *fault)
{
    return s_for_vm(store, requested, template_network, group, "network", out_p, fault);
}

void networks_vm_list_free(Berth__VmNetwork ***list_p, size_t n)
{
    if (!list_p || !*list_p)
        return;
    for (size_t i = 0; i < n; i++)
        if ((*list_p)[i])
            protobuf_c_message_free_unpacked(&(*list_p)[i]->base, NULL);
    free(*list_p);
    *list_p = NULL;
}

int networks_for_vm_all(store_t *store, const char *requested, char **requested_list,
                        size_t n_requested, const char *template_network, char **template_list,
                        size_t n_template, const char *group, Berth__VmNetwork ***out_p,
                        size_t *n_out, fault_t *fault)
{
    *out_p = NULL;
    *n_out = 0;
    if (n_requested > LIMIT_VM_NETWORKS_MAX)
        return error_field(fault, "networks", "networks may name at most %d networks",
                           LIMIT_VM_NETWORKS_MAX);
    if (n_requested > 0 && requested && *requested && !streq(requested, requested_list[0]))
        return error_field(fault, "network", "network must be the first of networks");
    /* The request's list, else its one network, else the template's list, else its one
       network or the default. */
    int from_request = n_requested > 0;
    char **refs = from_request ? requested_list : template_list;
    size_t n = from_request                                   ? n_requested
               : n_template > 0 && !(requested && *requested) ? n_template
                                                              : 0;
    if (n > LIMIT_VM_NETWORKS_MAX)
        n = LIMIT_VM_NETWORKS_MAX;
    Berth__VmNetwork **list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return error_set(fault, "INTERNAL", "out of memory");
    if (n == 0) {
        if (s_for_vm(store, requested, template_network, group, "network", &list[0], fault) != 0) {
            free(list);
            return -1;
        }
        if (!list[0]) {
            free(list);
            return 0;
        }
        *out_p = list;
        *n_out = 1;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char field[32];
        snprintf(field, sizeof field, "networks[%zu]", i);
        int rc = from_request ? s_for_vm(store, refs[i], "", group, field, &list[i], fault)
                              : s_for_vm(store, "", refs[i], group, field, &list[i], fault);
        if (rc == 0 && !list[i])
            rc = error_field(fault, field, "networks[%zu] must name a network", i);
        for (size_t j = 0; rc == 0 && j < i; j++)
            if (streq(list[j]->network, list[i]->network))
                rc = error_field(fault, field, "networks[%zu] names network '%s' again", i,
                                 list[i]->name);
        if (rc != 0) {
            networks_vm_list_free(&list, i + 1);
            return -1;
        }
    }
    *out_p = list;
    *n_out = n;
    return 0;
}
