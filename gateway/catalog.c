/*  catalog: what can be asked for and where it can run. Templates are written only by the
    approval service and read here from their documented keys (docs/state.md: one Redis round
    trip, no bus call); hosts are read straight from their Redis hashes, which the taskmgr
    (heartbeats) and the scheduler (claims) keep current. */
#include "gateway.h"
#include "keys.h"
#include "lua_scripts.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static void s_templates_listed(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__TemplateList *list = (const Berth__TemplateList *)answer;
    json_t *templates = json_array();
    for (size_t i = 0; i < list->n_templates; i++)
        json_array_append_new(templates, view_template(list->templates[i]));
    http_json(req, 200, json_pack("{s:o}", "templates", templates));
}

/* The catalog as approval answers it: approval seeds an empty catalog before listing it. */
static void s_templates_from_approval(http_req_t *req)
{
    Berth__ListTemplates ask = BERTH__LIST_TEMPLATES__INIT;
    rest_call(req, "approval", &ask.base, &berth__template_list__descriptor, s_templates_listed);
}

static int s_by_name(const void *a, const void *b)
{
    const Berth__Template *x = *(Berth__Template *const *)a, *y = *(Berth__Template *const *)b;
    return strcmp(x->name ? x->name : "", y->name ? y->name : "");
}

/*  Templates in one Redis round trip (lib/lua/catalog_templates.lua). The script gets the index and
   every template hash in KEYS (as the key schema wants) and the ids they stand for in ARGV; it
   answers the hashes only when the index still lists exactly those ids, and 0 when it changed. Each
   worker thread keeps the ids it last read, so a listing costs one round trip while the catalog is
    unchanged and two right after a change, and is never stale. */

/* Template ids this worker thread last read from the index (freed when the thread ends). */
typedef struct {
    char **ids;
    size_t n;
} s_ids_t;

static pthread_key_t s_ids_key;
static pthread_once_t s_ids_once = PTHREAD_ONCE_INIT;

static void s_ids_clear(s_ids_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->ids[i]);
    free(c->ids);
    c->ids = NULL;
    c->n = 0;
}

static void s_ids_free(void *arg)
{
    s_ids_clear(arg);
    free(arg);
}

static void s_ids_key_init(void)
{
    pthread_key_create(&s_ids_key, s_ids_free);
}

