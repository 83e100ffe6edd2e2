/*  apikeys: named API keys for automation (POST/GET /v1/auth/keys, DELETE /v1/auth/keys/{id}).

    A key reads "bk_<id>_<secret>": 8 random bytes of id in hex and 32 random bytes of secret
    in base64url, 63 characters, shown once when it is made. Redis keeps berth:apikey:<id>
    with the user, the name, the groups it is scoped to, its expiry (also the record's TTL),
    the HMAC-SHA256 of the whole key under token.secret (never the key) and an HMAC of the
    record, so a copy of the database holds no usable key and a record written or changed
    without the secret authenticates nothing.

    A key authenticates like a token (Authorization: Bearer) but is checked against Redis on
    every request (no cache): a revoked key, or the key of a user disabled or deleted, is
    refused at once on every gateway. Its user's record must pass its MAC, as for a token; a
    password change leaves keys alone. Its groups narrow what it acts with: the caller's
    group roles (what the permission checks and the user assertion carry) are the user's
    roles in those groups only (none listed: all of the user's groups, as they are at each
    request). The platform role is the user's. A key cannot make another key, so a scoped
    key never widens itself. */
#include "gateway.h"
#include "keys.h"
#include "lua_scripts.h"

#include <sodium.h>

#define KEY_PREFIX     "bk_"
#define KEY_ID_BYTES   8
#define KEY_ID_HEX     (KEY_ID_BYTES * 2)
#define KEY_SECRET     32
#define KEY_TEXT_LEN   (3 + KEY_ID_HEX + 1 + 43) /* 63 */
#define KEY_HMAC_HEX   (crypto_auth_hmacsha256_BYTES * 2 + 1)
#define KEY_GROUPS_MAX 4096 /* the record's comma-joined group ids */

int apikey_is(const char *text)
{
    return strlen(text) == KEY_TEXT_LEN && strncmp(text, KEY_PREFIX, 3) == 0 &&
           strspn(text + 3, "0123456789abcdef") == KEY_ID_HEX && text[3 + KEY_ID_HEX] == '_';
}

/* Was the request authenticated by an API key? */
static int s_by_key(http_req_t *req)
{
    const char *header = http_header(req, "Authorization");
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return 0;
    header += 7;
    while (*header == ' ')
        header++;
    return apikey_is(header);
}

/* HMAC-SHA256 (hex) of parts under the token key, each part with its NUL. */
static void s_hmac(const gateway_t *gw, char out[KEY_HMAC_HEX], const char *const *parts, size_t n)
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, gw->token_key, sizeof gw->token_key);
    for (size_t i = 0; i < n; i++)
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(out, KEY_HMAC_HEX, mac, sizeof mac);
}

/* The MAC of a key record. */
static void s_record_mac(const gateway_t *gw, char out[KEY_HMAC_HEX], const char *id,
                         const char *user, const char *name, const char *groups,
                         const char *expires, const char *hash)
{
    const char *parts[] = { "berth-apikey-v1", id, user, name, groups, expires, hash };
    s_hmac(gw, out, parts, sizeof parts / sizeof *parts);
}

static int s_unauthorized(http_req_t *req)
{
    req->www_authenticate = "Bearer realm=\"berth\", error=\"invalid_token\"";
    http_error(req, "UNAUTHORIZED", "invalid or expired token");
    return -1;
}

