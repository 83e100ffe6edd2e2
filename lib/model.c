/*  model: every resource message converts to JSON and to a Redis hash by walking its
    protobuf-c descriptor, so adding a field to proto/berth.proto is all it takes for the field
    to be stored, loaded and shown. A hash holds one field per top-level proto field: scalars
    as text, everything structured (nested messages, repeated fields) as JSON, bytes as base64.

    Transactions: the checks, writes and events of one model_tx go to Redis as one Lua script
    (lib/lua/model_tx.lua), so a state change either happens whole, with its event, or not at
    all. The operations are built as a flat list (an opcode then its arguments, keys inline);
    commit moves every key into KEYS and leaves its index in the list. */
#include "model.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "lua_scripts.h"
#include "util.h"

#include <assert.h>
#include <czmq.h>
#include <sodium.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

/* ---- reflection ------------------------------------------------------------------------- */

#define MEMBER(type, msg, off) (*(type *)((uint8_t *)(msg) + (off)))

static size_t s_elem_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* One value (scalar slot at p) as JSON. */
static json_t *s_value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        json_t *j = json_string(s ? s : "");
        return j ? j : json_string(""); /* not UTF-8: never stored by us; show empty */
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        size_t len = sodium_base64_encoded_len(b->len, sodium_base64_VARIANT_ORIGINAL);
        char *text = malloc(len);
        if (!text)
            return NULL;
        sodium_bin2base64(text, len, b->data, b->len, sodium_base64_VARIANT_ORIGINAL);
        json_t *j = json_string(text);
        free(text);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? model_to_json(m) : json_null();
    }
    }
    return json_null();
}

/* Field f of msg as JSON (an array for a repeated field). New reference, NULL on failure. */
static json_t *s_field_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return s_value_json(f, (const uint8_t *)msg + f->offset);
    size_t n = MEMBER(size_t, msg, f->quantifier_offset);
    const uint8_t *arr = MEMBER(const uint8_t *, msg, f->offset);
    json_t *v = json_array();
    for (size_t k = 0; v && k < n; k++)
        json_array_append_new(v, s_value_json(f, arr + k * s_elem_size(f->type)));
    return v;
}

json_t *model_to_json(const ProtobufCMessage *msg)
{
    json_t *obj = json_object();
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        json_t *v = s_field_json(msg, f);
        json_object_set_new(obj, f->name, v ? v : json_null());
    }
    return obj;
}

static int s_int_range(json_t *j, int64_t min, int64_t max, int64_t *out)
{
    if (!json_is_integer(j))
        return -1;
    json_int_t v = json_integer_value(j);
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Store JSON value j into the scalar slot p (owned by a message being built). */
static int s_value_set(const ProtobufCFieldDescriptor *f, void *p, json_t *j, const char **error)
{
    int64_t v = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        if (s_int_range(j, INT32_MIN, INT32_MAX, &v))
            goto bad;
        *(int32_t *)p = (int32_t)v;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (s_int_range(j, 0, UINT32_MAX, &v))
            goto bad;
        *(uint32_t *)p = (uint32_t)v;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (s_int_range(j, INT64_MIN, INT64_MAX, &v))
            goto bad;
        *(int64_t *)p = v;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (s_int_range(j, 0, INT64_MAX, &v))
            goto bad;
        *(uint64_t *)p = (uint64_t)v;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        if (!json_is_number(j))
            goto bad;
        *(float *)p = (float)json_number_value(j);
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(j))
            goto bad;
        *(double *)p = json_number_value(j);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            goto bad;
        *(protobuf_c_boolean *)p = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            goto bad;
        char *s = strdup(json_string_value(j));
        if (!s)
            goto bad;
        *(char **)p = s;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(j))
            goto bad;
        const char *text = json_string_value(j);
        size_t tlen = strlen(text);
        ProtobufCBinaryData *b = p;
        b->data = malloc(tlen ? tlen : 1);
        if (!b->data || sodium_base642bin(b->data, tlen ? tlen : 1, text, tlen, NULL, &b->len, NULL,
                                          sodium_base64_VARIANT_ORIGINAL) != 0) {
            free(b->data);
            b->data = NULL;
            b->len = 0;
            goto bad;
        }
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (json_is_null(j))
            return 0;
        ProtobufCMessage *m = model_from_json(f->descriptor, j, error);
        if (!m)
            return -1;
        *(ProtobufCMessage **)p = m;
        return 0;
    }
    }
bad:
    if (error)
        *error = "a field has the wrong type or is out of range";
    return -1;
}