/* This thread's ids; NULL when out of memory. */
static s_ids_t *s_ids(void)
{
    pthread_once(&s_ids_once, s_ids_key_init);
    s_ids_t *c = pthread_getspecific(s_ids_key);
    if (!c && (c = calloc(1, sizeof *c)) && pthread_setspecific(s_ids_key, c) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

/* Read the index into the thread's ids. 0, or -1 with 503 (or 500) set. */
static int s_ids_read(http_req_t *req, s_ids_t *c)
{
    s_ids_clear(c);
    redisReply *r = store_command(req->store, "ZRANGE berth:templates 0 -1");
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    c->ids = calloc(r->elements ? r->elements : 1, sizeof *c->ids);
    for (size_t i = 0; c->ids && i < r->elements; i++) {
        const redisReply *id = r->element[i];
        if (!(c->ids[c->n] = strdup(id->type == REDIS_REPLY_STRING ? id->str : "")))
            break;
        c->n++;
    }
    int complete = c->ids && c->n == r->elements;
    freeReplyObject(r);
    if (!complete) {
        s_ids_clear(c);
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    return 0;
}

/* The template hashes of the thread's ids: 1 and *hashes_p (caller frees), 0 when the index
   no longer lists those ids, -1 with 503 set. */
static int s_template_hashes(http_req_t *req, const s_ids_t *c, redisReply **hashes_p)
{
    size_t n = c->n;
    char(*keys)[KEYS_MAX] = calloc(n ? n : 1, sizeof *keys);
    const char **argv = calloc(1 + 2 * n, sizeof *argv);
    redisReply *r = NULL;
    if (keys && argv) {
        argv[0] = KEYS_TEMPLATES;
        for (size_t i = 0; i < n; i++) {
            argv[1 + i] = keys_build(keys[i], KEYS_TEMPLATE, c->ids[i], NULL);
            argv[1 + n + i] = c->ids[i];
        }
        r = store_run(req->store, &lua_catalog_templates, 1 + (int)n, 1 + 2 * (int)n, argv);
    }
    free(argv);
    free(keys);
    if (r && r->type == REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return 0;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    *hashes_p = r;
    return 1;
}

/* ?group=G: the names of the templates G offers (a JSON array; empty: every template) into
   *offered, when the caller may read G. 0, or -1 with the answer sent (404 for a group one
   may not read, as for none). */
static int s_offered(http_req_t *req, const char *ref, json_t **offered)
{
    char id[UTIL_ID_LEN], key[KEYS_MAX];
    if (groups_resolve(req, ref, id) != 0)
        return -1;
    if (!perm_allows(req, "group.get", NULL, id)) {
        http_error(req, "NOT_FOUND", "no such group");
        return -1;
    }
    redisReply *r =
        store_command(req->store, "HGET %s templates", keys_build(key, KEYS_GROUP, id, NULL));
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    *offered = r->type == REDIS_REPLY_STRING ? json_loads(r->str, 0, NULL) : NULL;
    freeReplyObject(r);
    if (*offered && !json_is_array(*offered)) {
        json_decref(*offered);
        *offered = NULL;
    }
    if (!*offered)
        *offered = json_array();
    return 0;
}

/* Is the template named name among offered (an array of names; empty: every template)? */
static int s_is_offered(const json_t *offered, const char *name)
{
    if (!offered || json_array_size(offered) == 0)
        return 1;
    size_t i;
    json_t *v;
    json_array_foreach(offered, i, v)
    {
        if (json_is_string(v) && streq(json_string_value(v), name))
            return 1;
    }
    return 0;
}

/* ---- the rendered catalog, shared by the worker threads ----
   The catalog is read far more often than it changes, so each template's view is rendered to
   JSON text once and kept with the generation it was read at: while the generation is the
   same and the copy is younger than catalog_cache_ms, a listing costs no Redis round trip and
   no rendering. catalog_forget bumps the generation: the event reader on every template.*
   event (another gateway instance's or a migration's change shows once its event is read),
   the create handler here on its own change; catalog_cache_ms bounds anything missed. The
   generation is read before Redis, so a change landing during a read leaves that copy stale
   at once. */

typedef struct {
    size_t n;
    char **names;        /* template names, sorted */
    char **views;        /* each one's view (view_template) as compact JSON */
    unsigned generation; /* s_generation before the read */
    int64_t read_ms;     /* monotonic */
} s_rendered_t;

static pthread_mutex_t s_rendered_mutex = PTHREAD_MUTEX_INITIALIZER;
static s_rendered_t *s_rendered; /* the copy kept (NULL: none) */
static atomic_uint s_generation;

void catalog_forget(void)
{
    atomic_fetch_add(&s_generation, 1);
}

static void s_rendered_destroy(s_rendered_t **self_p)
{
    s_rendered_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->n; i++) {
        free(self->names[i]);
        free(self->views[i]);
    }
    free(self->names);
    free(self->views);
    free(self);
    *self_p = NULL;
}

/* {"templates":[...]} of the views offered (every one when offered is NULL or empty), as a
   string of *len bytes (the caller frees); NULL when out of memory. */
static char *s_body(const s_rendered_t *r, const json_t *offered, size_t *len)
{
    static const char head[] = "{\"templates\":[", tail[] = "]}";
    size_t size = sizeof head + sizeof tail;
    for (size_t i = 0; i < r->n; i++)
        size += strlen(r->views[i]) + 1;
    char *body = malloc(size), *p = body;
    if (!body)
        return NULL;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    int first = 1;
    for (size_t i = 0; i < r->n; i++) {
        if (!s_is_offered(offered, r->names[i]))
            continue;
        if (!first)
            *p++ = ',';
        first = 0;
        size_t n = strlen(r->views[i]);
        memcpy(p, r->views[i], n);
        p += n;
    }
    memcpy(p, tail, sizeof tail);
    *len = (size_t)(p - body) + sizeof tail - 1;
    return body;
}

/* Read and render the catalog: 1 and *out, 0 when it is empty (approval has not seeded it
   yet), -1 with the response set. */
static int s_read(http_req_t *req, s_rendered_t **out)
{
    unsigned generation = atomic_load(&s_generation);
    s_ids_t *ids = s_ids();
    if (!ids) {
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    redisReply *hashes = NULL;
    int rc = 0;
    /* The index may change between our read and the script: a few tries, then give up. */
    for (int attempt = 0; attempt < 3 && rc == 0; attempt++)
        if ((rc = s_template_hashes(req, ids, &hashes)) == 0 && s_ids_read(req, ids) != 0)
            return -1;
    if (rc <= 0) {
        if (rc == 0)
            http_error(req, "UNAVAILABLE", "the template catalog kept changing; try again");
        return -1;
    }
    size_t n = hashes->elements, count = 0;
    if (n == 0) {
        freeReplyObject(hashes);
        return 0;
    }
    Berth__Template **list = calloc(n, sizeof *list);
    s_rendered_t *r = calloc(1, sizeof *r);
    if (r) {
        r->names = calloc(n, sizeof *r->names);
        r->views = calloc(n, sizeof *r->views);
        r->generation = generation;
        r->read_ms = util_mono_ms();
    }
    int ok = list && r && r->names && r->views;
    for (size_t i = 0; ok && i < n; i++) {
        const redisReply *h = hashes->element[i];
        if (h->type == REDIS_REPLY_ARRAY && h->elements > 0 &&
            (list[count] = (Berth__Template *)model_from_hash(&berth__template__descriptor, h)))
            count++;
    }
    freeReplyObject(hashes);
    if (ok)
        qsort(list, count, sizeof *list, s_by_name);
    for (size_t i = 0; i < count; i++) {
        if (ok) {
            json_t *view = view_template(list[i]);
            r->names[i] = strdup(list[i]->name ? list[i]->name : "");
            r->views[i] = view ? json_dumps(view, JSON_COMPACT) : NULL;
            json_decref(view);
            r->n = i + 1;
            ok = r->names[i] && r->views[i];
        }
        protobuf_c_message_free_unpacked(&list[i]->base, NULL);
    }
    free(list);
    if (!ok) {
        s_rendered_destroy(&r);
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    *out = r;
    return 1;
}

/* Every template, by name, as approval lists them (only those group G offers with ?group=G).
   A catalog still empty (approval has not seeded it yet) is asked of approval, which seeds it
   first. */
void catalog_list_templates(http_req_t *req)
{
    gateway_t *gw = req->app;
    const char *group = http_query(req, "group");
    json_t *offered = NULL;
    if (group && s_offered(req, group, &offered) != 0)
        return;
    size_t len = 0;
    char *body = NULL;
    pthread_mutex_lock(&s_rendered_mutex);
    if (s_rendered && s_rendered->generation == atomic_load(&s_generation) &&
        util_mono_ms() - s_rendered->read_ms < gw->catalog_cache_ms)
        body = s_body(s_rendered, offered, &len);
    pthread_mutex_unlock(&s_rendered_mutex);
    if (!body) {
        s_rendered_t *fresh = NULL;
        int rc = s_read(req, &fresh);
        if (rc == 0)
            s_templates_from_approval(req);
        if (rc <= 0) {
            json_decref(offered);
            return;
        }
        body = s_body(fresh, offered, &len);
        if (gw->catalog_cache_ms > 0) {
            pthread_mutex_lock(&s_rendered_mutex);
            s_rendered_destroy(&s_rendered);
            s_rendered = fresh;
            fresh = NULL;
            pthread_mutex_unlock(&s_rendered_mutex);
        }
        s_rendered_destroy(&fresh);
    }
    json_decref(offered);
    if (!body) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    http_json_text(req, body, len);
    free(body);
}

static void s_template_created(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Template *created = (const Berth__Template *)answer;
    catalog_forget();
    log_info(req->request_id, "template created", "{s:s, s:s, s:s}", "template", created->id,
             "name", created->name, "by", req->user);
    http_json(req, 201, json_pack("{s:o}", "template", view_template(created)));
}

void catalog_create_template(http_req_t *req)
{
    /* No "id": the approval service assigns it. */
    static const char *const allowed[] = { "name",
                                           "vcpus",
                                           "ram_mb",
                                           "disk_gb",
                                           "os",
                                           "image",
                                           "lease_days",
                                           "requires_approval",
                                           "approval_policy",
                                           "max_lease_days",
                                           "lease_notice_hours",
                                           "rebuild_on_loss",
                                           "network",
                                           "networks",
                                           "disk",
                                           "hypervisor",
                                           NULL };
    const char *name, *os = NULL, *image, *approval_policy = NULL, *network = NULL;
    const char *disk = NULL, *hypervisor = NULL;
    int64_t vcpus, ram_mb, disk_gb, lease_days, max_lease_days = 0, notice_hours = 0;
    int requires_approval = 0, rebuild = 0;
    /* Types and the limits of lib/limit.h here; the approval service enforces the grammar
       of names and texts too (and names the field). */
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_TEMPLATE_NAME_MAX, &name) ||
        rest_int(req, "vcpus", 1, 1, LIMIT_VCPUS_MAX, &vcpus) ||
        rest_int(req, "ram_mb", 1, LIMIT_RAM_MB_MIN, LIMIT_RAM_MB_MAX, &ram_mb) ||
        rest_int(req, "disk_gb", 1, 1, LIMIT_DISK_GB_MAX, &disk_gb) ||
        rest_str(req, "os", 1, LIMIT_TEXT_MAX, &os) ||
        rest_str(req, "image", 1, LIMIT_TEXT_MAX, &image) ||
        rest_int(req, "lease_days", 1, 1, LIMIT_LEASE_DAYS_MAX, &lease_days) ||
        rest_bool(req, "requires_approval", 0, &requires_approval) < 0 ||
        rest_str(req, "approval_policy", 0, 32, &approval_policy) < 0 ||
        rest_int(req, "max_lease_days", 0, 0, 36500, &max_lease_days) < 0 ||
        rest_int(req, "lease_notice_hours", 0, 0, 36500 * 24, &notice_hours) < 0 ||
        rest_bool(req, "rebuild_on_loss", 0, &rebuild) < 0 ||
        rest_str(req, "network", 0, LIMIT_NETWORK_NAME_MAX, &network) < 0 ||
        rest_str(req, "disk", 0, 16, &disk) < 0 ||
        rest_str(req, "hypervisor", 0, 15, &hypervisor) < 0)
        return;
    char *networks[LIMIT_VM_NETWORKS_MAX];
    size_t n_networks = 0;
    if (networks_string_array(req, "networks", LIMIT_VM_NETWORKS_MAX, LIMIT_NETWORK_NAME_MAX,
                              networks, &n_networks))
        return;
    /* The name becomes part of a Redis key (berth:template-name:<name>). */
    if (!rest_id_ok(name)) {
        http_bad_field(req, "name", "name must be letters, digits, '-', '_' or '.'");
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
    t.approval_policy = (char *)(approval_policy ? approval_policy : ""); /* approval checks */
    t.max_lease_days = (int32_t)max_lease_days;
    t.lease_notice_ms = notice_hours * 3600000;
    t.rebuild_on_loss = rebuild;
    t.network = (char *)(network ? network : ""); /* approval checks it exists */
    t.networks = networks;                        /* and each of these */
    t.n_networks = n_networks;
    t.disk = (char *)(disk ? disk : "");                   /* approval checks */
    t.hypervisor = (char *)(hypervisor ? hypervisor : ""); /* approval checks its grammar */
    Berth__CreateTemplate ask = BERTH__CREATE_TEMPLATE__INIT;
    ask.template_ = &t;
    ask.actor = req->user;
    rest_call(req, "approval", &ask.base, &berth__template__descriptor, s_template_created);
}

/* ---- instant deploy: a template's pool ---- */

static void s_pool_answer(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__TemplatePool *p = (const Berth__TemplatePool *)answer;
    json_t *vms = json_array();
    for (size_t i = 0; vms && i < p->n_vms; i++)
        json_array_append_new(vms, json_string(p->vms[i]));
    if (streq(req->method, "PUT")) {
        catalog_forget(); /* the catalog shows pool_size */
        log_info(req->request_id, "template pool set", "{s:s, s:i, s:s}", "template", p->template_,
                 "size", p->size, "by", req->user);
    }
    http_json(req, 200,
              json_pack("{s:{s:s, s:s, s:i, s:i, s:i, s:o}}", "pool", "template", p->template_,
                        "name", p->name, "size", p->size, "ready", p->ready, "building",
                        p->building, "vms", vms ? vms : json_array()));
}

/* The template a path names (its id or its name): 0, or -1 answered. */
static int s_template_ref(http_req_t *req, const char **ref)
{
    *ref = req->params[0];
    if (!rest_id_ok(*ref) || strlen(*ref) > LIMIT_TEMPLATE_REF_MAX) {
        http_error(req, "NOT_FOUND", "unknown template");
        return -1;
    }
    return 0;
}

void catalog_set_pool(http_req_t *req)
{
    static const char *const allowed[] = { "size", NULL };
    const char *ref = NULL;
    int64_t size = 0;
    if (s_template_ref(req, &ref) || rest_body(req, allowed) ||
        rest_int(req, "size", 1, 0, LIMIT_POOL_SIZE_MAX, &size))
        return;
    Berth__SetTemplatePool ask = BERTH__SET_TEMPLATE_POOL__INIT;
    ask.template_ = (char *)ref;
    ask.size = (int32_t)size;
    rest_call(req, "approval", &ask.base, &berth__template_pool__descriptor, s_pool_answer);
}

void catalog_get_pool(http_req_t *req)
{
    const char *ref = NULL;
    if (s_template_ref(req, &ref))
        return;
    Berth__GetTemplatePool ask = BERTH__GET_TEMPLATE_POOL__INIT;
    ask.template_ = (char *)ref;
    rest_call(req, "approval", &ask.base, &berth__template_pool__descriptor, s_pool_answer);
}

/* ---- hosts ---- */

/* HGETALL of one host: the reply (caller frees), NULL with the error response set when Redis
   failed. An empty array means the host is unknown. */
static redisReply *s_host_hash(http_req_t *req, const char *id)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(req->store, "HGETALL %s", keys_host(key, id));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    return r;
}

static int s_by_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every host's hash, sorted by id so a listing reads the same every time: the ids, then
   one script for all the hashes (two round trips however many hosts). Hosts in the set but
   not (or no longer) described are left out. */
void catalog_list_hosts(http_req_t *req)
{
    gateway_t *gw = req->app;
    redisReply *ids = store_command(req->store, "SMEMBERS %s", KEYS_HOSTS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    size_t n = 0;
    const char **sorted = calloc(ids->elements + 1, sizeof *sorted);
    char(*keys)[KEYS_MAX] = calloc(ids->elements + 1, sizeof *keys);
    const char **argv = calloc(ids->elements + 1, sizeof *argv);
    redisReply *all = NULL;
    if (sorted && keys && argv) {
        for (size_t i = 0; i < ids->elements; i++)
            if (ids->element[i]->type == REDIS_REPLY_STRING)
                sorted[n++] = ids->element[i]->str;
        qsort(sorted, n, sizeof *sorted, s_by_id);
        for (size_t i = 0; i < n; i++)
            argv[i] = keys_host(keys[i], sorted[i]);
        all = store_run(req->store, &lua_hash_rows, (int)n, (int)n, argv);
    }
    free(sorted);
    free(keys);
    free(argv);
    freeReplyObject(ids);
    if (!all || all->type != REDIS_REPLY_ARRAY) {
        if (all)
            freeReplyObject(all);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *hosts = json_array();
    int64_t now = util_now_ms();
    for (size_t i = 0; i < all->elements; i++)
        if (all->element[i]->type == REDIS_REPLY_ARRAY && all->element[i]->elements > 0)
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

/* ---- maintenance (reconcile) ------------------------------------------------------------ */

/* taskmgr switched it: answer with the host as it now stands. */
static void s_maintenance_set(http_req_t *req, ProtobufCMessage *answer)
{
    gateway_t *gw = req->app;
    const Berth__Host *set = (const Berth__Host *)answer;
    log_info(req->request_id, "host maintenance set", "{s:s, s:b, s:s, s:s}", "host",
             req->params[0], "enabled", set->maintenance, "state", set->state, "by", req->user);
    redisReply *hash = s_host_hash(req, req->params[0]);
    if (!hash)
        return;
    if (hash->elements == 0)
        http_error(req, "NOT_FOUND", "no such host");
    else
        http_json(req, 200,
                  json_pack("{s:o}", "host", view_host(hash, util_now_ms(), gw->host_down_ms, 1)));
    freeReplyObject(hash);
}

void catalog_host_maintenance(http_req_t *req)
{
    static const char *const allowed[] = { "enabled", NULL };
    const char *id = req->params[0];
    int enabled = 0;
    if (!rest_id_ok(id)) {
        http_error(req, "NOT_FOUND", "no such host");
        return;
    }
    if (rest_body(req, allowed) || rest_bool(req, "enabled", 1, &enabled))
        return;
    /* taskmgr owns host state: it checks the operator's signed claims again and moves the
       host UP <-> DISABLED in one step with the flag. */
    Berth__SetHostMaintenance ask = BERTH__SET_HOST_MAINTENANCE__INIT;
    ask.host = (char *)id;
    ask.enabled = enabled;
    ask.request_id = (char *)req->request_id;
    rest_call(req, "taskmgr", &ask.base, &berth__host__descriptor, s_maintenance_set);
}