/* Is id one of the comma-joined ids of list? */
static int s_in_list(const char *list, const char *id)
{
    size_t n = strlen(id);
    for (const char *p = list; n && p && *p; p = strchr(p, ',')) {
        if (*p == ',')
            p++;
        if (strncmp(p, id, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

/* req->groups: the user's group roles in the comma-joined groups only. 0, or -1 with 503. */
static int s_scope(http_req_t *req, const char *groups)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGETALL %s", keys_build(key, KEYS_USER_GROUPS, req->user, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    json_t *scope = json_object();
    for (size_t i = 0; scope && i + 1 < r->elements; i += 2) {
        const redisReply *g = r->element[i], *role = r->element[i + 1];
        if (g->type == REDIS_REPLY_STRING && role->type == REDIS_REPLY_STRING &&
            s_in_list(groups, g->str))
            json_object_set_new(scope, g->str, json_string(role->str));
    }
    freeReplyObject(r);
    if (!scope) {
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    json_decref(req->groups);
    req->groups = scope;
    /* Limited to some groups, it carries no platform-wide power either. */
    req->scoped = 1;
    util_strlcpy(req->role, "user", sizeof req->role);
    return 0;
}

int apikey_authenticate(http_req_t *req, const char *text)
{
    gateway_t *gw = req->app;
    char id[KEY_ID_HEX + 1], key[KEYS_MAX];
    memcpy(id, text + 3, KEY_ID_HEX);
    id[KEY_ID_HEX] = '\0';
    keys_build(key, KEYS_APIKEY, id, NULL);
    redisReply *r =
        store_command(req->store, "HMGET %s user name groups expires_ms hash mac", key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    int ok = 1;
    for (size_t i = 0; i < 6; i++)
        ok = ok && r->element[i]->type == REDIS_REPLY_STRING;
    int64_t expires = 0;
    ok = ok && util_parse_int(r->element[3]->str, 0, INT64_MAX, &expires) == 0 &&
         expires > util_now_ms() && auth_username_ok(r->element[0]->str) &&
         strlen(r->element[4]->str) == KEY_HMAC_HEX - 1 &&
         strlen(r->element[5]->str) == KEY_HMAC_HEX - 1;
    if (ok) {
        /* The key is the one whose HMAC the record holds, and the record is a gateway's. */
        char hash[KEY_HMAC_HEX], mac[KEY_HMAC_HEX];
        const char *parts[] = { "berth-apikey-secret-v1", text };
        s_hmac(gw, hash, parts, 2);
        s_record_mac(gw, mac, id, r->element[0]->str, r->element[1]->str, r->element[2]->str,
                     r->element[3]->str, r->element[4]->str);
        int hash_ok = sodium_memcmp(hash, r->element[4]->str, KEY_HMAC_HEX - 1) == 0;
        int mac_ok = sodium_memcmp(mac, r->element[5]->str, KEY_HMAC_HEX - 1) == 0;
        if (!mac_ok)
            log_warn(req->request_id, "API key record with a wrong MAC: not written by a gateway",
                     "{s:s}", "key", key);
        ok = hash_ok && mac_ok;
    }
    char groups[KEY_GROUPS_MAX] = "";
    if (ok) {
        util_strlcpy(req->user, r->element[0]->str, sizeof req->user);
        util_strlcpy(groups, r->element[2]->str, sizeof groups);
    }
    freeReplyObject(r);
    if (!ok)
        return s_unauthorized(req);
    /* Its user must exist, be ACTIVE and hold a record a gateway wrote. */
    int usable = auth_user_usable(req, req->user, req->role);
    if (usable < 0)
        return -1;
    if (!usable) {
        req->user[0] = '\0';
        return s_unauthorized(req);
    }
    return groups[0] ? s_scope(req, groups) : 0;
}

/* The caller's group ids (berth:user-groups) as a JSON object id -> role, or NULL (503). */
static json_t *s_my_groups(http_req_t *req)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGETALL %s", keys_build(key, KEYS_USER_GROUPS, req->user, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    json_t *out = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            json_object_set_new(out, r->element[i]->str, json_string(r->element[i + 1]->str));
    freeReplyObject(r);
    return out;
}

/* The id of group ref (an id or a name) if it is one of mine; NULL if not (borrowed from
   mine, or copied into buf). -1 in *failed when Redis failed (503 set). */
static const char *s_my_group(http_req_t *req, json_t *mine, const char *ref, char *buf,
                              size_t size, int *failed)
{
    if (json_object_get(mine, ref))
        return ref;
    if (!rest_id_ok(ref))
        return NULL;
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGET %s id", keys_build(key, KEYS_GROUP_NAME, ref, NULL));
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        *failed = 1;
        return NULL;
    }
    const char *id = NULL;
    if (r->type == REDIS_REPLY_STRING && json_object_get(mine, r->str)) {
        util_strlcpy(buf, r->str, size);
        id = buf;
    }
    freeReplyObject(r);
    return id;
}

/* A key as the API shows it (never its secret). */
static json_t *s_view(const char *id, const char *name, const char *user, const char *groups,
                      int64_t created, int64_t expires)
{
    json_t *list = json_array();
    char copy[KEY_GROUPS_MAX];
    util_strlcpy(copy, groups, sizeof copy);
    char *save = NULL;
    for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save))
        json_array_append_new(list, json_string(g));
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "id", id, "name", name, "user", user,
                     "groups", list, "created_at", rest_time(created), "expires_at",
                     rest_time(expires));
}