/* Set field f of msg from j (an array for repeated fields). */
static int s_field_set(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, json_t *j,
                       const char **error)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return s_value_set(f, (uint8_t *)msg + f->offset, j, error);
    if (!json_is_array(j)) {
        if (error)
            *error = "a list field is not an array";
        return -1;
    }
    size_t n = json_array_size(j);
    size_t es = s_elem_size(f->type);
    uint8_t *arr = calloc(n ? n : 1, es);
    if (!arr)
        return -1;
    /* Attach first so free_unpacked releases whatever was set if an element fails. */
    MEMBER(uint8_t *, msg, f->offset) = arr;
    for (size_t k = 0; k < n; k++) {
        if (s_value_set(f, arr + k * es, json_array_get(j, k), error) != 0)
            return -1;
        MEMBER(size_t, msg, f->quantifier_offset) = k + 1;
    }
    return 0;
}

static ProtobufCMessage *s_new(const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *msg = malloc(desc->sizeof_message);
    if (msg)
        desc->message_init(msg);
    return msg;
}

ProtobufCMessage *model_from_json(const ProtobufCMessageDescriptor *desc, json_t *json,
                                  const char **error)
{
    if (!json_is_object(json)) {
        if (error)
            *error = "expected a JSON object";
        return NULL;
    }
    ProtobufCMessage *msg = s_new(desc);
    if (!msg)
        return NULL;
    const char *key;
    json_t *value;
    json_object_foreach(json, key, value)
    {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, key);
        if (!f) {
            if (error)
                *error = "unknown field";
            protobuf_c_message_free_unpacked(msg, NULL);
            return NULL;
        }
        if (json_is_null(value))
            continue;
        if (s_field_set(msg, f, value, error) != 0) {
            protobuf_c_message_free_unpacked(msg, NULL);
            return NULL;
        }
    }
    return msg;
}

/* ---- hashes ----------------------------------------------------------------------------- */

static int s_structured(const ProtobufCFieldDescriptor *f)
{
    return f->label == PROTOBUF_C_LABEL_REPEATED || f->type == PROTOBUF_C_TYPE_MESSAGE;
}

/* Text of a hash field for f (caller frees). Scalars read naturally in redis-cli and Lua. */
static char *s_field_text(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    json_t *j = s_field_json(msg, f);
    if (!j)
        return NULL;
    char *text = NULL;
    if (s_structured(f))
        text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    else if (json_is_string(j))
        text = strdup(json_string_value(j));
    else if (json_is_boolean(j))
        text = strdup(json_is_true(j) ? "1" : "0");
    else if (json_is_integer(j)) {
        if (asprintf(&text, "%lld", (long long)json_integer_value(j)) < 0)
            text = NULL;
    } else if (asprintf(&text, "%.17g", json_number_value(j)) < 0)
        text = NULL;
    json_decref(j);
    return text;
}

/* The JSON value a hash field's text stands for, by f's type. NULL if it does not parse. */
static json_t *s_text_json(const ProtobufCFieldDescriptor *f, const char *text, size_t len)
{
    if (s_structured(f))
        return json_loadb(text, len, JSON_DECODE_ANY, NULL);
    char buf[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
        return json_stringn(text, len);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(len == 1 ? text[0] == '1' : strncmp(text, "true", len) == 0);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (len >= sizeof buf)
            return NULL;
        memcpy(buf, text, len);
        buf[len] = '\0';
        return json_real(strtod(buf, NULL));
    default: {
        int64_t v;
        if (len >= sizeof buf)
            return NULL;
        memcpy(buf, text, len);
        buf[len] = '\0';
        return util_parse_int(buf, INT64_MIN, INT64_MAX, &v) == 0 ? json_integer(v) : NULL;
    }
    }
}

ProtobufCMessage *model_from_hash(const ProtobufCMessageDescriptor *desc, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0 || r->elements % 2)
        return NULL;
    ProtobufCMessage *msg = s_new(desc);
    if (!msg)
        return NULL;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, k->str);
        if (!f)
            continue; /* a field this build does not know: written by a newer version */
        json_t *j = s_text_json(f, v->str, v->len);
        if (!j || s_field_set(msg, f, j, NULL) != 0)
            log_debug(NULL, "unreadable stored field", "{s:s, s:s}", "message", desc->short_name,
                      "field", k->str);
        json_decref(j);
    }
    return msg;
}

int model_load(store_t *store, const ProtobufCMessageDescriptor *desc, const char *key,
               ProtobufCMessage **msg_p)
{
    redisReply *r = store_command(store, "HGETALL %s", key);
    if (!r)
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 0)
        rc = MODEL_NOT_FOUND;
    else if (r->type == REDIS_REPLY_ARRAY) {
        ProtobufCMessage *msg = model_from_hash(desc, r);
        if (msg) {
            *msg_p = msg;
            rc = 0;
        }
    }
    freeReplyObject(r);
    return rc;
}

