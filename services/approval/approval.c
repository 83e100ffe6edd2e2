/*  approval: message handlers of the approval service. Each one takes the typed body,
    calls the module that owns the logic, and answers exactly once: the result, or the
    fault's code and message. Client mistakes are logged at info, store trouble at warn. */
#include "approval.h"
#include "allocations.h"
#include "builds.h"
#include "catalog.h"
#include "extensions.h"
#include "decide.h"
#include "groups.h"
#include "log.h"
#include "networks.h"
#include "onboarding.h"
#include "pool.h"
#include "requests.h"
#include "util.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct _approval_t {
    store_t *store;        /* the service's connection, borrowed */
    assertion_t *verifier; /* checks the gateway's user assertions, borrowed */
    bus_client_t *client;  /* the service's, borrowed: calls to the scheduler */
    policy_t policy;
    int seeded; /* the catalog is known to have its first templates */
    int warned; /* "not seeded yet" logged since the last success */
};

approval_t *approval_new(store_t *store, assertion_t *verifier, const policy_t *policy)
{
    approval_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->verifier = verifier;
    self->policy = *policy;
    return self;
}

void approval_destroy(approval_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

int approval_seed(approval_t *self)
{
    if (self->seeded)
        return 0;
    fault_t fault = { 0 };
    int added = catalog_seed(self->store, &fault);
    if (added >= 0 && groups_ensure_default(self->store, &fault) != 0)
        added = -1;
    if (added < 0) {
        /* Retried every heartbeat while Redis is away: said once, not once a second. */
        if (!self->warned)
            log_warn(NULL, "template catalog or default group not seeded yet", "{s:s, s:s}", "code",
                     fault.code, "reason", fault.message);
        self->warned = 1;
        return -1;
    }
    if (added > 0)
        log_info(NULL, "template catalog seeded", "{s:i}", "templates", added);
    self->seeded = 1;
    return 0;
}

const policy_t *approval_limits(approval_t *self)
{
    return &self->policy;
}

void approval_set_client(approval_t *self, bus_client_t *client)
{
    self->client = client;
}

bus_client_t *approval_client(approval_t *self)
{
    return self->client;
}

store_t *approval_store(approval_t *self)
{
    return self->store;
}

static const char *s_request_id(bus_request_t *request)
{
    const char *id = bus_request_envelope(request)->request_id;
    return id && *id ? id : NULL;
}

/* Answer a failure and log it once, at a level that says whose fault it was. */
void approval_fail(bus_request_t *request, const char *what, const fault_t *fault)
{
    int ours = streq(fault->code, "UNAVAILABLE") || streq(fault->code, "INTERNAL");
    log_emit(ours ? BERTH_LOG_WARN : BERTH_LOG_INFO, s_request_id(request), what, "{s:s, s:s}",
             "code", fault->code, "reason", fault->message);
    bus_reply_fault(request, fault);
}

/* Who the request acts for, checked against the handler table's rule for its type: the
   verified assertion (free with berth__user_assertion__free_unpacked), or NULL when the call
   is refused (answered here: UNAUTHENTICATED without a valid assertion, FORBIDDEN when the
   user's role may not do this). Nothing is written for a refused call. */
Berth__UserAssertion *approval_caller(approval_t *self, bus_request_t *request,
                                      const Berth__SignedAssertion *assertion)
{
    const char *type = bus_request_envelope(request)->type;
    const approval_handler_t *h = approval_handlers;
    while (h->type && !streq(h->type, type))
        h++;
    assert(h->type && h->who != APPROVAL_ANYONE); /* handlers ask only for their own type */
    fault_t fault = { 0 };
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, assertion, &who, &fault) != 0) {
        approval_fail(request, "call without a valid user assertion refused", &fault);
        return NULL;
    }
    if (h->who == APPROVAL_ADMIN && !assertion_has_role(who, "admin")) {
        error_set(&fault, "FORBIDDEN", "%s needs the admin role", type);
        log_info(s_request_id(request), "call refused: role", "{s:s, s:s}", "type", type, "user",
                 who->user);
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_fault(request, &fault);
        return NULL;
    }
    return who;
}