static int s_name_ok(const char *name)
{
    size_t len = strlen(name);
    return len >= 1 && len <= LIMIT_APIKEY_NAME_MAX &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

void apikey_create(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "name", "expires_in_days", "groups", NULL };
    const char *name;
    int64_t days = gw->apikey_days_default;
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_APIKEY_NAME_MAX, &name) ||
        rest_int(req, "expires_in_days", 0, 1, gw->apikey_days_max, &days) < 0)
        return;
    if (!s_name_ok(name)) {
        http_bad_field(req, "name", "name must be 1 to %d letters, digits, '.', '_' or '-'",
                       LIMIT_APIKEY_NAME_MAX);
        return;
    }
    if (s_by_key(req)) {
        http_error(req, "FORBIDDEN", "an API key cannot make API keys: sign in for a token");
        return;
    }
    json_t *refs = json_object_get(req->body, "groups");
    if (refs && (!json_is_array(refs) || json_array_size(refs) > LIMIT_APIKEY_GROUPS_MAX)) {
        http_bad_field(req, "groups", "groups must be a list of at most %d group ids or names",
                       LIMIT_APIKEY_GROUPS_MAX);
        return;
    }
    /* Each group one of the caller's, by id or name; stored as ids. */
    char groups[KEY_GROUPS_MAX] = "";
    if (json_array_size(refs)) {
        json_t *mine = s_my_groups(req);
        if (!mine)
            return;
        size_t i;
        json_t *ref;
        int failed = 0;
        json_array_foreach(refs, i, ref)
        {
            char buf[LIMIT_GROUP_REF_MAX + 1];
            const char *text = json_string_value(ref);
            const char *id = text && strlen(text) <= LIMIT_GROUP_REF_MAX
                                 ? s_my_group(req, mine, text, buf, sizeof buf, &failed)
                                 : NULL;
            if (failed)
                break;
            if (!id) {
                json_decref(mine);
                http_bad_field(req, "groups", "groups[%zu] is not a group you belong to", i);
                return;
            }
            if (!s_in_list(groups, id)) {
                if (groups[0])
                    strcat(groups, ",");
                strcat(groups, id);
            }
        }
        json_decref(mine);
        if (failed)
            return;
    }
    unsigned char raw[KEY_SECRET], id_raw[KEY_ID_BYTES];
    char id[KEY_ID_HEX + 1], secret[64], text[KEY_TEXT_LEN + 24];
    randombytes_buf(id_raw, sizeof id_raw);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(id, sizeof id, id_raw, sizeof id_raw);
    sodium_bin2base64(secret, sizeof secret, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    snprintf(text, sizeof text, KEY_PREFIX "%s_%s", id, secret);
    sodium_memzero(secret, sizeof secret);
    char hash[KEY_HMAC_HEX], mac[KEY_HMAC_HEX], created_text[24], expires_text[24], now_text[24],
        max_text[24], record[KEYS_MAX], index[KEYS_MAX], user[KEYS_MAX];
    const char *parts[] = { "berth-apikey-secret-v1", text };
    s_hmac(gw, hash, parts, 2);
    int64_t now = util_now_ms(), expires = now + days * 24 * 3600 * 1000;
    snprintf(created_text, sizeof created_text, "%lld", (long long)now);
    snprintf(now_text, sizeof now_text, "%lld", (long long)now);
    snprintf(expires_text, sizeof expires_text, "%lld", (long long)expires);
    snprintf(max_text, sizeof max_text, "%d", gw->apikeys_per_user_max);
    s_record_mac(gw, mac, id, req->user, name, groups, expires_text, hash);
    keys_build(record, KEYS_APIKEY, id, NULL);
    keys_build(index, KEYS_USER_APIKEYS, req->user, NULL);
    keys_build(user, KEYS_USER, req->user, NULL);
    const char *argv[] = { record,     index,        user,     id,           now_text,
                           expires_text, max_text,   "user",   req->user,    "name",
                           name,       "groups",     groups,   "created_ms", created_text,
                           "expires_ms", expires_text, "hash", hash,         "mac",
                           mac };
    redisReply *r = store_run(req->store, &lua_auth_apikey_put, 3, 21, argv);
    char answer[16] = "";
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        util_strlcpy(answer, r->str, sizeof answer);
    if (r)
        freeReplyObject(r);
    if (!answer[0]) {
        sodium_memzero(text, sizeof text);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (!streq(answer, "OK")) {
        sodium_memzero(text, sizeof text);
        if (streq(answer, "FULL"))
            http_error_details(req, "CONFLICT",
                               "you hold the most API keys allowed (apikeys_per_user_max): "
                               "revoke one",
                               json_pack("{s:s}", "limit", "apikeys_per_user_max"));
        else
            http_error(req, "UNAUTHORIZED", "invalid or expired token");
        return;
    }
    log_info(req->request_id, "API key created", "{s:s, s:s, s:s, s:s}", "user", req->user, "id",
             id, "name", name, "groups", groups[0] ? groups : "(all)");
    http_json(req, 201,
              json_pack("{s:o, s:s}", "key", s_view(id, name, req->user, groups, now, expires),
                        "secret", text));
    sodium_memzero(text, sizeof text);
}

void apikey_list(http_req_t *req)
{
    char index[KEYS_MAX], now[24];
    keys_build(index, KEYS_USER_APIKEYS, req->user, NULL);
    snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
    redisReply *r = store_command(req->store, "ZRANGEBYSCORE %s (%s +inf", index, now);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < r->elements; i++) {
        const char *id = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
        if (!rest_id_ok(id))
            continue;
        char key[KEYS_MAX];
        redisReply *k = store_command(req->store, "HMGET %s user name groups created_ms expires_ms",
                                      keys_build(key, KEYS_APIKEY, id, NULL));
        if (!k || k->type != REDIS_REPLY_ARRAY || k->elements != 5) {
            if (k)
                freeReplyObject(k);
            freeReplyObject(r);
            json_decref(list);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        int whole = 1;
        for (size_t j = 0; j < 5; j++)
            whole = whole && k->element[j]->type == REDIS_REPLY_STRING;
        if (whole && streq(k->element[0]->str, req->user)) {
            int64_t created = 0, expires = 0;
            util_parse_int(k->element[3]->str, 0, INT64_MAX, &created);
            util_parse_int(k->element[4]->str, 0, INT64_MAX, &expires);
            json_array_append_new(list, s_view(id, k->element[1]->str, req->user,
                                               k->element[2]->str, created, expires));
        }
        freeReplyObject(k);
    }
    freeReplyObject(r);
    http_json(req, 200, json_pack("{s:o}", "keys", list));
}

void apikey_revoke(http_req_t *req)
{
    const char *id = req->params[0];
    if (strlen(id) != KEY_ID_HEX || strspn(id, "0123456789abcdef") != KEY_ID_HEX) {
        http_error(req, "NOT_FOUND", "no such API key");
        return;
    }
    char record[KEYS_MAX], index[KEYS_MAX];
    keys_build(record, KEYS_APIKEY, id, NULL);
    /* Whose is it? An admin revokes anyone's; anyone else only their own (else: 404). */
    redisReply *r = store_command(req->store, "HGET %s user", record);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    char owner[HTTP_USER_MAX] = "";
    if (r->type == REDIS_REPLY_STRING && auth_username_ok(r->str))
        util_strlcpy(owner, r->str, sizeof owner);
    freeReplyObject(r);
    if (!owner[0] || (!streq(owner, req->user) && !rest_is_admin(req))) {
        http_error(req, "NOT_FOUND", "no such API key");
        return;
    }
    keys_build(index, KEYS_USER_APIKEYS, owner, NULL);
    const char *argv[] = { record, index, id, owner };
    r = store_run(req->store, &lua_auth_apikey_delete, 2, 4, argv);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    int revoked = ok && r->integer == 1;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (!revoked) {
        http_error(req, "NOT_FOUND", "no such API key");
        return;
    }
    log_info(req->request_id, "API key revoked", "{s:s, s:s, s:s}", "user", owner, "id", id, "by",
             req->user);
    http_json(req, 200, json_pack("{s:s, s:b}", "id", id, "revoked", 1));
}