/* ---- transactions ----------------------------------------------------------------------- */

struct _model_tx_t {
    zlistx_t *args;  /* char *, the flat ARGV (after KEYS[1] = the event stream) */
    int failed;      /* out of memory while building */
    int refused;     /* asked for what the table or a message does not allow */
    char error[256]; /* why it was refused (the first reason) */
    zlistx_t *moved; /* char *, "key field" of each transition added (for put_changed) */
    char actor[96];  /* who the transitions are made for ("": service:<this service>) */
    char request_id[40];
    int quota_hit;       /* the commit answered MODEL_QUOTA */
    model_quota_t quota; /* which limit, then */
};

model_tx_t *model_tx_new(void)
{
    model_tx_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->args = zlistx_new();
    self->moved = zlistx_new();
    if (!self->args || !self->moved) {
        zlistx_destroy(&self->args);
        zlistx_destroy(&self->moved);
        free(self);
        return NULL;
    }
    zlistx_set_destructor(self->args, (zlistx_destructor_fn *)zstr_free);
    zlistx_set_destructor(self->moved, (zlistx_destructor_fn *)zstr_free);
    return self;
}

void model_tx_destroy(model_tx_t **self_p)
{
    if (self_p && *self_p) {
        zlistx_destroy(&(*self_p)->args);
        zlistx_destroy(&(*self_p)->moved);
        free(*self_p);
        *self_p = NULL;
    }
}

static void s_arg(model_tx_t *self, const char *text)
{
    char *copy = strdup(text ? text : "");
    if (!copy || !zlistx_add_end(self->args, copy)) {
        free(copy);
        self->failed = 1;
    }
}

static void s_arg_int(model_tx_t *self, int64_t value)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)value);
    s_arg(self, buf);
}

void model_tx_check(model_tx_t *self, const char *key, const char *field, const char *expected)
{
    s_arg(self, "C");
    s_arg(self, key);
    s_arg(self, field);
    s_arg(self, expected);
}

void model_tx_check_size(model_tx_t *self, const char *key, int64_t max)
{
    s_arg(self, "N");
    s_arg(self, key);
    s_arg_int(self, max);
}

void model_tx_check_version(model_tx_t *self, const char *key, int64_t version)
{
    char buf[32] = "";
    if (version)
        snprintf(buf, sizeof buf, "%lld", (long long)version);
    model_tx_check(self, key, "version", buf);
}

void model_tx_put(model_tx_t *self, const char *key, const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    s_arg(self, "P");
    s_arg(self, key);
    s_arg_int(self, d->n_fields);
    for (unsigned i = 0; i < d->n_fields; i++) {
        char *text = s_field_text(msg, &d->fields[i]);
        if (!text)
            self->failed = 1;
        s_arg(self, d->fields[i].name);
        s_arg(self, text);
        free(text);
    }
}

void model_tx_hset(model_tx_t *self, const char *key, const char *field, const char *value)
{
    s_arg(self, "P");
    s_arg(self, key);
    s_arg(self, "1");
    s_arg(self, field);
    s_arg(self, value);
}

void model_tx_del(model_tx_t *self, const char *key)
{
    s_arg(self, "D");
    s_arg(self, key);
}

void model_tx_zadd(model_tx_t *self, const char *key, int64_t score, const char *member)
{
    s_arg(self, "Z");
    s_arg(self, key);
    s_arg_int(self, score);
    s_arg(self, member);
}

void model_tx_zrem(model_tx_t *self, const char *key, const char *member)
{
    s_arg(self, "R");
    s_arg(self, key);
    s_arg(self, member);
}

void model_tx_sadd(model_tx_t *self, const char *key, const char *member)
{
    s_arg(self, "S");
    s_arg(self, key);
    s_arg(self, member);
}

void model_tx_srem(model_tx_t *self, const char *key, const char *member)
{
    s_arg(self, "M");
    s_arg(self, key);
    s_arg(self, member);
}

void model_tx_event(model_tx_t *self, const char *type, ...)
{
    va_list ap;
    int pairs = 1;
    va_start(ap, type);
    while (va_arg(ap, const char *))
        pairs++;
    va_end(ap);
    pairs = 1 + (pairs - 1) / 2;
    s_arg(self, "E");
    s_arg_int(self, pairs);
    s_arg(self, "type");
    s_arg(self, type);
    va_start(ap, type);
    for (int i = 1; i < pairs; i++) {
        const char *field = va_arg(ap, const char *);
        const char *value = va_arg(ap, const char *);
        s_arg(self, field);
        s_arg(self, value);
    }
    va_end(ap);
}

