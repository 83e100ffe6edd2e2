/*  sshkeys: the SSH public keys users keep on their account (POST/GET /v1/keys,
    GET/DELETE /v1/keys/{name}), and their resolution when a request names some.

    The gateway owns them: each is berth:ssh-key:<user>:<name> (an SshKey) beside the user's
    index berth:user-ssh-keys:<user>, written with model_tx. A key is the caller's own: the
    user comes from the authenticated request only, so another user's key is simply not
    there (404). Adding one checks, in the same step as the write, that the name is free and
    that the user holds fewer than ssh_keys_per_user_max keys, so two adds racing cannot
    pass the limit together.

    A request for VMs names keys; they are resolved here to their lines and fingerprints and
    travel with the request, so the VMs carry copies: deleting a key later changes no VM. */
#include "gateway.h"
#include "keys.h"
#include "sshkey.h"

#include <stdio.h>
#include <string.h>

/* 1 if name may name a key: 1 to LIMIT_SSH_KEY_NAME_MAX of [A-Za-z0-9._-]. */
static int s_name_ok(const char *name)
{
    size_t len = strlen(name);
    return len >= 1 && len <= LIMIT_SSH_KEY_NAME_MAX &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* A key as the API shows it. */
static json_t *s_view(const Berth__SshKey *k)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "name", view_str(k->name), "type",
                     view_str(k->type), "fingerprint", view_str(k->fingerprint), "comment",
                     view_str(k->comment), "public_key", view_str(k->public_key), "created_at",
                     rest_time(k->created_ms));
}

json_t *sshkeys_view_refs(Berth__SshKey *const *keys, size_t n)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(list, json_pack("{s:o, s:o}", "name", view_str(keys[i]->name),
                                              "fingerprint", view_str(keys[i]->fingerprint)));
    return list;
}

/* The caller's key name: 0 and *key_p, MODEL_NOT_FOUND, or -1 with 503 set. */
static int s_load(http_req_t *req, const char *user, const char *name, Berth__SshKey **key_p)
{
    char key[KEYS_MAX];
    if (!s_name_ok(name))
        return MODEL_NOT_FOUND;
    ProtobufCMessage *msg = NULL;
    int rc = model_load(req->store, &berth__ssh_key__descriptor,
                        keys_build(key, KEYS_SSH_KEY, user, name), &msg);
    if (rc == 0)
        *key_p = (Berth__SshKey *)msg;
    else if (rc != MODEL_NOT_FOUND) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    return rc;
}

/* How many keys the user holds: >= 0, or -1 with 503 set. */
static long long s_count(http_req_t *req, const char *index)
{
    redisReply *r = store_command(req->store, "ZCARD %s", index);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    if (n < 0)
        http_error(req, "UNAVAILABLE", "state store unreachable");
    return n;
}

void sshkeys_create(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "name", "public_key", NULL };
    const char *name, *text;
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_SSH_KEY_NAME_MAX, &name) ||
        rest_str(req, "public_key", 1, LIMIT_SSH_KEY_MAX, &text))
        return;
    if (!s_name_ok(name)) {
        http_bad_field(req, "name", "name must be 1 to %d letters, digits, '.', '_' or '-'",
                       LIMIT_SSH_KEY_NAME_MAX);
        return;
    }
    sshkey_t parsed;
    size_t start;
    const char *why;
    if (sshkey_parse(text, LIMIT_SSH_KEY_MAX, &parsed, &start, &why) != 0) {
        http_bad_field(req, "public_key", "%s", why);
        return;
    }
    /* The line as stored: without the blanks and line end around it. */
    char line[LIMIT_SSH_KEY_MAX + 1];
    memcpy(line, text + start, parsed.line_len);
    line[parsed.line_len] = '\0';

    Berth__SshKey k = BERTH__SSH_KEY__INIT;
    k.name = (char *)name;
    k.user = req->user;
    k.type = parsed.type;
    k.public_key = line;
    k.fingerprint = parsed.fingerprint;
    k.comment = line + parsed.comment_at;
    k.created_ms = util_now_ms();
    char record[KEYS_MAX], index[KEYS_MAX];
    keys_build(record, KEYS_SSH_KEY, req->user, name);
    keys_build(index, KEYS_USER_SSH_KEYS, req->user, NULL);
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    model_tx_actor(tx, req->user, req->request_id);
    model_tx_check(tx, record, "name", "");
    model_tx_check_size(tx, index, gw->ssh_keys_per_user_max);
    model_tx_put(tx, record, &k.base);
    model_tx_zadd(tx, index, k.created_ms, name);
    int rc = model_tx_commit(tx, req->store, NULL);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT) {
        /* Which check failed: the name taken, or the limit reached. */
        Berth__SshKey *held = NULL;
        int found = s_load(req, req->user, name, &held);
        if (found < 0)
            return;
        if (found == 0) {
            protobuf_c_message_free_unpacked(&held->base, NULL);
            http_error_details(req, "CONFLICT", "you already have an SSH key with this name",
                               json_pack("{s:s}", "field", "name"));
            return;
        }
        long long n = s_count(req, index);
        if (n < 0)
            return;
        if (n >= gw->ssh_keys_per_user_max) {
            char max[16];
            snprintf(max, sizeof max, "%d", gw->ssh_keys_per_user_max);
            http_error_details(
                req, "CONFLICT",
                "you hold the most SSH keys allowed (ssh_keys_per_user_max): "
                "delete one",
                json_pack("{s:s, s:s}", "limit", "ssh_keys_per_user_max", "max", max));
            return;
        }
        http_error(req, "CONFLICT", "your SSH keys changed meanwhile; try again");
        return;
    }
    if (rc != 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    log_info(req->request_id, "SSH key added", "{s:s, s:s, s:s, s:s}", "user", req->user, "name",
             name, "type", k.type, "fingerprint", k.fingerprint);
    snprintf(req->location, sizeof req->location, "/v1/keys/%s", name);
    http_json(req, 201, json_pack("{s:o}", "key", s_view(&k)));
}

