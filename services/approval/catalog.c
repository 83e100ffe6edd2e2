/*  catalog: templates in Redis. A template is the hash berth:template:<id>; the zset
    berth:templates lists the ids and the hash berth:template-name:<name> (field id) maps a
    name to its id. The name index is a hash rather than a plain string so that the
    transaction that adds a template can check "this name is free" with model_tx_check in
    the same atomic step as the writes: two approval instances seeding at once, or two
    admins adding the same name at once, end with exactly one template per name. */
#include "catalog.h"
#include "clock.h"
#include "decide.h"
#include "keys.h"
#include "log.h"
#include "model.h"
#include "networks.h"
#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define S_TEMPLATES KEYS_TEMPLATES

/* The catalog a fresh installation starts with: one template per common size, the
   largest behind an administrator's approval. */
typedef struct {
    const char *name;
    int vcpus;
    int64_t ram_mb;
    int64_t disk_gb;
    const char *os;
    const char *image;
    int lease_days;
    int requires_approval;
} s_seed_t;

static const s_seed_t s_seeds[] = {
    { "small", 1, 1024, 10, "debian", "debian-12", 7, 0 },
    { "medium", 2, 4096, 40, "debian", "debian-12", 14, 0 },
    { "large", 8, 16384, 100, "ubuntu", "ubuntu-24.04", 30, 1 },
};

static void s_name_key(char *buf, size_t size, const char *name)
{
    char key[KEYS_MAX];
    util_strlcpy(buf, keys_build(key, KEYS_TEMPLATE_NAME, name, NULL), size);
}

/* Add tmpl (id already set) to tx: the name must be free and the id unused when the
   transaction runs, whatever a pre-check saw earlier. */
static void s_tx_add(model_tx_t *tx, const Berth__Template *tmpl, const char *actor)
{
    char key[KEYS_MAX], name_key[KEYS_MAX], at[24];
    keys_build(key, KEYS_TEMPLATE, tmpl->id, NULL);
    s_name_key(name_key, sizeof name_key, tmpl->name);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    model_tx_check(tx, name_key, "id", "");
    model_tx_check(tx, key, "id", "");
    model_tx_put(tx, key, &tmpl->base);
    model_tx_hset(tx, name_key, "id", tmpl->id);
    model_tx_zadd(tx, S_TEMPLATES, 0, tmpl->id);
    model_tx_event(tx, "template.created", "key", key, "template", tmpl->id, "name", tmpl->name,
                   "actor", actor, "at_ms", at, NULL);
}

/* Number of templates in the catalog, or -1. */
static long long s_count(store_t *store)
{
    redisReply *r = store_command(store, "ZCARD %s", S_TEMPLATES);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

int catalog_seed(store_t *store, fault_t *fault)
{
    long long existing = s_count(store);
    if (existing < 0)
        return fault_store(fault, store);
    if (existing > 0)
        return 0;
    size_t n = sizeof s_seeds / sizeof s_seeds[0];
    char ids[sizeof s_seeds / sizeof s_seeds[0]][UTIL_ID_LEN];
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(fault, "INTERNAL", "out of memory");
    for (size_t i = 0; i < n; i++) {
        const s_seed_t *s = &s_seeds[i];
        Berth__Template t = BERTH__TEMPLATE__INIT;
        util_uuid(ids[i]);
        t.id = ids[i];
        t.name = (char *)s->name;
        t.vcpus = s->vcpus;
        t.ram_mb = s->ram_mb;
        t.disk_gb = s->disk_gb;
        t.os = (char *)s->os;
        t.image = (char *)s->image;
        t.lease_days = s->lease_days;
        t.requires_approval = s->requires_approval;
        s_tx_add(tx, &t, "system");
    }
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT) {
        /* Another instance seeded between our count and our commit: its catalog stands. */
        log_debug(NULL, "template catalog seeded by another instance", NULL);
        return 0;
    }
    if (rc != 0)
        return fault_store(fault, store);
    return (int)n;
}

static int s_by_name(const void *a, const void *b)
{
    const Berth__Template *x = *(Berth__Template *const *)a, *y = *(Berth__Template *const *)b;
    return strcmp(x->name, y->name);
}

void catalog_list_destroy(Berth__TemplateList **list_p)
{
    if (list_p && *list_p) {
        Berth__TemplateList *list = *list_p;
        for (size_t i = 0; i < list->n_templates; i++)
            protobuf_c_message_free_unpacked(&list->templates[i]->base, NULL);
        free(list->templates);
        free(list);
        *list_p = NULL;
    }
}