void model_tx_actor(model_tx_t *self, const char *actor, const char *request_id)
{
    snprintf(self->actor, sizeof self->actor, "%s", actor ? actor : "");
    snprintf(self->request_id, sizeof self->request_id, "%s", request_id ? request_id : "");
}

/* ---- transitions and field masks -------------------------------------------------------- */

static int s_refuse(model_tx_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static int s_refuse(model_tx_t *self, const char *format, ...)
{
    if (!self->refused) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(self->error, sizeof self->error, format, ap);
        va_end(ap);
        self->refused = 1;
    }
    return MODEL_REFUSED;
}

const char *model_tx_error(model_tx_t *self)
{
    return self->refused ? self->error : NULL;
}

#define S_EXTRA_MAX  32 /* extra event field/value pairs one transition carries */
#define S_FIELDS_MAX 64 /* fields of the largest message (Task has 20) */

/* The T op (see lib/lua/model_tx.lua). from NULL = observed; version MODEL_VERSION_ANY =
   unchecked. extra holds n_extra field/value pairs for the event. The table was checked by
   the caller. */
static void s_tx_move(model_tx_t *self, lifecycle_kind_t kind, const char *key, const char *from,
                      const char *to, int64_t version, const char *guard_field,
                      const char *guard_value, int n_extra, const char **extra)
{
    const lifecycle_kind_info_t *k = lifecycle_kind(kind);
    const lifecycle_transition_t *row = from ? lifecycle_find(kind, from, to) : NULL;
    if (!from)
        for (int s = 0; !row && s < k->n_states; s++)
            row = lifecycle_find(kind, k->states[s], to);
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    s_arg(self, "T");
    s_arg(self, key);
    s_arg(self, k->field);
    s_arg(self, from ? from : "*");
    s_arg(self, to);
    if (version == MODEL_VERSION_ANY)
        s_arg(self, "*");
    else if (version == 0)
        s_arg(self, "");
    else
        s_arg_int(self, version);
    s_arg(self, at);
    s_arg(self, guard_field ? guard_field : "");
    s_arg(self, guard_value ? guard_value : "");
    s_arg_int(self, 5 + n_extra);
    s_arg(self, "type");
    s_arg(self, k->event);
    s_arg(self, "key");
    s_arg(self, key);
    s_arg(self, k->field);
    s_arg(self, to);
    s_arg(self, "transition");
    s_arg(self, row ? row->name : "");
    s_arg(self, "at_ms");
    s_arg(self, at);
    for (int i = 0; i < 2 * n_extra; i++)
        s_arg(self, extra[i]);
    char *moved = NULL;
    if (asprintf(&moved, "%s %s", key, k->field) < 0 || !zlistx_add_end(self->moved, moved)) {
        free(moved);
        self->failed = 1;
    }
}

/* Collect NULL-terminated field/value pairs; -1 when there are too many or one is odd. */
static int s_pairs(va_list ap, const char **pairs, int *n)
{
    *n = 0;
    for (const char *f = va_arg(ap, const char *); f; f = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        if (*n >= S_EXTRA_MAX)
            return -1;
        pairs[2 * *n] = f;
        pairs[2 * *n + 1] = v ? v : "";
        (*n)++;
    }
    return 0;
}

/* The U op: the VM at key gives back what it holds to its group's and its owner's counters,
   named by the event fields `group` and `owner` (a VM without a group holds nothing). */
static void s_release(model_tx_t *self, const char *key, int n, const char **pairs)
{
    const char *group = NULL, *owner = NULL;
    for (int i = 0; i < n; i++) {
        if (streq(pairs[2 * i], "group"))
            group = pairs[2 * i + 1];
        else if (streq(pairs[2 * i], "owner"))
            owner = pairs[2 * i + 1];
    }
    if (!group || !*group || !owner || !*owner)
        return;
    char gkey[KEYS_MAX], ukey[KEYS_MAX];
    s_arg(self, "U");
    s_arg(self, key);
    s_arg(self, keys_build(gkey, KEYS_GROUP_USAGE, group, NULL));
    s_arg(self, keys_build(ukey, KEYS_GROUP_USER_USAGE, group, owner));
}

