/*  catalog: what can be asked for and where it can run. Templates live in the approval
    service (asked over the bus); hosts are read straight from their Redis hashes, which the
    taskmgr (heartbeats) and the scheduler (claims) keep current. */
#include "gateway.h"

#include <stdlib.h>

void catalog_list_templates(http_req_t *req)
{
    Berth__ListTemplates ask = BERTH__LIST_TEMPLATES__INIT;
    Berth__TemplateList *list = NULL;
    if (rest_call(req, "approval", &ask.base, &berth__template_list__descriptor,
                  (ProtobufCMessage **)&list))
        return;
    json_t *templates = json_array();
    for (size_t i = 0; i < list->n_templates; i++)
        json_array_append_new(templates, view_template(list->templates[i]));
    protobuf_c_message_free_unpacked(&list->base, NULL);
    http_json(req, 200, json_pack("{s:o}", "templates", templates));
}

void catalog_create_template(http_req_t *req)
{
    /* No "id": the approval service assigns it. */
    static const char *const allowed[] = { "name", "vcpus", "ram_mb",     "disk_gb",
                                           "os",   "image", "lease_days", "requires_approval",
                                           NULL };
    const char *name, *os = NULL, *image;
    int64_t vcpus, ram_mb, disk_gb, lease_days;
    int requires_approval = 0;
    /* Types and the limits of lib/limit.h here; the approval service enforces the grammar
       of names and texts too (and names the field). */
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_TEMPLATE_NAME_MAX, &name) ||
        rest_int(req, "vcpus", 1, 1, LIMIT_VCPUS_MAX, &vcpus) ||
        rest_int(req, "ram_mb", 1, LIMIT_RAM_MB_MIN, LIMIT_RAM_MB_MAX, &ram_mb) ||
        rest_int(req, "disk_gb", 1, 1, LIMIT_DISK_GB_MAX, &disk_gb) ||
        rest_str(req, "os", 1, LIMIT_TEXT_MAX, &os) ||
        rest_str(req, "image", 1, LIMIT_TEXT_MAX, &image) ||
        rest_int(req, "lease_days", 1, 1, LIMIT_LEASE_DAYS_MAX, &lease_days) ||
        rest_bool(req, "requires_approval", 0, &requires_approval) < 0)
        return;
    /* The name becomes part of a Redis key (berth:template-name:<name>). */
    if (!rest_id_ok(name)) {
        http_error_details(req, "BAD_REQUEST", "name must be letters, digits, '-', '_' or '.'",
                           json_pack("{s:s}", "field", "name"));
        return;
    }
    Berth__Template t = BERTH__TEMPLATE__INIT;
    t.name = (char *)name;
    t.vcpus = (int32_t)vcpus;
    t.ram_mb = ram_mb;
    t.disk_gb = disk_gb;
    t.os = (char *)os;
    t.image = (char *)image;
    t.lease_days = (int32_t)lease_days;
    t.requires_approval = requires_approval;
    Berth__CreateTemplate ask = BERTH__CREATE_TEMPLATE__INIT;
    ask.template_ = &t;
    ask.actor = req->user;
    Berth__Template *created = NULL;
    if (rest_call(req, "approval", &ask.base, &berth__template__descriptor,
                  (ProtobufCMessage **)&created))
        return;
    log_info(req->request_id, "template created", "{s:s, s:s, s:s}", "template", created->id,
             "name", created->name, "by", req->user);
    http_json(req, 201, json_pack("{s:o}", "template", view_template(created)));
    protobuf_c_message_free_unpacked(&created->base, NULL);
}

/* ---- hosts ---- */

/* Every host's hash in one step, sorted by id so a listing reads the same every time.
   KEYS: the hosts set. Hosts in the set but not (or no longer) described are left out. */
static store_script_t s_all_hosts = {
    .source = "local ids = redis.call('SMEMBERS', KEYS[1])\n"
              "table.sort(ids)\n"
              "local out = {}\n"
              "for _, id in ipairs(ids) do\n"
              "  local h = redis.call('HGETALL', 'berth:host:' .. id)\n"
              "  if #h > 0 then out[#out + 1] = h end\n"
              "end\n"
              "return out\n",
};

/* HGETALL of one host: the reply (caller frees), NULL with the error response set when Redis
   failed. An empty array means the host is unknown. */
static redisReply *s_host_hash(http_req_t *req, const char *id)
{
    redisReply *r = store_command(req->store, "HGETALL berth:host:%s", id);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    return r;
}

void catalog_list_hosts(http_req_t *req)
{
    gateway_t *gw = req->app;
    const char *argv[] = { "berth:hosts" };
    redisReply *all = store_eval(req->store, &s_all_hosts, 1, 1, argv);
    if (!all || all->type != REDIS_REPLY_ARRAY) {
        if (all)
            freeReplyObject(all);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *hosts = json_array();
    int64_t now = util_now_ms();
    for (size_t i = 0; i < all->elements; i++)
        if (all->element[i]->type == REDIS_REPLY_ARRAY)
            json_array_append_new(hosts, view_host(all->element[i], now, gw->host_down_ms, 0));
    freeReplyObject(all);
    http_json(req, 200, json_pack("{s:o}", "hosts", hosts));
}

void catalog_get_host(http_req_t *req)
{
    gateway_t *gw = req->app;
    const char *id = req->params[0];
    if (!rest_id_ok(id)) {
        http_error(req, "NOT_FOUND", "no such host");
        return;
    }
    redisReply *hash = s_host_hash(req, id);
    if (!hash)
        return;
    if (hash->elements == 0)
        http_error(req, "NOT_FOUND", "no such host");
    else
        http_json(req, 200,
                  json_pack("{s:o}", "host", view_host(hash, util_now_ms(), gw->host_down_ms, 1)));
    freeReplyObject(hash);
}