void sshkeys_list(http_req_t *req)
{
    char index[KEYS_MAX];
    keys_build(index, KEYS_USER_SSH_KEYS, req->user, NULL);
    redisReply *r = store_command(req->store, "ZRANGE %s 0 -1", index);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING)
            continue;
        Berth__SshKey *k = NULL;
        int rc = s_load(req, req->user, r->element[i]->str, &k);
        if (rc < 0) {
            json_decref(list);
            freeReplyObject(r);
            return;
        }
        if (rc == 0) {
            json_array_append_new(list, s_view(k));
            protobuf_c_message_free_unpacked(&k->base, NULL);
        }
    }
    freeReplyObject(r);
    http_json(req, 200, json_pack("{s:o}", "keys", list));
}

void sshkeys_get(http_req_t *req)
{
    Berth__SshKey *k = NULL;
    int rc = s_load(req, req->user, req->params[0], &k);
    if (rc < 0)
        return;
    if (rc != 0) {
        http_error(req, "NOT_FOUND", "you have no SSH key with this name");
        return;
    }
    http_json(req, 200, json_pack("{s:o}", "key", s_view(k)));
    protobuf_c_message_free_unpacked(&k->base, NULL);
}

void sshkeys_delete(http_req_t *req)
{
    const char *name = req->params[0];
    Berth__SshKey *k = NULL;
    int rc = s_load(req, req->user, name, &k);
    if (rc < 0)
        return;
    if (rc != 0) {
        http_error(req, "NOT_FOUND", "you have no SSH key with this name");
        return;
    }
    char record[KEYS_MAX], index[KEYS_MAX];
    keys_build(record, KEYS_SSH_KEY, req->user, name);
    keys_build(index, KEYS_USER_SSH_KEYS, req->user, NULL);
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        protobuf_c_message_free_unpacked(&k->base, NULL);
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    model_tx_actor(tx, req->user, req->request_id);
    /* The key read is the one deleted: a key deleted and added again meanwhile stays. */
    model_tx_check(tx, record, "fingerprint", k->fingerprint);
    model_tx_del(tx, record);
    model_tx_zrem(tx, index, name);
    rc = model_tx_commit(tx, req->store, NULL);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT)
        http_error(req, "CONFLICT", "the SSH key changed meanwhile; try again");
    else if (rc != 0)
        http_error(req, "UNAVAILABLE", "state store unreachable");
    else {
        log_info(req->request_id, "SSH key deleted", "{s:s, s:s, s:s}", "user", req->user, "name",
                 name, "fingerprint", k->fingerprint);
        http_json(req, 200, json_pack("{s:o}", "key", s_view(k)));
    }
    protobuf_c_message_free_unpacked(&k->base, NULL);
}

int sshkeys_forget(store_t *store, const char *user, const char *request_id)
{
    char index[KEYS_MAX], record[KEYS_MAX];
    keys_build(index, KEYS_USER_SSH_KEYS, user, NULL);
    redisReply *r = store_command(store, "ZRANGE %s 0 -1", index);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            model_tx_del(tx, keys_build(record, KEYS_SSH_KEY, user, r->element[i]->str));
    model_tx_del(tx, index);
    size_t n = r->elements;
    freeReplyObject(r);
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    if (rc != 0)
        return -1;
    if (n)
        log_info(request_id, "SSH keys of a deleted user removed", "{s:s, s:i}", "user", user,
                 "keys", (int)n);
    return 0;
}

int sshkeys_resolve(http_req_t *req, const json_t *names, Berth__SshKey ***keys_p, size_t *n_p)
{
    *keys_p = NULL;
    *n_p = 0;
    if (!names)
        return 0;
    if (!json_is_array(names) || json_array_size(names) > LIMIT_REQUEST_SSH_KEYS_MAX)
        return http_bad_field(req, "ssh_keys", "ssh_keys must be a list of at most %d key names",
                              LIMIT_REQUEST_SSH_KEYS_MAX);
    size_t n = json_array_size(names);
    Berth__SshKey **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys) {
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(names, i));
        int rc = -1;
        if (!name)
            http_bad_field(req, "ssh_keys", "ssh_keys[%zu] must be a key name", i);
        else {
            for (size_t j = 0; j < i; j++)
                if (streq(keys[j]->name, name)) {
                    http_bad_field(req, "ssh_keys", "ssh_keys names '%.64s' twice", name);
                    name = NULL;
                    break;
                }
        }
        if (name) {
            rc = s_load(req, req->user, name, &keys[i]);
            if (rc == MODEL_NOT_FOUND) {
                http_bad_field(req, "ssh_keys",
                               "ssh_keys[%zu]: you have no SSH key named '%.64s' (berth ssh-keys "
                               "list)",
                               i, name);
                rc = -1;
            }
        }
        if (rc != 0) {
            sshkeys_free(keys, i);
            return -1;
        }
    }
    *keys_p = keys;
    *n_p = n;
    return 0;
}

void sshkeys_free(Berth__SshKey **keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++)
        if (keys[i])
            protobuf_c_message_free_unpacked(&keys[i]->base, NULL);
    free(keys);
}