void model_tx_charge(model_tx_t *self, const char *key, const char *scope,
                     const Berth__Quota *limit, const Berth__Quota *amount)
{
    const char *names[4] = { "vms", "vcpus", "ram_mb", "disk_gb" };
    int64_t lim[4] = { 0 },
            amt[4] = { amount->vms, amount->vcpus, amount->ram_mb, amount->disk_gb };
    if (limit) {
        lim[0] = limit->vms;
        lim[1] = limit->vcpus;
        lim[2] = limit->ram_mb;
        lim[3] = limit->disk_gb;
    }
    s_arg(self, "Q");
    s_arg(self, key);
    s_arg(self, scope);
    s_arg(self, "4");
    for (int i = 0; i < 4; i++) {
        s_arg(self, names[i]);
        s_arg_int(self, lim[i]);
        s_arg_int(self, amt[i]);
    }
}

void model_tx_hold(model_tx_t *self, const char *vm_key, const Berth__Quota *amount)
{
    char held[96];
    snprintf(held, sizeof held, "%d %d %lld %lld", amount->vms, amount->vcpus,
             (long long)amount->ram_mb, (long long)amount->disk_gb);
    model_tx_hset(self, vm_key, "quota_held", held);
}

void model_tx_claim_group(model_tx_t *self, const char *vm_id, const char *host, const char *group)
{
    char key[KEYS_MAX];
    s_arg(self, "G");
    s_arg(self, keys_build(key, KEYS_CLAIM, vm_id, NULL));
    s_arg(self, keys_build(key, KEYS_HOST_RESERVATIONS, host, NULL));
    s_arg(self, KEYS_RESERVATIONS_ANY);
    s_arg(self, host);
    s_arg(self, group);
}

const model_quota_t *model_tx_quota(model_tx_t *self)
{
    return self->quota_hit ? &self->quota : NULL;
}

int model_tx_transition(model_tx_t *self, lifecycle_kind_t kind, const char *key, const char *from,
                        const char *to, int64_t version, ...)
{
    char error[160];
    if (!key || !*key)
        return s_refuse(self, "a transition needs the object's key");
    if (!from || lifecycle_check(kind, from, to, error, sizeof error) != 0)
        return s_refuse(self, "cannot change %s: %s", key,
                        from ? error : "a transition needs the state it starts from");
    if (version < 0 && version != MODEL_VERSION_ANY)
        return s_refuse(self, "cannot change %s: version %lld is negative", key,
                        (long long)version);
    if (!*from && version != 0)
        return s_refuse(self, "cannot create %s: a new object has no version yet", key);
    const char *pairs[2 * S_EXTRA_MAX];
    int n;
    va_list ap;
    va_start(ap, version);
    int rc = s_pairs(ap, pairs, &n);
    va_end(ap);
    if (rc != 0)
        return s_refuse(self, "cannot change %s: more than %d event fields", key, S_EXTRA_MAX);
    s_tx_move(self, kind, key, from, to, version, NULL, NULL, n, pairs);
    if (kind == LIFECYCLE_VM && lifecycle_vm_holds_quota(from) && !lifecycle_vm_holds_quota(to))
        s_release(self, key, n, pairs);
    return 0;
}

int model_tx_observe(model_tx_t *self, lifecycle_kind_t kind, const char *key, const char *to,
                     const char *guard_field, const char *guard_value, ...)
{
    char error[160];
    if (!key || !*key)
        return s_refuse(self, "an observed state needs the object's key");
    if (lifecycle_check(kind, NULL, to, error, sizeof error) != 0)
        return s_refuse(self, "cannot change %s: %s", key, error);
    if (guard_field && !*guard_field)
        guard_field = NULL;
    const char *pairs[2 * S_EXTRA_MAX];
    int n;
    va_list ap;
    va_start(ap, guard_value);
    int rc = s_pairs(ap, pairs, &n);
    va_end(ap);
    if (rc != 0)
        return s_refuse(self, "cannot change %s: more than %d event fields", key, S_EXTRA_MAX);
    s_tx_move(self, kind, key, NULL, to, MODEL_VERSION_ANY, guard_field,
              guard_field ? guard_value : NULL, n, pairs);
    return 0;
}

int model_tx_vm_transition(model_tx_t *self, const Berth__Vm *vm, const char *to)
{
    char key[KEYS_MAX], vcpus[24], ram[24], disk[24];
    const Berth__Resources *f = vm->flavor;
    if (!vm->id || !*vm->id)
        return s_refuse(self, "a VM transition needs the VM's id");
    snprintf(vcpus, sizeof vcpus, "%d", f ? f->vcpus : 0);
    snprintf(ram, sizeof ram, "%lld", f ? (long long)f->ram_mb : 0LL);
    snprintf(disk, sizeof disk, "%lld", f ? (long long)f->disk_gb : 0LL);
    return model_tx_transition(self, LIFECYCLE_VM, keys_vm(key, vm->id), vm->state ? vm->state : "",
                               to, vm->version, "vm", vm->id, "owner", vm->owner, "vcpus", vcpus,
                               "ram_mb", ram, "disk_gb", disk, "host", vm->host, "template",
                               vm->template_, "group", vm->group, NULL);
}