static void s_on_list_templates(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__ListTemplates *msg = bus_request_body(request, &berth__list_templates__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "ListTemplates body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    berth__user_assertion__free_unpacked(who, NULL); /* every user sees the whole catalog */
    /* A catalog not seeded yet (Redis was away at start) is seeded before it is shown. */
    approval_seed(self);
    fault_t fault = { 0 };
    Berth__TemplateList *list = NULL;
    if (catalog_list(self->store, &list, &fault) != 0) {
        approval_fail(request, "list templates refused", &fault);
        return;
    }
    bus_reply(request, &list->base);
    catalog_list_destroy(&list);
}

static void s_on_create_template(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__CreateTemplate *msg = bus_request_body(request, &berth__create_template__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "CreateTemplate body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    /* The actor is who asks: the body's actor field is not believed. */
    fault_t fault = { 0 };
    char id[UTIL_ID_LEN];
    if (catalog_create(self->store, &self->policy, msg->template_, who->user, id, &fault) != 0) {
        approval_fail(request, "create template refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    Berth__Template created = *msg->template_;
    created.id = id;
    log_info(s_request_id(request), "template created", "{s:s, s:s, s:s}", "template", id, "name",
             created.name, "actor", who->user);
    bus_reply(request, &created.base);
    berth__user_assertion__free_unpacked(who, NULL);
}

/* ---- instant deploy: a template's pool (pool.h) ---- */

static void s_on_set_template_pool(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__SetTemplatePool *msg = bus_request_body(request, &berth__set_template_pool__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "SetTemplatePool body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    fault_t fault = { 0 };
    Berth__TemplatePool *pool = NULL;
    if (pool_set(self->store, msg, who->user, s_request_id(request), &pool, &fault) != 0) {
        approval_fail(request, "set template pool refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    bus_reply(request, &pool->base);
    protobuf_c_message_free_unpacked(&pool->base, NULL);
    berth__user_assertion__free_unpacked(who, NULL);
}

static void s_on_get_template_pool(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__GetTemplatePool *msg = bus_request_body(request, &berth__get_template_pool__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "GetTemplatePool body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    fault_t fault = { 0 };
    Berth__TemplatePool *pool = NULL;
    /* What the pool holds (VMs without owner) is for admins and operators. */
    if (!assertion_has_role(who, "admin") && !assertion_has_role(who, "operator"))
        error_set(&fault, "FORBIDDEN",
                  "reading a template's pool needs the admin or operator role");
    if (*fault.code || pool_get(self->store, msg->template_, &pool, &fault) != 0) {
        approval_fail(request, "get template pool refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    bus_reply(request, &pool->base);
    protobuf_c_message_free_unpacked(&pool->base, NULL);
    berth__user_assertion__free_unpacked(who, NULL);
}

/* ---- networks (networks.h) ---- */

static void s_on_create_network(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__CreateNetwork *msg = bus_request_body(request, &berth__create_network__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "CreateNetwork body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    fault_t fault = { 0 };
    Berth__Network *net = NULL;
    if (networks_create(self->store, msg->network, who->user, &net, &fault) != 0) {
        approval_fail(request, "create network refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    log_info(s_request_id(request), "network created", "{s:s, s:s, s:s, s:s}", "network", net->id,
             "name", net->name, "cidr", net->cidr, "actor", who->user);
    bus_reply(request, &net->base);
    protobuf_c_message_free_unpacked(&net->base, NULL);
    berth__user_assertion__free_unpacked(who, NULL);
}

static void s_on_list_networks(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__ListNetworks *msg = bus_request_body(request, &berth__list_networks__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "ListNetworks body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    berth__user_assertion__free_unpacked(who, NULL); /* every user sees every network */
    fault_t fault = { 0 };
    Berth__NetworkList *list = NULL;
    if (networks_list(self->store, &list, &fault) != 0) {
        approval_fail(request, "list networks refused", &fault);
        return;
    }
    bus_reply(request, &list->base);
    networks_list_destroy(&list);
}

static void s_on_get_network(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__GetNetwork *msg = bus_request_body(request, &berth__get_network__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "GetNetwork body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    berth__user_assertion__free_unpacked(who, NULL);
    fault_t fault = { 0 };
    Berth__Network *net = NULL;
    if (networks_find(self->store, msg->id, &net, &fault) != 0) {
        approval_fail(request, "get network refused", &fault);
        return;
    }
    bus_reply(request, &net->base);
    protobuf_c_message_free_unpacked(&net->base, NULL);
}

static void s_on_delete_network(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__DeleteNetwork *msg = bus_request_body(request, &berth__delete_network__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "DeleteNetwork body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    fault_t fault = { 0 };
    Berth__Network *net = NULL;
    if (networks_delete(self->store, msg->id, who->user, &net, &fault) != 0) {
        approval_fail(request, "delete network refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    log_info(s_request_id(request), "network deleted", "{s:s, s:s, s:s}", "network", net->id,
             "name", net->name, "actor", who->user);
    bus_reply(request, &net->base);
    protobuf_c_message_free_unpacked(&net->base, NULL);
    berth__user_assertion__free_unpacked(who, NULL);
}

/* Does who hold a membership (any role) of group_id ("<id>:<role>" claims)? */
static int s_in_claims(const Berth__UserAssertion *who, const char *group_id)
{
    size_t len = strlen(group_id);
    for (size_t i = 0; i < who->n_groups; i++)
        if (strncmp(who->groups[i], group_id, len) == 0 && who->groups[i][len] == ':')
            return 1;
    return 0;
}

static void s_on_create_request(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__CreateRequest *msg = bus_request_body(request, &berth__create_request__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "CreateRequest body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    Berth__CreateRequest ask = *msg;
    ask.owner = who->user; /* the owner is who asks, whatever the body says */
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    char group_id[UTIL_ID_LEN];
    int rc = 0;
    if (who->scoped) {
        /* An API key limited to some groups makes requests in those only: the group the
           request would go to, resolved as requests_create does, must be one of them. */
        rc = requests_group(self->store, ask.group, who->user, 0, group_id, &fault);
        if (rc == 0 && !s_in_claims(who, group_id)) {
            rc = error_set(&fault, "NOT_FOUND",
                           "this API key may make requests only in its groups: name one of them");
            error_detail(&fault, "field", "group");
        }
        ask.group = group_id; /* the same group requests_create resolves again */
    }
    if (rc == 0 && builds_wanted(&ask)) {
        /* A custom build or a dry run: answered once the scheduler's verdict is in. */
        builds_begin(self, request, &ask, who->user, assertion_has_role(who, "admin"));
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    if (rc == 0)
        rc = requests_create(self->store, &self->policy, &ask, assertion_has_role(who, "admin"),
                             s_request_id(request), &req, &fault);
    berth__user_assertion__free_unpacked(who, NULL);
    if (rc != 0) {
        approval_fail(request, "create request refused", &fault);
        return;
    }
    log_info(s_request_id(request), "request accepted", "{s:s, s:s, s:s, s:i, s:s, s:s}", "request",
             req->id, "state", req->state, "template", req->template_, "count", req->count, "owner",
             req->owner, "group", req->group);
    bus_reply(request, &req->base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void s_on_get_request(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__GetRequest *msg = bus_request_body(request, &berth__get_request__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "GetRequest body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    if (requests_get(self->store, msg->id, &req, &fault) != 0) {
        approval_fail(request, "get request refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    /* One the user may not see is answered as one that does not exist: no id is confirmed. */
    if (!decide_sees(req, who)) {
        error_set(&fault, "NOT_FOUND", "unknown request '%s'", msg->id);
        log_info(s_request_id(request), "get request refused: not visible", "{s:s, s:s}", "request",
                 msg->id, "user", who->user);
        bus_reply_fault(request, &fault);
    } else
        bus_reply(request, &req->base);
    berth__user_assertion__free_unpacked(who, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void s_on_decide_request(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__DecideRequest *msg = bus_request_body(request, &berth__decide_request__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "DecideRequest body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    /* Decided by who asks, at the level the engine lets them (decide.h); never the
       requester. */
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    int rc =
        requests_decide(self->store, &self->policy, msg, who, s_request_id(request), &req, &fault);
    if (rc != 0) {
        approval_fail(request, "decision refused", &fault);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    log_info(s_request_id(request), "request decided", "{s:s, s:s, s:s}", "request", req->id,
             "state", req->state, "actor", who->user);
    berth__user_assertion__free_unpacked(who, NULL);
    bus_reply(request, &req->base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

const approval_handler_t approval_handlers[] = {
    { "ListTemplates", s_on_list_templates, APPROVAL_USER },
    { "CreateTemplate", s_on_create_template, APPROVAL_ADMIN },
    /* Instant deploy (pool.h): admins size a template's pool; admins and operators read it. */
    { "SetTemplatePool", s_on_set_template_pool, APPROVAL_ADMIN },
    { "GetTemplatePool", s_on_get_template_pool, APPROVAL_USER },
    { "CreateRequest", s_on_create_request, APPROVAL_USER },
    /* Reading a request: who may see it is decide_sees's to say (decide.h). */
    { "GetRequest", s_on_get_request, APPROVAL_USER },
    /* Approving or rejecting: the policy engine checks the caller's roles and group roles
       against the level the request waits for, and refuses the requester (decide.h). */
    { "DecideRequest", s_on_decide_request, APPROVAL_USER },
    /* Groups (groups.c): the handler checks a manager's rights itself (APPROVAL_USER). */
    { "CreateGroup", groups_on_create, APPROVAL_ADMIN },
    { "GetGroup", groups_on_get, APPROVAL_USER },
    { "GetCapacity", groups_on_capacity, APPROVAL_USER },
    { "ListGroups", groups_on_list, APPROVAL_USER },
    { "UpdateGroup", groups_on_update, APPROVAL_ADMIN },
    { "DeleteGroup", groups_on_delete, APPROVAL_ADMIN },
    { "AddMember", groups_on_add_member, APPROVAL_USER },
    { "SetRole", groups_on_set_role, APPROVAL_USER },
    { "RemoveMember", groups_on_remove_member, APPROVAL_USER },
    { "ListMembers", groups_on_list_members, APPROVAL_USER },
    /* Requests of other kinds (kinds.h): a new group (anyone may ask), more quota (the
       handler checks for a manager of the group or an admin). */
    { "CreateOnboarding", onboarding_on_create, APPROVAL_USER },
    { "CreateAllocation", allocations_on_create, APPROVAL_USER },
    { "CreateExtension", extensions_on_create, APPROVAL_USER },
    /* A group's reservations (groups_set_reservations) */
    { "SetReservations", groups_on_set_reservations, APPROVAL_ADMIN },
    /* webhook: a group's webhook (the handler checks for a manager of the group or an admin) */
    { "SetGroupWebhook", groups_on_set_webhook, APPROVAL_USER },
    /* Networks (networks.h): admins add and delete them; every user reads them. */
    { "CreateNetwork", s_on_create_network, APPROVAL_ADMIN },
    { "ListNetworks", s_on_list_networks, APPROVAL_USER },
    { "GetNetwork", s_on_get_network, APPROVAL_USER },
    { "DeleteNetwork", s_on_delete_network, APPROVAL_ADMIN },
    { NULL, NULL, APPROVAL_ANYONE },
};