int catalog_list(store_t *store, Berth__TemplateList **list_p, fault_t *fault)
{
    redisReply *ids = store_command(store, "ZRANGE %s 0 -1", S_TEMPLATES);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return fault_store(fault, store);
    }
    Berth__TemplateList *list = malloc(sizeof *list);
    if (list) {
        berth__template_list__init(list);
        list->templates = calloc(ids->elements ? ids->elements : 1, sizeof *list->templates);
    }
    if (!list || !list->templates) {
        free(list);
        freeReplyObject(ids);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    int rc = 0;
    for (size_t i = 0; i < ids->elements && rc == 0; i++) {
        const redisReply *id = ids->element[i];
        if (id->type != REDIS_REPLY_STRING)
            continue;
        char key[KEYS_MAX];
        ProtobufCMessage *msg = NULL;
        int found = model_load(store, &berth__template__descriptor,
                               keys_build(key, KEYS_TEMPLATE, id->str, NULL), &msg);
        if (found == 0)
            list->templates[list->n_templates++] = (Berth__Template *)msg;
        else if (found == MODEL_NOT_FOUND)
            log_debug(NULL, "template listed but missing", "{s:s}", "template", id->str);
        else
            rc = fault_store(fault, store);
    }
    freeReplyObject(ids);
    if (rc != 0) {
        catalog_list_destroy(&list);
        return -1;
    }
    qsort(list->templates, list->n_templates, sizeof *list->templates, s_by_name);
    *list_p = list;
    return 0;
}

/* The template's image is in the stager's store and usable (IMPORTING or READY): else
   BAD_REQUEST naming image. */
static int s_image_ok(store_t *store, const char *image, fault_t *fault)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(store, "HGET %s state", keys_build(key, KEYS_IMAGE, image, NULL));
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    int rc = 0;
    if (r->type != REDIS_REPLY_STRING)
        rc = error_field(fault, "image", "there is no image '%s' (GET /v1/images lists them)",
                         image);
    else if (strcmp(r->str, "READY") != 0 && strcmp(r->str, "IMPORTING") != 0)
        rc = error_field(fault, "image", "image '%s' is %s: it cannot be used", image, r->str);
    freeReplyObject(r);
    return rc;
}

/* The template's size fits at least one host the platform knows (its capacity times the
   overcommit ratios), else BAD_REQUEST naming the first resource no host has enough of, with
   the most any host offers. Before the first host reports there is nothing to check against:
   the size is then accepted. */
static int s_fits_a_host(store_t *store, const policy_t *policy, const Berth__Template *t,
                         fault_t *fault)
{
    redisReply *ids = store_command(store, "SMEMBERS %s", KEYS_HOSTS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return fault_store(fault, store);
    }
    static const char *const fields[3] = { "vcpus", "ram_mb", "disk_gb" };
    const double ratio[3] = { policy->cpu_ratio, policy->ram_ratio, policy->disk_ratio };
    const int64_t want[3] = { t->vcpus, t->ram_mb, t->disk_gb };
    int64_t most[3] = { 0, 0, 0 };
    int known = 0, fits = 0, rc = 0;
    for (size_t i = 0; rc == 0 && !fits && i < ids->elements; i++) {
        char key[KEYS_MAX];
        if (ids->element[i]->type != REDIS_REPLY_STRING)
            continue;
        redisReply *h = store_command(store, "HMGET %s cap_vcpus cap_ram_mb cap_disk_gb",
                                      keys_host(key, ids->element[i]->str));
        if (!h || h->type != REDIS_REPLY_ARRAY || h->elements != 3) {
            if (h)
                freeReplyObject(h);
            rc = fault_store(fault, store);
            break;
        }
        int ok = 1, reported = 1;
        for (int d = 0; d < 3; d++) {
            int64_t cap = 0;
            if (h->element[d]->type != REDIS_REPLY_STRING ||
                util_parse_int(h->element[d]->str, 0, INT64_MAX / 2, &cap) != 0) {
                reported = 0;
                break;
            }
            int64_t usable = (int64_t)((double)cap * ratio[d]);
            if (usable > most[d])
                most[d] = usable;
            ok = ok && want[d] <= usable;
        }
        freeReplyObject(h);
        known |= reported;
        fits = reported && ok;
    }
    freeReplyObject(ids);
    if (rc != 0 || fits || !known)
        return rc;
    for (int d = 0; d < 3; d++)
        if (want[d] > most[d]) {
            error_field(fault, fields[d],
                        "%s %lld is more than any host could hold: at most %lld (capacity "
                        "times the overcommit ratio)",
                        fields[d], (long long)want[d], (long long)most[d]);
            return error_detail(fault, "max", "%lld", (long long)most[d]);
        }
    /* Each resource fits some host, but no host all three. */
    return error_field(fault, "vcpus", "no single host holds %d vCPUs, %lld MB and %lld GB",
                       t->vcpus, (long long)t->ram_mb, (long long)t->disk_gb);
}