int model_tx_vm_power(model_tx_t *self, const char *vm_id, const char *host, const char *power)
{
    char key[KEYS_MAX];
    if (!vm_id || !*vm_id || !host || !*host)
        return s_refuse(self, "a VM's power state needs the VM's id and its host");
    return model_tx_observe(self, LIFECYCLE_POWER, keys_vm(key, vm_id), power, "host", host, "vm",
                            vm_id, "host", host, NULL);
}

/* 1 when f is a field only transitions write: the state field of a kind kept in this
   message's object, or the version. */
static int s_owned(const ProtobufCMessageDescriptor *d, const char *field)
{
    if (streq(field, "version"))
        return 1;
    for (int kind = 0; kind < LIFECYCLE_KIND_LAST; kind++) {
        const lifecycle_kind_info_t *k = lifecycle_kind(kind);
        if (strcasecmp(k->object, d->short_name) == 0 && streq(k->field, field))
            return 1;
    }
    return 0;
}

/* A transition of key's field (or, for "version", of any field of key) is in this tx. */
static int s_moved(model_tx_t *self, const char *key, const char *field)
{
    size_t len = strlen(key);
    for (const char *m = zlistx_first(self->moved); m; m = zlistx_next(self->moved))
        if (strncmp(m, key, len) == 0 && m[len] == ' ' &&
            (streq(field, "version") || streq(m + len + 1, field)))
            return 1;
    return 0;
}

/* One P op writing the n fields of msg listed in fields. */
static void s_put_some(model_tx_t *self, const char *key, const ProtobufCMessage *msg,
                       const ProtobufCFieldDescriptor **fields, int n)
{
    s_arg(self, "P");
    s_arg(self, key);
    s_arg_int(self, n);
    for (int i = 0; i < n; i++) {
        char *text = s_field_text(msg, fields[i]);
        if (!text)
            self->failed = 1;
        s_arg(self, fields[i]->name);
        s_arg(self, text);
        free(text);
    }
}

void model_tx_put_fields(model_tx_t *self, const char *key, const ProtobufCMessage *msg,
                         const char *field, ...)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const ProtobufCFieldDescriptor *fields[S_FIELDS_MAX];
    assert(d->n_fields <= S_FIELDS_MAX);
    int n = 0;
    va_list ap;
    va_start(ap, field);
    for (const char *name = field; name; name = va_arg(ap, const char *)) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(d, name);
        if (!f)
            s_refuse(self, "cannot write %s: %s has no field '%s'", key, d->short_name, name);
        else if (s_owned(d, name))
            s_refuse(self, "cannot write %s: '%s' of a %s changes only through a transition", key,
                     name, d->short_name);
        else if (n < (int)d->n_fields)
            fields[n++] = f;
    }
    va_end(ap);
    if (!self->refused && n > 0)
        s_put_some(self, key, msg, fields, n);
}

/* 1 when scalar field f differs between a and b, 0 when equal, -1 when f is repeated or a
   message (the caller compares their text). */
static int s_scalar_differs(const ProtobufCMessage *a, const ProtobufCMessage *b,
                            const ProtobufCFieldDescriptor *f)
{
    if (s_structured(f))
        return -1;
    const uint8_t *pa = (const uint8_t *)a + f->offset, *pb = (const uint8_t *)b + f->offset;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return strcmp(sa ? sa : "", sb ? sb : "") != 0;
    }
    if (f->type == PROTOBUF_C_TYPE_BYTES) {
        const ProtobufCBinaryData *da = (const void *)pa, *db = (const void *)pb;
        return da->len != db->len || (da->len && memcmp(da->data, db->data, da->len) != 0);
    }
    return memcmp(pa, pb, s_elem_size(f->type)) != 0;
}

