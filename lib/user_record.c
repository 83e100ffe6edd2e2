/*  user_record: MACs of user records and the migration that gives the first release's records
    theirs (see user_record.h). The MAC is BLAKE2b-256 keyed with user.secret over a version
    tag and the five power fields, each with its NUL, so that no two different records read
    the same. */
#include "user_record.h"
#include "keys.h"
#include "log.h"
#include "migrate.h"
#include "util.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_COUNT "500"

int user_record_key_read(const char *secrets_dir, unsigned char key[USER_RECORD_KEY_LEN])
{
    char hex[USER_RECORD_KEY_LEN * 2 + 8];
    size_t len = 0;
    errno = 0;
    int rc = -1;
    if (secrets_dir && util_secret_read(secrets_dir, USER_RECORD_KEY_FILE, hex, sizeof hex) == 0) {
        if (sodium_hex2bin(key, USER_RECORD_KEY_LEN, hex, strlen(hex), NULL, &len, NULL) == 0 &&
            len == USER_RECORD_KEY_LEN)
            rc = 0;
        else
            errno = ENODATA;
    }
    sodium_memzero(hex, sizeof hex);
    return rc;
}

void user_record_mac(const unsigned char key[USER_RECORD_KEY_LEN], const char *name,
                     const char *password, const char *role, const char *state, const char *epoch,
                     char out[USER_RECORD_MAC_HEX])
{
    crypto_generichash_state st;
    unsigned char mac[32];
    crypto_generichash_init(&st, key, USER_RECORD_KEY_LEN, sizeof mac);
    const char *parts[] = { "berth-user-v1", name, password, role, state, epoch };
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        const char *p = parts[i] ? parts[i] : "";
        crypto_generichash_update(&st, (const unsigned char *)p, strlen(p) + 1);
    }
    crypto_generichash_final(&st, mac, sizeof mac);
    sodium_bin2hex(out, USER_RECORD_MAC_HEX, mac, sizeof mac);
}

int user_record_mac_ok(const unsigned char key[USER_RECORD_KEY_LEN], const char *name,
                       const char *password, const char *role, const char *state,
                       const char *epoch, const char *mac)
{
    if (!mac || strlen(mac) != USER_RECORD_MAC_HEX - 1)
        return 0;
    char want[USER_RECORD_MAC_HEX];
    user_record_mac(key, name, password, role, state, epoch, want);
    return sodium_memcmp(want, mac, USER_RECORD_MAC_HEX - 1) == 0;
}

void user_record_epoch(char out[USER_RECORD_EPOCH_MAX])
{
    unsigned char raw[12];
    randombytes_buf(raw, sizeof raw);
    out[0] = 'e';
    sodium_bin2hex(out + 1, USER_RECORD_EPOCH_MAX - 1, raw, sizeof raw);
}

/* ---- the migration ---- */

/* One record's fields as read. */
typedef struct {
    char *name, *password, *role, *state, *epoch, *mac;
} s_rec_t;

static char *s_field(redisReply *r, size_t i, const char *dflt)
{
    redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING ? strdup(e->str) : dflt ? strdup(dflt) : NULL;
}

static void s_rec_free(s_rec_t *rec)
{
    free(rec->name), free(rec->password), free(rec->role);
    free(rec->state), free(rec->epoch), free(rec->mac);
    memset(rec, 0, sizeof *rec);
}

