/*  networks: the networks VMs get addresses on, over REST. Admins add and delete them; every
    signed-in user reads them. The gateway checks the body's shape and lengths (lib/limit.h);
    the approval service owns the records and checks the rest (the CIDR, the gateway inside
    it, the groups), naming the field. */
#include "gateway.h"

#include <stdio.h>
#include <string.h>

/* A JSON array of the strings. */
static json_t *s_strings(char **items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, view_str(items[i]));
    return a ? a : json_array();
}

json_t *view_network(const Berth__Network *n)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:I, s:I, s:o, s:o}", "id",
                     view_str(n->id), "name", view_str(n->name), "cidr", view_str(n->cidr),
                     "gateway", view_str(n->gateway), "dns", s_strings(n->dns, n->n_dns), "bridge",
                     view_str(n->bridge), "libvirt_network", view_str(n->libvirt_network), "groups",
                     s_strings(n->groups, n->n_groups), "is_default", n->is_default, "addresses",
                     (json_int_t)n->addresses, "allocated", (json_int_t)n->allocated, "created_at",
                     rest_time(n->created_ms), "created_by", view_str(n->created_by));
}

json_t *view_vm_network(const Berth__VmNetwork *n)
{
    if (!n || !n->name || !*n->name)
        return json_null();
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:i}", "name", view_str(n->name), "ip",
                     view_str(n->ip && *n->ip ? n->ip : NULL), "mac",
                     view_str(n->mac && *n->mac ? n->mac : NULL), "gateway", view_str(n->gateway),
                     "dns", s_strings(n->dns, n->n_dns), "network", view_str(n->network), "prefix",
                     n->prefix);
}

json_t *view_vm_networks(const Berth__Vm *vm)
{
    json_t *a = json_array();
    if (a && vm->n_networks == 0 && vm->network && vm->network->name && *vm->network->name)
        json_array_append_new(a, view_vm_network(vm->network)); /* a VM from before the list */
    for (size_t i = 0; a && i < vm->n_networks; i++)
        json_array_append_new(a, view_vm_network(vm->networks[i]));
    return a ? a : json_array();
}

static void s_answer(http_req_t *req, ProtobufCMessage *answer, int status)
{
    const Berth__Network *n = (const Berth__Network *)answer;
    if (status == 201 && n->id && *n->id)
        snprintf(req->location, sizeof req->location, "/v1/networks/%s", n->id);
    http_json(req, status, json_pack("{s:o}", "network", view_network(n)));
}

static void s_created(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Network *n = (const Berth__Network *)answer;
    log_info(req->request_id, "network created", "{s:s, s:s, s:s}", "network", n->name, "id", n->id,
             "by", req->user);
    s_answer(req, answer, 201);
}

static void s_got(http_req_t *req, ProtobufCMessage *answer)
{
    s_answer(req, answer, 200);
}

static void s_deleted(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Network *n = (const Berth__Network *)answer;
    log_info(req->request_id, "network deleted", "{s:s, s:s, s:s}", "network", n->name, "id", n->id,
             "by", req->user);
    s_answer(req, answer, 200);
}

static void s_listed(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__NetworkList *list = (const Berth__NetworkList *)answer;
    json_t *nets = json_array();
    for (size_t i = 0; nets && i < list->n_networks; i++)
        json_array_append_new(nets, view_network(list->networks[i]));
    http_json(req, 200, json_pack("{s:o}", "networks", nets));
}

/* The body's array of strings `field` (at most max items of at most item_max bytes, each
   non-empty) into items (borrowed from the body). 0 and *n (0 when absent), or -1 with a
   400 naming the field. */
int networks_string_array(http_req_t *req, const char *field, size_t max, size_t item_max,
                          char **items, size_t *n)
{
    *n = 0;
    json_t *a = json_object_get(req->body, field);
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > max)
        return http_bad_field(req, field, "%s must be an array of at most %zu strings", field, max);
    size_t i;
    json_t *item;
    json_array_foreach(a, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) == 0 ||
            json_string_length(item) > item_max)
            return http_bad_field(req, field, "%s[%zu] must be a string of 1 to %zu characters",
                                  field, i, item_max);
        items[i] = (char *)json_string_value(item);
    }
    *n = json_array_size(a);
    return 0;
}

void networks_create(http_req_t *req)
{
    static const char *const allowed[] = { "name",   "cidr",       "gateway",
                                           "dns",    "bridge",     "libvirt_network",
                                           "groups", "is_default", NULL };
    const char *name, *cidr, *gateway, *bridge = NULL, *lvnet = NULL;
    int is_default = 0;
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_NETWORK_NAME_MAX, &name) ||
        rest_str(req, "cidr", 1, 18, &cidr) || rest_str(req, "gateway", 1, 15, &gateway) ||
        rest_str(req, "bridge", 0, LIMIT_NETWORK_BRIDGE_MAX, &bridge) < 0 ||
        rest_str(req, "libvirt_network", 0, LIMIT_NETWORK_ATTACH_MAX, &lvnet) < 0 ||
        rest_bool(req, "is_default", 0, &is_default) < 0)
        return;
    char *dns[LIMIT_NETWORK_DNS_MAX], *groups[LIMIT_NETWORK_GROUPS_MAX];
    size_t n_dns = 0, n_groups = 0;
    if (networks_string_array(req, "dns", LIMIT_NETWORK_DNS_MAX, 15, dns, &n_dns) ||
        networks_string_array(req, "groups", LIMIT_NETWORK_GROUPS_MAX, LIMIT_GROUP_REF_MAX, groups,
                              &n_groups))
        return;
    Berth__Network net = BERTH__NETWORK__INIT;
    net.name = (char *)name;
    net.cidr = (char *)cidr;
    net.gateway = (char *)gateway;
    net.dns = dns;
    net.n_dns = n_dns;
    net.bridge = (char *)(bridge ? bridge : "");
    net.libvirt_network = (char *)(lvnet ? lvnet : "");
    net.groups = groups;
    net.n_groups = n_groups;
    net.is_default = is_default;
    Berth__CreateNetwork ask = BERTH__CREATE_NETWORK__INIT;
    ask.network = &net;
    rest_call(req, "approval", &ask.base, &berth__network__descriptor, s_created);
}

void networks_list(http_req_t *req)
{
    Berth__ListNetworks ask = BERTH__LIST_NETWORKS__INIT;
    rest_call(req, "approval", &ask.base, &berth__network_list__descriptor, s_listed);
}

/* The {id} of the route, when it can name a network (its id or name); NULL with 404. */
static const char *s_ref(http_req_t *req)
{
    const char *id = req->params[0];
    if (!rest_id_ok(id)) {
        http_error(req, "NOT_FOUND", "no such network");
        return NULL;
    }
    return id;
}

void networks_get(http_req_t *req)
{
    const char *id = s_ref(req);
    if (!id)
        return;
    Berth__GetNetwork ask = BERTH__GET_NETWORK__INIT;
    ask.id = (char *)id;
    rest_call(req, "approval", &ask.base, &berth__network__descriptor, s_got);
}

void networks_delete(http_req_t *req)
{
    const char *id = s_ref(req);
    if (!id)
        return;
    Berth__DeleteNetwork ask = BERTH__DELETE_NETWORK__INIT;
    ask.id = (char *)id;
    rest_call(req, "approval", &ask.base, &berth__network__descriptor, s_deleted);
}