void model_tx_put_changed(model_tx_t *self, const char *key, const ProtobufCMessage *before,
                          const ProtobufCMessage *after)
{
    const ProtobufCMessageDescriptor *d = after->descriptor;
    if (before->descriptor != d) {
        s_refuse(self, "cannot write %s: a %s compared with a %s", key, d->short_name,
                 before->descriptor->short_name);
        return;
    }
    const ProtobufCFieldDescriptor *fields[S_FIELDS_MAX];
    assert(d->n_fields <= S_FIELDS_MAX);
    int n = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        int changed = s_scalar_differs(before, after, f);
        if (changed < 0) { /* repeated or a message: compare what would be written */
            char *was = s_field_text(before, f), *now = s_field_text(after, f);
            changed = !was || !now || strcmp(was, now) != 0;
            free(was);
            free(now);
        }
        if (!changed)
            continue;
        if (!s_owned(d, f->name))
            fields[n++] = f;
        else if (!s_moved(self, key, f->name))
            s_refuse(self, "cannot write %s: '%s' of a %s changes only through a transition", key,
                     f->name, d->short_name);
    }
    if (!self->refused && n > 0)
        s_put_some(self, key, after, fields, n);
}

void model_tx_vm_event(model_tx_t *tx, const Berth__Vm *vm)
{
    char key[KEYS_MAX], version[24], vcpus[24], ram[24], disk[24], at[24];
    const Berth__Resources *f = vm->flavor;
    snprintf(version, sizeof version, "%lld", (long long)vm->version);
    snprintf(vcpus, sizeof vcpus, "%d", f ? f->vcpus : 0);
    snprintf(ram, sizeof ram, "%lld", f ? (long long)f->ram_mb : 0LL);
    snprintf(disk, sizeof disk, "%lld", f ? (long long)f->disk_gb : 0LL);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    model_tx_event(tx, "vm.state", "key", keys_vm(key, vm->id), "vm", vm->id, "state", vm->state,
                   "version", version, "owner", vm->owner, "vcpus", vcpus, "ram_mb", ram, "disk_gb",
                   disk, "host", vm->host, "template", vm->template_, "at_ms", at, NULL);
}

/* How many arguments follow the opcode at ops[i], and how many of the first are keys (the
   shapes are model_tx.lua's). -1 for an unknown opcode or a list cut short. */
static int s_op_width(const char **ops, size_t i, size_t n, int *has_key)
{
    const char *op = ops[i];
    *has_key = !streq(op, "E");
    if (streq(op, "U")) {
        *has_key = 3; /* the VM, the group's counters, the owner's */
        return 3;
    }
    if (streq(op, "G")) {
        *has_key = 3; /* the claim, its host's reservations, the any-host ones; host, group */
        return 5;
    }
    if (streq(op, "Q")) { /* key scope n, then n triples */
        int64_t triples;
        if (i + 3 >= n || util_parse_int(ops[i + 3], 0, 16, &triples))
            return -1;
        return 3 + 3 * (int)triples;
    }
    if (streq(op, "C") || streq(op, "Z") || streq(op, "A"))
        return 3;
    if (streq(op, "R") || streq(op, "S") || streq(op, "M") || streq(op, "N"))
        return 2;
    if (streq(op, "D"))
        return 1;
    /* The rest end with n field/value pairs; base = the arguments up to and with n. */
    int base = streq(op, "P") ? 2 : streq(op, "E") ? 1 : streq(op, "T") ? 9 : -1;
    int64_t pairs;
    if (base < 0 || i + (size_t)base >= n ||
        util_parse_int(ops[i + (size_t)base], 0, 1000000, &pairs))
        return -1;
    return base + 2 * (int)pairs;
}

/* The index (1-based, as text in idx) of key in keys[0..*nkeys), added when new. */
static void s_key_index(const char **keys, int *nkeys, const char *key, char idx[12])
{
    int i = 0;
    while (i < *nkeys && !streq(keys[i], key))
        i++;
    if (i == *nkeys)
        keys[(*nkeys)++] = key;
    snprintf(idx, 12, "%d", i + 1);
}

/* model_tx.lua's "QUOTA scope resource quota used requested" into q. 0, or -1. */
static int s_quota_parse(model_quota_t *q, const char *text)
{
    long long quota, used, requested;
    if (!text || strncmp(text, "QUOTA ", 6) != 0 ||
        sscanf(text + 6, "%15s %15s %lld %lld %lld", q->scope, q->resource, &quota, &used,
               &requested) != 5)
        return -1;
    q->quota = quota;
    q->used = used;
    q->requested = requested;
    return 0;
}