/* The record of key. 1 read, 0 absent or without a name or password, -1 Redis failed. */
static int s_read(store_t *store, const char *key, s_rec_t *rec)
{
    redisReply *r = store_command(store, "HMGET %s name password role state epoch mac", key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int ok = r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING;
    if (ok) {
        rec->name = s_field(r, 0, NULL);
        rec->password = s_field(r, 1, NULL);
        rec->role = s_field(r, 2, "user");
        rec->state = s_field(r, 3, "ACTIVE");
        rec->epoch = s_field(r, 4, "");
        rec->mac = s_field(r, 5, NULL);
    }
    freeReplyObject(r);
    return ok;
}

/* Every user key (SCAN) into a new array of n strings. 0 or -1. */
static int s_user_keys(store_t *store, char ***keys_p, size_t *n_p)
{
    char pattern[KEYS_MAX], cursor[32] = "0";
    keys_build(pattern, KEYS_USER, "*", NULL);
    char **keys = NULL;
    size_t n = 0;
    do {
        redisReply *r =
            store_command(store, "SCAN %s MATCH %s COUNT " SCAN_COUNT, cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            if (r)
                freeReplyObject(r);
            goto fail;
        }
        util_strlcpy(cursor, r->element[0]->str, sizeof cursor);
        redisReply *page = r->element[1];
        char **more = realloc(keys, (n + page->elements + 1) * sizeof *keys);
        if (!more) {
            freeReplyObject(r);
            goto fail;
        }
        keys = more;
        for (size_t i = 0; i < page->elements; i++)
            if (page->element[i]->type == REDIS_REPLY_STRING)
                keys[n++] = strdup(page->element[i]->str);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    *keys_p = keys;
    *n_p = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    return -1;
}

static int s_ok(redisReply *r)
{
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* The step 0 -> 1 (see user_record_migrate). */
static int s_step_macs(store_t *store, void *arg)
{
    const unsigned char *key = arg;
    char **keys = NULL;
    size_t n = 0;
    if (s_user_keys(store, &keys, &n) != 0)
        return -1;
    int rc = 0;
    s_rec_t *recs = calloc(n ? n : 1, sizeof *recs);
    if (!recs)
        rc = -1;
    int any_mac = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int got = s_read(store, keys[i], &recs[i]);
        if (got < 0)
            rc = -1;
        else if (got && recs[i].mac)
            any_mac = 1;
    }
    /* Which records to bless: those of an interrupted run, or (no record has a MAC: the store
       is of the release before them) every record without one, listed first in one step. */
    redisReply *todo = rc == 0 ? store_command(store, "EXISTS %s", KEYS_USERS_SCHEMA_TODO) : NULL;
    int resuming = todo && todo->type == REDIS_REPLY_INTEGER && todo->integer == 1;
    if (rc == 0 && (!todo || todo->type != REDIS_REPLY_INTEGER))
        rc = -1;
    if (todo)
        freeReplyObject(todo);
    if (rc == 0 && !resuming && !any_mac) {
        size_t m = 0;
        const char **argv = calloc(n + 2, sizeof *argv);
        if (!argv)
            rc = -1;
        for (size_t i = 0; argv && i < n; i++)
            if (recs[i].name && !recs[i].mac)
                argv[2 + m++] = recs[i].name;
        if (argv && m) {
            argv[0] = "SADD";
            argv[1] = KEYS_USERS_SCHEMA_TODO;
            rc = s_ok(store_commandv(store, (int)(m + 2), argv, NULL));
        }
        free(argv);
        resuming = rc == 0 && m > 0;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        s_rec_t *rec = &recs[i];
        if (!rec->name)
            continue;
        int blessed = 0;
        if (resuming && !user_record_mac_ok(key, rec->name, rec->password, rec->role, rec->state,
                                            rec->epoch, rec->mac)) {
            redisReply *r = store_command(store, "SISMEMBER %s %s", KEYS_USERS_SCHEMA_TODO,
                                          rec->name);
            int listed = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
            if (!r || r->type != REDIS_REPLY_INTEGER)
                rc = -1;
            if (r)
                freeReplyObject(r);
            if (listed) {
                char epoch[USER_RECORD_EPOCH_MAX], mac[USER_RECORD_MAC_HEX];
                user_record_epoch(epoch);
                user_record_mac(key, rec->name, rec->password, rec->role, rec->state, epoch, mac);
                rc = s_ok(store_command(store, "HSET %s epoch %s mac %s", keys[i], epoch, mac));
                free(rec->epoch);
                free(rec->mac);
                rec->epoch = strdup(epoch);
                rec->mac = strdup(mac);
                blessed = 1;
            }
        }
        int valid = rec->epoch && rec->mac &&
                    user_record_mac_ok(key, rec->name, rec->password, rec->role, rec->state,
                                       rec->epoch, rec->mac);
        if (rc == 0 && !valid)
            log_warn(NULL, "user record without a valid MAC left as it is: refused at sign-in",
                     "{s:s}", "user", rec->name);
        else if (blessed)
            log_info(NULL, "user record given its MAC", "{s:s, s:s}", "user", rec->name, "role",
                     rec->role);
        if (rc == 0)
            rc = s_ok(store_command(store, "ZADD %s 0 %s", KEYS_USERS, rec->name));
        if (rc == 0 && valid && strcmp(rec->role, "admin") == 0 &&
            strcmp(rec->state, "DISABLED") != 0)
            rc = s_ok(store_command(store, "SADD %s %s", KEYS_ADMINS, rec->name));
    }
    if (rc == 0)
        rc = s_ok(store_command(store, "DEL %s", KEYS_USERS_SCHEMA_TODO));
    for (size_t i = 0; i < n; i++) {
        if (recs)
            s_rec_free(&recs[i]);
        free(keys[i]);
    }
    free(recs);
    free(keys);
    return rc;
}

int user_record_migrate(store_t *store, const unsigned char key[USER_RECORD_KEY_LEN],
                        const char *owner, int wait_ms)
{
    static const migrate_own_step_t steps[] = {
        { 0, "user records carry a MAC; berth:users and berth:admins index them", s_step_macs },
        { 0, NULL, NULL },
    };
    return migrate_run_own(store, owner, KEYS_USERS_SCHEMA, KEYS_USERS_SCHEMA_LOCK, steps,
                           USER_RECORD_VERSION, (void *)key, wait_ms);
}