int catalog_create(store_t *store, const policy_t *policy, const Berth__Template *tmpl,
                   const char *actor, char *id_out, fault_t *fault)
{
    if (policy_check_template(policy, tmpl, fault) != 0 ||
        decide_check_policy("approval_policy", tmpl->approval_policy, fault) != 0 ||
        policy_check_owner("actor", actor, fault) != 0 ||
        s_image_ok(store, tmpl->image, fault) != 0 ||
        s_fits_a_host(store, policy, tmpl, fault) != 0)
        return -1;
    /* The cap is checked before the transaction: concurrent adds may pass it together by
       a few, which is fine for a limit that only bounds the size of a listing. */
    /* Its networks: network is the first of networks (either may be given alone). */
    char *one[1] = { tmpl->network };
    char **nets = tmpl->n_networks ? tmpl->networks : one;
    size_t n_nets = tmpl->n_networks ? tmpl->n_networks : tmpl->network && *tmpl->network;
    for (size_t i = 0; i < n_nets; i++) {
        Berth__Network *net = NULL;
        if (networks_find(store, nets[i], &net, fault) != 0) {
            if (strcmp(fault->code, "NOT_FOUND") == 0) {
                char field[32];
                snprintf(field, sizeof field, tmpl->n_networks ? "networks[%zu]" : "network", i);
                error_field(fault, field, "network '%.64s' does not exist", nets[i]);
            }
            return -1;
        }
        protobuf_c_message_free_unpacked(&net->base, NULL);
    }
    long long existing = s_count(store);
    if (existing < 0)
        return fault_store(fault, store);
    if (existing >= policy->max_templates)
        return error_set(fault, "CONFLICT", "the template catalog is full (%d templates)",
                         policy->max_templates);
    char id[UTIL_ID_LEN];
    util_uuid(id);
    Berth__Template t = *tmpl;
    t.id = id;
    t.network = n_nets ? nets[0] : "";
    t.networks = nets;
    t.n_networks = n_nets;
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(fault, "INTERNAL", "out of memory");
    s_tx_add(tx, &t, actor);
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT)
        return error_set(fault, "CONFLICT", "template '%s' already exists", tmpl->name);
    if (rc != 0)
        return fault_store(fault, store);
    memcpy(id_out, id, UTIL_ID_LEN);
    return 0;
}

/* NOT_FOUND naming the request's field: the template it names is not in the catalog. */
static int s_unknown(fault_t *fault, const char *ref)
{
    error_set(fault, "NOT_FOUND", "unknown template '%.64s'", ref);
    return error_detail(fault, "field", "template");
}

int catalog_find(store_t *store, const char *ref, Berth__Template **tmpl_p, fault_t *fault)
{
    if (policy_check_template_ref(ref, fault) != 0)
        return -1;
    /* An id may come in either case; ids are stored lower case. */
    char id[UTIL_ID_LEN] = "", lower[UTIL_ID_LEN] = "";
    for (size_t i = 0; i + 1 < sizeof lower && ref[i]; i++)
        lower[i] = (char)tolower((unsigned char)ref[i]);
    if (strlen(ref) == UTIL_ID_LEN - 1 && util_is_uuid(lower))
        util_strlcpy(id, lower, sizeof id);
    else if (policy_is_template_name(ref)) {
        char name_key[KEYS_MAX];
        s_name_key(name_key, sizeof name_key, ref);
        redisReply *r = store_command(store, "HGET %s id", name_key);
        if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
            if (r)
                freeReplyObject(r);
            return fault_store(fault, store);
        }
        if (r->type == REDIS_REPLY_STRING)
            util_strlcpy(id, r->str, sizeof id);
        freeReplyObject(r);
    }
    /* Anything that is neither an id nor a valid name cannot be in the catalog. */
    if (!*id)
        return s_unknown(fault, ref);
    char key[KEYS_MAX];
    ProtobufCMessage *msg = NULL;
    int rc = model_load(store, &berth__template__descriptor,
                        keys_build(key, KEYS_TEMPLATE, id, NULL), &msg);
    if (rc == MODEL_NOT_FOUND)
        return s_unknown(fault, ref);
    if (rc != 0)
        return fault_store(fault, store);
    *tmpl_p = (Berth__Template *)msg;
    return 0;
}