int model_tx_commit(model_tx_t *self, store_t *store, const char **why)
{
    if (self->refused) {
        if (why)
            *why = self->error;
        log_debug(NULL, "transaction refused", "{s:s}", "reason", self->error);
        return MODEL_REFUSED;
    }
    /* The audit op goes first (the script reads it before any transition is applied). */
    char actor[sizeof self->actor + 16];
    if (self->actor[0])
        snprintf(actor, sizeof actor, "%s", self->actor);
    else
        snprintf(actor, sizeof actor, "service:%s", log_service());
    const char *audit_op[] = { "A", KEYS_AUDIT, actor, self->request_id };
    for (int k = 3; k >= 0; k--) {
        char *copy = strdup(audit_op[k]);
        if (!copy || !zlistx_add_start(self->args, copy)) {
            free(copy);
            self->failed = 1;
        }
    }
    if (self->failed)
        return -1;
    size_t n = zlistx_size(self->args);
    const char **ops = calloc(n + 1, sizeof *ops);
    const char **argv = calloc(2 * n + 1, sizeof *argv);
    char(*idx)[12] = calloc(n + 1, sizeof *idx);
    if (!ops || !argv || !idx) {
        free(ops);
        free(argv);
        free(idx);
        return -1;
    }
    size_t i = 0;
    for (char *a = zlistx_first(self->args); a; a = zlistx_next(self->args))
        ops[i++] = a;
    /* KEYS: the event stream first, then each key once, in order of first use; the ops keep
       the index of their key in its place. keys[] is argv's front, the ops follow it. */
    const char **keys = argv;
    int nkeys = 0;
    keys[nkeys++] = STORE_EVENTS;
    const char **rest = calloc(n + 1, sizeof *rest);
    int rc = rest ? 0 : -1;
    for (i = 0; rc == 0 && i < n;) {
        int has_key;
        int width = s_op_width(ops, i, n, &has_key);
        if (width < 0 || i + (size_t)width >= n) {
            log_debug(NULL, "malformed transaction", "{s:s}", "op", ops[i]);
            rc = -1;
            break;
        }
        rest[i] = ops[i];
        for (int k = 1; k <= width; k++)
            rest[i + k] = ops[i + k];
        for (int k = 1; k <= has_key; k++) {
            s_key_index(keys, &nkeys, ops[i + k], idx[i + k]);
            rest[i + k] = idx[i + k];
        }
        i += 1 + (size_t)width;
    }
    redisReply *r = NULL;
    if (rc == 0) {
        for (i = 0; i < n; i++)
            argv[nkeys + i] = rest[i];
        r = store_run(store, &lua_model_tx, nkeys, nkeys + (int)n, argv);
    }
    free(rest);
    free(ops);
    free(argv);
    free(idx);
    if (!r)
        return -1;
    rc = -1;
    if (r->type == REDIS_REPLY_INTEGER)
        rc = store_wait(store) == 0 ? 0 : -1; /* redis_wait_replicas: on the replicas too */
    else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "CONFLICT", 8) == 0) {
        rc = MODEL_CONFLICT;
        if (why)
            *why = "the object changed meanwhile";
        log_debug(NULL, "transaction conflict", "{s:s}", "reason", r->str);
    } else if (r->type == REDIS_REPLY_ERROR && s_quota_parse(&self->quota, r->str) == 0) {
        rc = MODEL_QUOTA;
        self->quota_hit = 1;
        if (why)
            *why = "a quota does not allow it";
    } else
        log_debug(NULL, "transaction failed", "{s:s}", "error", r->str ? r->str : "?");
    freeReplyObject(r);
    return rc;
}

int model_transition(store_t *store, const char *key, const char *expected_state,
                     int64_t expected_version, const char *new_state, const char *event,
                     int nfields, const char **fields, int64_t *new_version)
{
    assert(nfields % 2 == 0);
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return -1;
    char version[24];
    snprintf(version, sizeof version, "%lld", (long long)expected_version + 1);
    model_tx_check(tx, key, "state", expected_state);
    model_tx_check_version(tx, key, expected_version);
    /* One write of state, version and the fields; one event naming them all. */
    s_arg(tx, "P");
    s_arg(tx, key);
    s_arg_int(tx, 2 + nfields / 2);
    s_arg(tx, "state");
    s_arg(tx, new_state);
    s_arg(tx, "version");
    s_arg(tx, version);
    for (int i = 0; i < nfields; i++)
        s_arg(tx, fields[i]);
    s_arg(tx, "E");
    s_arg_int(tx, 4 + nfields / 2);
    s_arg(tx, "type");
    s_arg(tx, event);
    s_arg(tx, "key");
    s_arg(tx, key);
    s_arg(tx, "state");
    s_arg(tx, new_state);
    s_arg(tx, "version");
    s_arg(tx, version);
    for (int i = 0; i < nfields; i++)
        s_arg(tx, fields[i]);
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    if (rc == 0 && new_version)
        *new_version = expected_version + 1;
    return rc;
}
