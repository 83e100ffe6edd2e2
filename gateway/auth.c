/*  auth: users, passwords and bearer tokens.

    Passwords are kept only as Argon2id strings (libsodium crypto_pwhash_str, interactive
    limits) in berth:user:<name>. A token is 32 random bytes shown to the client once, in
    base64url. Redis holds only its HMAC-SHA256 under the gateway's key token.secret (made by
    berth-secrets, never in Redis) as the record's name, berth:token:<hex>, with the user,
    the role, the expiry and a MAC (the same key) over the name and those three fields, and
    a TTL. So a copy of the database hands out no usable token, and writing Redis alone
    mints none: a record written without the key has no valid MAC, and a valid record
    changed (another role or user, a later expiry) or copied under another name no longer
    matches its MAC. A failed login says the same thing, after the same amount of work,
    whether the user exists or not.

    Token cache: a token Redis vouched for is trusted by the same worker thread for up to
    token_cache_ms (default 1 s) without asking again, so a burst of requests with one token
    costs one Redis read, not one each. Its own expiry is still checked on every request.
    Revocation (deleting berth:token:<hash>) therefore takes effect on every gateway
    instance within token_cache_ms; 0 turns the cache off. Only successful checks are kept,
    so a new token works at once and a refused one is asked about again every time. A logout
    (DELETE /v1/auth/tokens/current) deletes the record and bumps this process's revocation
    count, which empties every thread's cache at its next look: the token is refused at once
    on this gateway, and within token_cache_ms on the others.

    Failed sign-ins are counted in Redis per username and per client address in a window
    (login_fail_*; auth_login_throttle.lua); past either limit a sign-in is refused with 429
    and Retry-After before any password is checked. A success forgets its username's
    failures, never its address's.

    A user's record is read with each token check that reaches Redis: a disabled or deleted
    user's tokens are refused, at once on the gateway that disabled it (the revocation count
    again), and a disabled user cannot sign in. The record carries a MAC under user.secret
    over its power fields (name, password hash, role, state, epoch; lib/user_record.h): one
    that fails it is refused at sign-in and at every token check, so writing the hash in
    Redis never makes an admin. The role that counts is the record's, not the token's. A
    token carries the epoch its user was in when it was issued; a password change starts a
    new epoch, which revokes every token of the old one (the answer carries a new token).
    Records are written only through auth_put_user.lua (create; update while the MAC is the
    one read; the bootstrap's reset), which also keeps berth:users and berth:admins, and
    never leaves the platform without an ACTIVE admin. */
#include "gateway.h"
#include "clock.h"
#include "keys.h"
#include "lua_scripts.h"
#include "user_record.h"

#include <assert.h>
#include <microhttpd.h>
#include <errno.h>
#include <sodium.h>
#include <stdatomic.h>

#define TOKEN_BYTES    32
#define TOKEN_TEXT_MAX 64 /* base64url of 32 bytes is 43 characters */
#define LOGIN_FAILED   "invalid username or password"
#define TOKEN_SECRET   "token.secret" /* in secrets_dir: 32 bytes, hex */
#define MAC_HEX        (crypto_auth_hmacsha256_BYTES * 2 + 1)
#define USER_ACTIVE    "ACTIVE"
#define USER_DISABLED  "DISABLED" /* signs in no more; its tokens are refused */

int auth_init(gateway_t *gw, const char *secrets_dir)
{
    if (sodium_init() < 0) {
        log_error(NULL, "libsodium failed to initialise", NULL);
        return -1;
    }
    char hex[crypto_auth_hmacsha256_KEYBYTES * 2 + 8];
    size_t len = 0;
    errno = 0;
    if (!secrets_dir || util_secret_read(secrets_dir, TOKEN_SECRET, hex, sizeof hex) != 0 ||
        sodium_hex2bin(gw->token_key, sizeof gw->token_key, hex, strlen(hex), NULL, &len, NULL) !=
            0 ||
        len != sizeof gw->token_key) {
        log_error(NULL,
                  "cannot read the token key: secrets_dir must hold token.secret (run "
                  "berth-secrets DIR and set BERTH_SECRETS_DIR)",
                  "{s:s, s:s}", "secrets_dir", secrets_dir ? secrets_dir : "(unset)", "reason",
                  errno && secrets_dir ? strerror(errno) : "not 32 bytes of hex");
        sodium_memzero(hex, sizeof hex);
        return -1;
    }
    sodium_memzero(hex, sizeof hex);
    errno = 0;
    if (user_record_key_read(secrets_dir, gw->user_key) != 0) {
        log_error(NULL,
                  "cannot read the user record key: secrets_dir must hold user.secret (run "
                  "berth-secrets DIR and set BERTH_SECRETS_DIR)",
                  "{s:s, s:s}", "secrets_dir", secrets_dir, "reason",
                  errno == ENODATA ? "not 32 bytes of hex" : strerror(errno));
        return -1;
    }
    /* The hash an unknown user's password is checked against: a login for a name that does
       not exist costs the same Argon2id work as a wrong password for one that does. */
    unsigned char random[16];
    char secret[sizeof random * 2 + 1];
    randombytes_buf(random, sizeof random);
    sodium_bin2hex(secret, sizeof secret, random, sizeof random);
    gw->dummy_hash = malloc(crypto_pwhash_STRBYTES);
    if (!gw->dummy_hash || crypto_pwhash_str(gw->dummy_hash, secret, strlen(secret),
                                             crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                             crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        log_error(NULL, "cannot hash a password (out of memory?)", NULL);
        return -1;
    }
    return 0;
}

void auth_cleanup(gateway_t *gw)
{
    sodium_memzero(gw->token_key, sizeof gw->token_key);
    sodium_memzero(gw->user_key, sizeof gw->user_key);
    free(gw->dummy_hash);
    gw->dummy_hash = NULL;
}

int auth_username_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len >= HTTP_USER_MAX)
        return 0;
    if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') ||
          (name[0] >= '0' && name[0] <= '9')))
        return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* Argon2id string of password into out (crypto_pwhash_STRBYTES). 0 or -1. */
static int s_hash(char out[crypto_pwhash_STRBYTES], const char *password)
{
    return crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                             crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

/* Does password match the stored hash? A malformed stored hash never matches. */
static int s_verify(const char *hash, const char *password)
{
    if (!hash || strlen(hash) >= crypto_pwhash_STRBYTES)
        return 0;
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

static void s_user_key(char *buf, size_t size, const char *name)
{
    char key[KEYS_MAX];
    util_strlcpy(buf, keys_build(key, KEYS_USER, name, NULL), size);
}

/* A user record as read (s_user_read): the strings are what the record holds, with the
   defaults of an absent field (role "user", state "ACTIVE", epoch ""). */
typedef struct {
    char name[HTTP_USER_MAX];
    char password[crypto_pwhash_STRBYTES];
    char role[HTTP_ROLE_MAX];
    char state[16];
    char epoch[USER_RECORD_EPOCH_MAX];
    char mac[USER_RECORD_MAC_HEX];
    char display_name[LIMIT_DISPLAY_NAME_MAX + 1];
    char email[LIMIT_EMAIL_MAX + 1];
    int64_t created_ms;
    int valid; /* its MAC is the gateway's: its power fields are as a gateway wrote them */
} s_user_t;

static void s_str(char *out, size_t size, const redisReply *e, const char *dflt)
{
    util_strlcpy(out, e->type == REDIS_REPLY_STRING ? e->str : dflt, size);
}

/* Read user name. 1 found (*u set, u->valid said; a record that fails its MAC is logged),
   0 no such user, -1 Redis failed. */
static int s_user_read(const gateway_t *gw, store_t *store, const char *request_id,
                       const char *name, s_user_t *u)
{
    char key[128];
    s_user_key(key, sizeof key, name);
    redisReply *r = store_command(store,
                                  "HMGET %s name password role state epoch mac display_name "
                                  "email created_ms",
                                  key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 9) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int found = r->element[1]->type == REDIS_REPLY_STRING;
    if (found) {
        memset(u, 0, sizeof *u);
        util_strlcpy(u->name, name, sizeof u->name);
        s_str(u->password, sizeof u->password, r->element[1], "");
        s_str(u->role, sizeof u->role, r->element[2], "user");
        s_str(u->state, sizeof u->state, r->element[3], USER_ACTIVE);
        s_str(u->epoch, sizeof u->epoch, r->element[4], "");
        s_str(u->mac, sizeof u->mac, r->element[5], "");
        s_str(u->display_name, sizeof u->display_name, r->element[6], "");
        s_str(u->email, sizeof u->email, r->element[7], "");
        if (r->element[8]->type == REDIS_REPLY_STRING)
            util_parse_int(r->element[8]->str, 0, INT64_MAX, &u->created_ms);
        /* Every power field whole (not cut by a buffer) and under the gateway's MAC. */
        int whole = r->element[0]->type == REDIS_REPLY_STRING &&
                    streq(r->element[0]->str, name) &&
                    strlen(r->element[1]->str) < sizeof u->password &&
                    (r->element[2]->type != REDIS_REPLY_STRING ||
                     strlen(r->element[2]->str) < sizeof u->role) &&
                    (r->element[3]->type != REDIS_REPLY_STRING ||
                     strlen(r->element[3]->str) < sizeof u->state) &&
                    (r->element[4]->type != REDIS_REPLY_STRING ||
                     strlen(r->element[4]->str) < sizeof u->epoch);
        u->valid = whole && user_record_mac_ok(gw->user_key, u->name, u->password, u->role,
                                               u->state, u->epoch, u->mac);
        if (!u->valid)
            log_warn(request_id, "user record with a wrong MAC refused: not written by a gateway",
                     "{s:s}", "user", name);
    }
    freeReplyObject(r);
    return found;
}

/* auth_put_user.lua: write user name (mode create, update while its MAC is expected_mac, or
   reset) with the fields of pairs (n strings: field, value, ...; the power fields with their
   new MAC). Its answer ("OK", "TAKEN", "NO_USER", "CHANGED", "LAST_ADMIN") into out, or -1
   when Redis failed. */
static int s_user_put(store_t *store, const char *mode, const char *expected_mac,
                      const char *name, size_t n, const char *const *pairs, char *out,
                      size_t size)
{
    char key[128];
    s_user_key(key, sizeof key, name);
    const char *argv[32];
    assert(n + 6 <= sizeof argv / sizeof *argv);
    argv[0] = key;
    argv[1] = KEYS_USERS;
    argv[2] = KEYS_ADMINS;
    argv[3] = mode;
    argv[4] = expected_mac ? expected_mac : "";
    argv[5] = name;
    for (size_t i = 0; i < n; i++)
        argv[6 + i] = pairs[i];
    redisReply *r = store_run(store, &lua_auth_put_user, 3, (int)(n + 6), argv);
    int rc = r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) ? 0 : -1;
    if (rc == 0)
        util_strlcpy(out, r->str, size);
    else if (r && r->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "user write failed in Redis", "{s:s, s:s}", "user", name, "reason", r->str);
    if (r)
        freeReplyObject(r);
    return rc;
}

/* The user's power fields with their new MAC, as pairs for s_user_put. */
typedef struct {
    char mac[USER_RECORD_MAC_HEX];
    const char *pairs[10];
} s_power_t;

static void s_power(const gateway_t *gw, s_power_t *p, const char *name, const char *password,
                    const char *role, const char *state, const char *epoch)
{
    user_record_mac(gw->user_key, name, password, role, state, epoch, p->mac);
    const char *pairs[] = { "password", password, "role", role,   "state",
                            state,      "epoch",  epoch,  "mac", p->mac };
    memcpy(p->pairs, pairs, sizeof pairs);
}

int auth_bootstrap(gateway_t *gw, store_t *store, const char *user, const char *password)
{
    s_user_t u;
    int found = s_user_read(gw, store, NULL, user, &u);
    if (found < 0) {
        log_warn(NULL, "cannot bootstrap the admin user yet: state store unreachable", "{s:s}",
                 "user", user);
        return -1;
    }
    if (found && u.valid && s_verify(u.password, password) && streq(u.role, "admin") &&
        streq(u.state, USER_ACTIVE) &&
        crypto_pwhash_str_needs_rehash(u.password, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                       crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0) {
        log_info(NULL, "admin user present", "{s:s}", "user", user);
        return 0;
    }
    char fresh[crypto_pwhash_STRBYTES], epoch[USER_RECORD_EPOCH_MAX], created[32], answer[16];
    if (s_hash(fresh, password) != 0) {
        log_error(NULL, "cannot hash the admin password (out of memory?)", "{s:s}", "user", user);
        return -1;
    }
    /* Absent, or its password, role, state or MAC differ from the configuration: the
       operator's config is the authority, so it replaces what is stored. A valid record keeps
       its epoch (its tokens stay valid until they expire, as with a config rotation before);
       one that failed its MAC gets a new one, so no token of whatever it was works. */
    if (found && u.valid)
        util_strlcpy(epoch, u.epoch, sizeof epoch);
    else
        user_record_epoch(epoch);
    snprintf(created, sizeof created, "%lld",
             (long long)(found && u.created_ms ? u.created_ms : clock_now_ms()));
    s_power_t p;
    s_power(gw, &p, user, fresh, "admin", USER_ACTIVE, epoch);
    const char *pairs[14] = { "name", user, "created_ms", created };
    memcpy(pairs + 4, p.pairs, sizeof p.pairs);
    if (s_user_put(store, "reset", NULL, user, 14, pairs, answer, sizeof answer) != 0 ||
        !streq(answer, "OK")) {
        log_warn(NULL, "cannot write the admin user yet", "{s:s}", "user", user);
        return -1;
    }
    if (found)
        log_warn(NULL, "admin user's password, role or state reset from the configuration",
                 "{s:s, s:b}", "user", user, "record_was_valid", u.valid);
    else
        log_info(NULL, "admin user created", "{s:s}", "user", user);
    return 0;
}

/* The token's Redis key, berth:token:<HMAC-SHA256 of the token text under the token key,
   lower-case hex>; the digest itself into digest when non-NULL. */
static void s_token_key(const gateway_t *gw, char *buf, size_t size, const char *token,
                        unsigned char digest[crypto_auth_hmacsha256_BYTES])
{
    unsigned char own[crypto_auth_hmacsha256_BYTES];
    char hex[MAC_HEX];
    if (!digest)
        digest = own;
    crypto_auth_hmacsha256(digest, (const unsigned char *)token, strlen(token), gw->token_key);
    sodium_bin2hex(hex, sizeof hex, digest, crypto_auth_hmacsha256_BYTES);
    char key[KEYS_MAX];
    util_strlcpy(buf, keys_build(key, KEYS_TOKEN, hex, NULL), size);
}

/* The MAC of a token record (hex into out): its key, user, role, expiry and the user's epoch
   it was issued in, each with its NUL so that no two different records read the same. */
static void s_token_mac(const gateway_t *gw, char out[MAC_HEX], const char *key, const char *user,
                        const char *role, const char *expires, const char *epoch)
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, gw->token_key, sizeof gw->token_key);
    const char *parts[] = { "berth-token-v2", key, user, role, expires, epoch };
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(out, MAC_HEX, mac, sizeof mac);
}

/* One checked token of this worker thread (see the cache at the top of the file). */
#define TOKEN_CACHE_SLOTS 256
typedef struct {
    unsigned char digest[crypto_auth_hmacsha256_BYTES]; /* HMAC of the token */
    int64_t checked_ms;                                 /* monotonic ms Redis vouched; 0 = empty */
    int64_t expires_ms;                                 /* the token's own expiry (unix ms) */
    char user[HTTP_USER_MAX];
    char role[HTTP_ROLE_MAX];
    uint64_t revocations; /* s_revocations when Redis vouched */
} s_cached_token_t;

static _Thread_local s_cached_token_t s_token_cache[TOKEN_CACHE_SLOTS];
/* Tokens revoked by this process: a cached check older than the last one is not trusted. */
static atomic_uint_fast64_t s_revocations;

/* The digest is uniformly random: its first bytes pick the slot. */
static s_cached_token_t *s_cache_slot(const unsigned char digest[crypto_auth_hmacsha256_BYTES])
{
    return &s_token_cache[((unsigned)digest[0] << 8 | digest[1]) % TOKEN_CACHE_SLOTS];
}

static int s_unauthorized(http_req_t *req, const char *message, int invalid)
{
    req->www_authenticate =
        invalid ? "Bearer realm=\"berth\", error=\"invalid_token\"" : "Bearer realm=\"berth\"";
    http_error(req, "UNAUTHORIZED", message);
    return -1;
}

/* The token a request carries: the Authorization header's bearer token, or without that
   header the portal's session cookie (*from_cookie 1). NULL when neither is there; "" when
   the header is not a Bearer one. */
static const char *s_request_token(http_req_t *req, int *from_cookie)
{
    *from_cookie = 0;
    const char *header = http_header(req, "Authorization");
    if (!header) {
        const char *cookie =
            MHD_lookup_connection_value(req->connection, MHD_COOKIE_KIND, AUTH_SESSION_COOKIE);
        *from_cookie = cookie != NULL;
        return cookie;
    }
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return "";
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    return token;
}

/* The anti-CSRF token of a session token (base64url of an HMAC under the token key, with
   its own label): the gateway recomputes it, so it is stored nowhere. */
#define CSRF_TEXT_MAX 48
static void s_csrf(const gateway_t *gw, const char *token, char out[CSRF_TEXT_MAX])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, gw->token_key, sizeof gw->token_key);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"berth-csrf-v1", 14);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)token, strlen(token));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2base64(out, CSRF_TEXT_MAX, mac, sizeof mac,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static int s_authenticate_token(http_req_t *req, const char *token);

int auth_authenticate(http_req_t *req)
{
    int from_cookie;
    const char *token = s_request_token(req, &from_cookie);
    if (!token)
        return s_unauthorized(req, "missing Authorization: Bearer token", 0);
    if (!*token && !from_cookie)
        return s_unauthorized(req, "Authorization must be a Bearer token", 0);
    /* A session cookie holds a token, never an API key. */
    if (from_cookie && apikey_is(token))
        return s_unauthorized(req, "invalid or expired token", 1);
    if (s_authenticate_token(req, token) != 0)
        return -1;
    /* A browser sends the cookie with any request to the gateway, whoever made the page;
       only the portal's own pages can read berth_csrf and send the header that matches. */
    if (from_cookie && !streq(req->method, "GET") && !streq(req->method, "HEAD")) {
        char expected[CSRF_TEXT_MAX];
        s_csrf(req->app, token, expected);
        const char *sent = http_header(req, AUTH_CSRF_HEADER);
        if (!sent || strlen(sent) != strlen(expected) ||
            sodium_memcmp(sent, expected, strlen(expected)) != 0) {
            log_warn(req->request_id, "session call without a valid anti-CSRF token refused",
                     "{s:s, s:s, s:s}", "user", req->user, "method", req->method, "path",
                     req->path);
            http_error(req, "FORBIDDEN",
                       "a state-changing call with the session cookie needs the X-CSRF-Token "
                       "header the sign-in gave");
            return -1;
        }
    }
    return 0;
}

static int s_authenticate_token(http_req_t *req, const char *token)
{
    size_t len = strlen(token);
    /* Only what we could have issued reaches Redis. */
    if (len == 0 || len > TOKEN_TEXT_MAX ||
        strspn(token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != len)
        return s_unauthorized(req, "invalid or expired token", 1);
    if (apikey_is(token))
        return apikey_authenticate(req, token);
    gateway_t *gw = req->app;
    char key[128];
    unsigned char digest[crypto_auth_hmacsha256_BYTES];
    s_token_key(gw, key, sizeof key, token, digest);
    s_cached_token_t *slot = s_cache_slot(digest);
    uint64_t revocations = atomic_load_explicit(&s_revocations, memory_order_acquire);
    if (slot->checked_ms && util_mono_ms() - slot->checked_ms < gw->token_cache_ms &&
        slot->revocations == revocations &&
        sodium_memcmp(slot->digest, digest, sizeof digest) == 0) {
        if (slot->expires_ms <= util_now_ms()) {
            slot->checked_ms = 0;
            return s_unauthorized(req, "invalid or expired token", 1);
        }
        util_strlcpy(req->user, slot->user, sizeof req->user);
        util_strlcpy(req->role, slot->role, sizeof req->role);
        return 0;
    }
    redisReply *r = store_command(req->store, "HMGET %s user role expires_ms mac epoch", key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    int64_t expires = 0;
    int ok = r->element[0]->type == REDIS_REPLY_STRING &&
             r->element[1]->type == REDIS_REPLY_STRING &&
             r->element[2]->type == REDIS_REPLY_STRING &&
             util_parse_int(r->element[2]->str, 0, INT64_MAX, &expires) == 0 &&
             expires > util_now_ms() && auth_username_ok(r->element[0]->str) &&
             strlen(r->element[1]->str) < HTTP_ROLE_MAX &&
             r->element[3]->type == REDIS_REPLY_STRING &&
             strlen(r->element[3]->str) == MAC_HEX - 1 &&
             r->element[4]->type == REDIS_REPLY_STRING;
    if (ok) {
        /* Only a record the gateway wrote, unchanged, vouches for the token. */
        char mac[MAC_HEX];
        s_token_mac(gw, mac, key, r->element[0]->str, r->element[1]->str, r->element[2]->str,
                    r->element[4]->str);
        ok = sodium_memcmp(mac, r->element[3]->str, MAC_HEX - 1) == 0;
        if (!ok)
            log_warn(req->request_id, "token record with a wrong MAC: not written by a gateway",
                     "{s:s}", "key", key);
    }
    s_user_t u;
    if (ok) {
        /* The token's user must still exist, be active, hold a record a gateway wrote and be
           in the epoch the token was issued in (a password change starts a new one). */
        int found = s_user_read(gw, req->store, req->request_id, r->element[0]->str, &u);
        if (found < 0) {
            freeReplyObject(r);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return -1;
        }
        ok = found && u.valid && !streq(u.state, USER_DISABLED) &&
             streq(u.epoch, r->element[4]->str);
    }
    if (ok) {
        /* The role is the user's now, not the one the token was issued with. */
        util_strlcpy(req->user, u.name, sizeof req->user);
        util_strlcpy(req->role, u.role, sizeof req->role);
        if (gw->token_cache_ms > 0) {
            memcpy(slot->digest, digest, sizeof digest);
            slot->expires_ms = expires;
            util_strlcpy(slot->user, req->user, sizeof slot->user);
            util_strlcpy(slot->role, req->role, sizeof slot->role);
            slot->revocations = revocations;
            slot->checked_ms = util_mono_ms();
        }
    } else if (slot->checked_ms && sodium_memcmp(slot->digest, digest, sizeof digest) == 0)
        slot->checked_ms = 0; /* Redis no longer vouches for it */
    freeReplyObject(r);
    if (!ok)
        return s_unauthorized(req, "invalid or expired token", 1);
    return 0;
}

int auth_user_usable(http_req_t *req, const char *name, char role[HTTP_ROLE_MAX])
{
    s_user_t u;
    int found = s_user_read(req->app, req->store, req->request_id, name, &u);
    if (found < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    if (!found || !u.valid || streq(u.state, USER_DISABLED))
        return 0;
    util_strlcpy(role, u.role, HTTP_ROLE_MAX);
    return 1;
}

/* One step of auth_login_throttle.lua on the counter of kind for id. 1 refused (*wait_ms
   set), 0 allowed, -1 Redis failed. */
static int s_throttle(http_req_t *req, keys_kind_t kind, const char *id, const char *mode,
                      int limit, int64_t *wait_ms)
{
    gateway_t *gw = req->app;
    char key[KEYS_MAX], limit_text[24], window_text[24];
    keys_build(key, kind, id, NULL);
    snprintf(limit_text, sizeof limit_text, "%d", limit);
    snprintf(window_text, sizeof window_text, "%lld", (long long)gw->login_window_ms);
    const char *argv[] = { key, mode, limit_text, window_text };
    redisReply *r = store_run(req->store, &lua_auth_login_throttle, 1, 4, argv);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        rc = r->element[0]->integer != 0;
        *wait_ms = r->element[1]->integer;
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

/* Is a sign-in for user (NULL: malformed, not counted by name) from address refused, or does
   a failure (fail 1) reach a limit? 1 with the 429 (or 503) answered, 0 go on. */
static int s_login_throttled(http_req_t *req, const char *user, const char *address, int fail)
{
    gateway_t *gw = req->app;
    const char *mode = fail ? "fail" : "check";
    int64_t wait_user = 0, wait_address = 0;
    int by_user =
        user ? s_throttle(req, KEYS_LOGIN_FAIL_USER, user, mode, gw->login_user_max, &wait_user)
             : 0;
    int by_address = by_user < 0 ? -1
                                 : s_throttle(req, KEYS_LOGIN_FAIL_ADDR, address, mode,
                                              gw->login_address_max, &wait_address);
    if (by_user < 0 || by_address < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return 1;
    }
    if (fail || (!by_user && !by_address))
        return 0; /* a failure that reaches a limit still answers 401; the next try 429 */
    int64_t wait_ms = wait_user > wait_address ? wait_user : wait_address;
    req->retry_after = (int)((wait_ms + 999) / 1000);
    if (req->retry_after < 1)
        req->retry_after = 1;
    log_warn(req->request_id, "sign-in refused: too many failed attempts", "{s:s, s:s, s:s}",
             "user", user ? user : "(malformed)", "address", address, "limit",
             by_user ? "user" : "address");
    char message[128];
    snprintf(message, sizeof message, "too many failed sign-ins for this %s; retry after %d s",
             by_user ? "username" : "address", req->retry_after);
    http_error_details(req, "RATE_LIMITED", message,
                       json_pack("{s:s}", "limit", by_user ? "login_user" : "login_address"));
    return 1;
}

/* Issue a token for user u (a valid record) and answer 201 with it (extra: more fields of
   the answer, taken; may be NULL). */
static void s_issue_token(http_req_t *req, const s_user_t *u, json_t *extra, int session)
{
    gateway_t *gw = req->app;
    unsigned char raw[TOKEN_BYTES];
    char token[TOKEN_TEXT_MAX + 1];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(token, sizeof token, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    char key[128], expires_text[32], ttl_text[32], mac[MAC_HEX];
    s_token_key(gw, key, sizeof key, token, NULL);
    int64_t expires = util_now_ms() + gw->token_ttl_ms;
    snprintf(expires_text, sizeof expires_text, "%lld", (long long)expires);
    snprintf(ttl_text, sizeof ttl_text, "%lld", (long long)gw->token_ttl_ms);
    s_token_mac(gw, mac, key, u->name, u->role, expires_text, u->epoch);
    const char *argv[] = { key, u->name, u->role, expires_text, ttl_text, mac, u->epoch };
    redisReply *r = store_run(req->store, &lua_auth_store_token, 1, 7, argv);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        sodium_memzero(token, sizeof token);
        json_decref(extra);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    log_info(req->request_id, session ? "session opened" : "token issued", "{s:s, s:s}", "user",
             u->name, "role", u->role);
    char iso[REST_TIME_MAX];
    rest_iso(expires, iso);
    json_t *body = json_pack("{s:s, s:s, s:s}", "expires_at", iso, "user", u->name, "role",
                             u->role);
    if (session) {
        /* The token goes only into the HttpOnly cookie: no script of the page can read it. */
        char csrf[CSRF_TEXT_MAX];
        s_csrf(gw, token, csrf);
        long long max_age = (long long)(gw->token_ttl_ms / 1000);
        const char *secure = gw->tls ? "; Secure" : "";
        snprintf(req->set_cookie[0], sizeof req->set_cookie[0],
                 "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Strict%s", AUTH_SESSION_COOKIE,
                 token, max_age, secure);
        snprintf(req->set_cookie[1], sizeof req->set_cookie[1],
                 "%s=%s; Path=/; Max-Age=%lld; SameSite=Strict%s", AUTH_CSRF_COOKIE, csrf, max_age,
                 secure);
        json_object_set_new(body, "csrf_token", json_string(csrf));
        sodium_memzero(csrf, sizeof csrf);
    } else
        json_object_set_new(body, "token", json_string(token));
    if (extra)
        json_object_update(body, extra);
    json_decref(extra);
    http_json(req, 201, body);
    sodium_memzero(token, sizeof token);
}

/* Check password against user name for a sign-in or a password change, throttled per name and
   per client address. 1 verified (*u set), 0 refused or failed (the answer set). */
static int s_check_password(http_req_t *req, const char *name, const char *password, s_user_t *u)
{
    gateway_t *gw = req->app;
    char address[64];
    http_client_address(req, address, sizeof address);
    const char *counted = auth_username_ok(name) ? name : NULL;
    if (s_login_throttled(req, counted, address, 0))
        return 0;
    int found = counted ? s_user_read(gw, req->store, req->request_id, name, u) : 0;
    if (found < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return 0;
    }
    /* Same work either way: an unknown user is checked against the dummy hash. */
    int verified = s_verify(found ? u->password : gw->dummy_hash, password) && found &&
                   u->valid && !streq(u->state, USER_DISABLED);
    if (!verified) {
        log_info(req->request_id, "password check failed", "{s:s, s:s, s:s}", "user",
                 counted ? name : "(malformed)", "address", address, "action",
                 req->action ? req->action : "");
        if (!s_login_throttled(req, counted, address, 1))
            http_error(req, "UNAUTHORIZED", LOGIN_FAILED);
        return 0;
    }
    /* The name's failures are forgotten; the address's stay (they may be other names'). */
    int64_t ignored;
    if (s_throttle(req, KEYS_LOGIN_FAIL_USER, name, "clear", gw->login_user_max, &ignored) < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return 0;
    }
    return 1;
}

void auth_login(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "username", "password", "session", NULL };
    const char *user, *password;
    int session = 0;
    if (rest_body(req, allowed) || rest_str(req, "username", 1, 256, &user) ||
        rest_str(req, "password", 1, (size_t)gw->password_max, &password) ||
        rest_bool(req, "session", 0, &session) < 0)
        return;
    s_user_t u;
    if (s_check_password(req, user, password, &u))
        s_issue_token(req, &u, NULL, session);
}

/* ---- users: profile fields ---- */

/* Is text a display name: 1 to LIMIT_DISPLAY_NAME_MAX bytes, no control characters (JSON
   strings are valid UTF-8 already)? */
static int s_display_name_ok(const char *text)
{
    size_t len = strlen(text);
    if (len > LIMIT_DISPLAY_NAME_MAX)
        return 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

/* Is text an email address as people type them: local@domain, printable ASCII without
   spaces, one '@', a domain of dot-separated labels with at least one dot? ("" clears.) */
static int s_email_ok(const char *text)
{
    size_t len = strlen(text);
    if (len == 0)
        return 1;
    if (len > LIMIT_EMAIL_MAX)
        return 0;
    const char *at = strchr(text, '@');
    if (!at || at == text || strchr(at + 1, '@') || at - text > 64)
        return 0;
    for (const char *p = text; *p; p++)
        if (*p <= ' ' || *p >= 0x7f || strchr("()<>,;:\\\"[]", *p))
            return 0;
    const char *domain = at + 1;
    if (!strchr(domain, '.') || domain[0] == '.' || domain[0] == '-' ||
        text[len - 1] == '.' || strstr(domain, ".."))
        return 0;
    return strspn(domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
           strlen(domain);
}

/* rest_str for a field that "" clears: "" is accepted. */
static int s_text(http_req_t *req, const char *field, size_t max, const char **out)
{
    json_t *v = req->body ? json_object_get(req->body, field) : NULL;
    if (json_is_string(v) && json_string_length(v) == 0) {
        *out = "";
        return 0;
    }
    return rest_str(req, field, 0, max, out);
}

/* The optional display_name and email of the body: 0 (each NULL when absent), or -1 with a
   400 naming the field. */
static int s_profile(http_req_t *req, const char **display_name, const char **email)
{
    *display_name = *email = NULL;
    int rc = s_text(req, "display_name", LIMIT_DISPLAY_NAME_MAX, display_name);
    if (rc < 0)
        return -1;
    if (rc == 0 && !s_display_name_ok(*display_name))
        return http_bad_field(req, "display_name",
                              "display_name must be at most %d bytes without control characters",
                              LIMIT_DISPLAY_NAME_MAX);
    if (rc == 1)
        *display_name = NULL;
    rc = s_text(req, "email", LIMIT_EMAIL_MAX, email);
    if (rc < 0)
        return -1;
    if (rc == 0 && !s_email_ok(*email))
        return http_bad_field(req, "email",
                              "email must be an address like name@example.com (at most %d bytes)",
                              LIMIT_EMAIL_MAX);
    if (rc == 1)
        *email = NULL;
    return 0;
}

/* A user as the API shows them (memberships: the user's group id -> role, or NULL to leave
   them out; taken). */
static json_t *s_user_view(const s_user_t *u, json_t *memberships)
{
    json_t *v = json_pack("{s:s, s:o, s:o, s:s, s:s, s:o}", "username", u->name, "display_name",
                          view_str(u->display_name), "email", view_str(u->email), "role", u->role,
                          "state", u->state, "created_at", rest_time(u->created_ms));
    if (!u->valid)
        json_object_set_new(v, "integrity", json_string("INVALID"));
    if (memberships)
        json_object_set_new(v, "groups", memberships);
    return v;
}

static int s_role_ok(const char *role)
{
    return streq(role, "user") || streq(role, "operator") || streq(role, "admin");
}

void auth_create_user(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "username", "password",     "role",
                                           "email",    "display_name", NULL };
    const char *user, *password, *role = "user", *display_name, *email;
    if (rest_body(req, allowed) || rest_str(req, "username", 1, HTTP_USER_MAX - 1, &user) ||
        rest_str(req, "password", 1, (size_t)gw->password_max, &password) ||
        rest_str(req, "role", 0, HTTP_ROLE_MAX - 1, &role) < 0 ||
        s_profile(req, &display_name, &email))
        return;
    if (!auth_username_ok(user)) {
        http_bad_field(req, "username",
                       "username must be 1 to 64 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit");
        return;
    }
    if (!s_role_ok(role)) {
        http_bad_field(req, "role", "role must be \"user\", \"operator\" or \"admin\"");
        return;
    }
    if (strlen(password) < (size_t)gw->password_min) {
        http_bad_field(req, "password", "password must be at least %d characters",
                       gw->password_min);
        return;
    }
    s_user_t u = { .valid = 1, .created_ms = clock_now_ms() };
    util_strlcpy(u.name, user, sizeof u.name);
    util_strlcpy(u.role, role, sizeof u.role);
    util_strlcpy(u.state, USER_ACTIVE, sizeof u.state);
    util_strlcpy(u.display_name, display_name ? display_name : "", sizeof u.display_name);
    util_strlcpy(u.email, email ? email : "", sizeof u.email);
    user_record_epoch(u.epoch);
    if (s_hash(u.password, password) != 0) {
        http_error(req, "INTERNAL", "cannot hash the password");
        return;
    }
    char created[32], answer[16];
    snprintf(created, sizeof created, "%lld", (long long)u.created_ms);
    s_power_t p;
    s_power(gw, &p, u.name, u.password, u.role, u.state, u.epoch);
    const char *pairs[18] = { "name",         u.name,         "created_ms", created,
                              "display_name", u.display_name, "email",      u.email };
    memcpy(pairs + 8, p.pairs, sizeof p.pairs);
    if (s_user_put(req->store, "create", NULL, user, 18, pairs, answer, sizeof answer) != 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (streq(answer, "TAKEN")) {
        http_error(req, "CONFLICT", "a user with this name already exists");
        return;
    }
    log_info(req->request_id, "user created", "{s:s, s:s, s:s}", "user", user, "role", role, "by",
             req->user);
    http_json(req, 201, json_pack("{s:o}", "user", s_user_view(&u, NULL)));
}

void auth_logout(http_req_t *req)
{
    /* auth_authenticate has accepted this token (header or cookie): it is well formed. */
    int from_cookie;
    const char *token = s_request_token(req, &from_cookie);
    if (apikey_is(token)) {
        http_error(req, "BAD_REQUEST",
                    "this is an API key, not a token: revoke it with DELETE /v1/auth/keys/{id}");
        return;
    }
    char key[128];
    unsigned char digest[crypto_auth_hmacsha256_BYTES];
    s_token_key(req->app, key, sizeof key, token, digest);
    redisReply *r = store_command(req->store, "DEL %s", key);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    atomic_fetch_add_explicit(&s_revocations, 1, memory_order_release);
    s_cached_token_t *slot = s_cache_slot(digest);
    if (sodium_memcmp(slot->digest, digest, sizeof digest) == 0)
        slot->checked_ms = 0;
    if (from_cookie) {
        /* The browser forgets the session too. */
        gateway_t *gw = req->app;
        const char *secure = gw->tls ? "; Secure" : "";
        snprintf(req->set_cookie[0], sizeof req->set_cookie[0],
                 "%s=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict%s", AUTH_SESSION_COOKIE,
                 secure);
        snprintf(req->set_cookie[1], sizeof req->set_cookie[1],
                 "%s=; Path=/; Max-Age=0; SameSite=Strict%s", AUTH_CSRF_COOKIE, secure);
    }
    log_info(req->request_id, "token revoked (logout)", "{s:s}", "user", req->user);
    http_json(req, 200, json_pack("{s:s, s:b}", "user", req->user, "revoked", 1));
}

/* Is the caller the user named, or an admin? Otherwise the user is answered as not found
   (404: the existence of other users is not told). 1 or 0 (answered). */
static int s_self_or_admin(http_req_t *req, const char *name)
{
    if (auth_username_ok(name) && (rest_is_admin(req) || streq(name, req->user)))
        return 1;
    http_error(req, "NOT_FOUND", "no such user");
    return 0;
}

void auth_update_user(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "state", "role", "display_name", "email", NULL };
    const char *name = req->params[0], *state = NULL, *role = NULL, *display_name, *email;
    if (!s_self_or_admin(req, name))
        return;
    int has_state, has_role;
    if (rest_body(req, allowed) || (has_state = rest_str(req, "state", 0, 16, &state)) < 0 ||
        (has_role = rest_str(req, "role", 0, HTTP_ROLE_MAX - 1, &role)) < 0 ||
        s_profile(req, &display_name, &email))
        return;
    if (has_state == 0 && !streq(state, USER_ACTIVE) && !streq(state, USER_DISABLED)) {
        http_bad_field(req, "state", "state must be \"ACTIVE\" or \"DISABLED\"");
        return;
    }
    if (has_role == 0 && !s_role_ok(role)) {
        http_bad_field(req, "role", "role must be \"user\", \"operator\" or \"admin\"");
        return;
    }
    if ((has_state == 0 || has_role == 0) && !rest_is_admin(req)) {
        http_error_details(req, "FORBIDDEN", "only an admin sets a user's state or role",
                           json_pack("{s:s}", "field", has_state == 0 ? "state" : "role"));
        return;
    }
    if (has_state == 0 && streq(state, USER_DISABLED) && streq(name, req->user)) {
        http_error(req, "CONFLICT", "you cannot disable yourself");
        return;
    }
    /* Read, check, write while the record is the one read (its MAC): twice at most. */
    for (int attempt = 0; attempt < 3; attempt++) {
        s_user_t u;
        int found = s_user_read(gw, req->store, req->request_id, name, &u);
        if (found < 0) {
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        if (!found) {
            http_error(req, "NOT_FOUND", "no such user");
            return;
        }
        if (!u.valid) {
            http_error_details(req, "CONFLICT",
                               "the user's record fails its integrity check: recreate the user",
                               json_pack("{s:s}", "user", name));
            return;
        }
        if (has_state == 0)
            util_strlcpy(u.state, state, sizeof u.state);
        if (has_role == 0)
            util_strlcpy(u.role, role, sizeof u.role);
        if (display_name)
            util_strlcpy(u.display_name, display_name, sizeof u.display_name);
        if (email)
            util_strlcpy(u.email, email, sizeof u.email);
        char expected[USER_RECORD_MAC_HEX], answer[16];
        util_strlcpy(expected, u.mac, sizeof expected);
        s_power_t p;
        s_power(gw, &p, u.name, u.password, u.role, u.state, u.epoch);
        util_strlcpy(u.mac, p.mac, sizeof u.mac);
        const char *pairs[14] = { "display_name", u.display_name, "email", u.email };
        memcpy(pairs + 4, p.pairs, sizeof p.pairs);
        if (s_user_put(req->store, "update", expected, name, 14, pairs, answer, sizeof answer)) {
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        if (streq(answer, "CHANGED"))
            continue;
        if (streq(answer, "NO_USER")) {
            http_error(req, "NOT_FOUND", "no such user");
            return;
        }
        if (streq(answer, "LAST_ADMIN")) {
            http_error(req, "CONFLICT", "the platform's last active admin stays an active admin");
            return;
        }
        if (has_state == 0 || has_role == 0)
            atomic_fetch_add_explicit(&s_revocations, 1, memory_order_release);
        log_info(req->request_id, "user changed", "{s:s, s:s, s:s, s:s}", "user", name, "state",
                 u.state, "role", u.role, "by", req->user);
        http_json(req, 200, json_pack("{s:o}", "user", s_user_view(&u, NULL)));
        return;
    }
    http_error(req, "CONFLICT", "the user changed while being updated; try again");
}

/* The user's group roles (berth:user-groups:<name>) as [{group, role}], or NULL (503 set). */
static json_t *s_memberships(http_req_t *req, const char *name)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGETALL %s", keys_build(key, KEYS_USER_GROUPS, name, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    json_t *list = json_array();
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            json_array_append_new(list, json_pack("{s:s, s:s}", "group", r->element[i]->str,
                                                  "role", r->element[i + 1]->str));
    freeReplyObject(r);
    return list;
}

void auth_get_user(http_req_t *req)
{
    gateway_t *gw = req->app;
    const char *name = req->params[0];
    if (!s_self_or_admin(req, name))
        return;
    s_user_t u;
    int found = s_user_read(gw, req->store, req->request_id, name, &u);
    if (found < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (!found) {
        http_error(req, "NOT_FOUND", "no such user");
        return;
    }
    json_t *groups = s_memberships(req, name);
    if (groups)
        http_json(req, 200, json_pack("{s:o}", "user", s_user_view(&u, groups)));
}

/* Does the user match the list's filters (NULL: any)? */
static int s_user_matches(const s_user_t *u, const char *state, const char *role)
{
    return (!state || streq(u->state, state)) && (!role || streq(u->role, role));
}

void auth_list_users(http_req_t *req)
{
    gateway_t *gw = req->app;
    const char *text = http_query(req, "limit"), *marker = http_query(req, "marker"),
               *state = http_query(req, "state"), *role = http_query(req, "role"),
               *prefix = http_query(req, "name");
    int64_t limit = gw->list_default;
    if (text && util_parse_int(text, 1, gw->list_max, &limit) != 0) {
        http_bad_field(req, "limit", "limit must be an integer from 1 to %d", gw->list_max);
        return;
    }
    if (marker && !auth_username_ok(marker)) {
        http_bad_field(req, "marker", "marker is not a user name");
        return;
    }
    if (state && !streq(state, USER_ACTIVE) && !streq(state, USER_DISABLED)) {
        http_bad_field(req, "state", "state must be ACTIVE or DISABLED");
        return;
    }
    if (role && !s_role_ok(role)) {
        http_bad_field(req, "role", "role must be user, operator or admin");
        return;
    }
    if (prefix && (!*prefix || (!auth_username_ok(prefix)))) {
        http_bad_field(req, "name", "name is the start of a user name: letters, digits, '.', "
                                    "'_' or '-'");
        return;
    }
    /* Names in order from just after the marker (or from the prefix), a chunk at a time,
       until the page is full, the prefix ends or list_scan_max names were looked at. */
    char from[HTTP_USER_MAX + 2], to[HTTP_USER_MAX + 4], last[HTTP_USER_MAX] = "";
    snprintf(from, sizeof from, marker ? "(%s" : prefix ? "[%s" : "-",
             marker ? marker : prefix ? prefix : "");
    if (marker && prefix && strcmp(marker, prefix) < 0)
        snprintf(from, sizeof from, "[%s", prefix);
    if (prefix)
        snprintf(to, sizeof to, "[%s\xff", prefix);
    else
        snprintf(to, sizeof to, "+");
    json_t *users = json_array();
    int64_t seen = 0;
    int at_end = 0, more = 0;
    while (!at_end && (int64_t)json_array_size(users) < limit && seen < gw->scan_max) {
        redisReply *r = store_command(req->store, "ZRANGEBYLEX %s %s %s LIMIT 0 %lld", KEYS_USERS,
                                      from, to, (long long)(limit + 1));
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            if (r)
                freeReplyObject(r);
            json_decref(users);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        at_end = r->elements <= (size_t)limit;
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING || !auth_username_ok(r->element[i]->str))
                continue;
            if ((int64_t)json_array_size(users) >= limit) {
                more = 1; /* a name after the full page: there is a next page */
                at_end = 1;
                break;
            }
            seen++;
            util_strlcpy(last, r->element[i]->str, sizeof last);
            snprintf(from, sizeof from, "(%s", last);
            s_user_t u;
            int found = s_user_read(gw, req->store, req->request_id, last, &u);
            if (found < 0) {
                freeReplyObject(r);
                json_decref(users);
                http_error(req, "UNAVAILABLE", "state store unreachable");
                return;
            }
            if (found && s_user_matches(&u, state, role))
                json_array_append_new(users, s_user_view(&u, NULL));
        }
        freeReplyObject(r);
    }
    /* Page full with more after it, or the scan budget spent: go on after the last name. */
    json_t *next = (more || !at_end) && last[0] ? json_string(last) : json_null();
    http_json(req, 200, json_pack("{s:o, s:o}", "users", users, "next_marker", next));
}

void auth_delete_user(http_req_t *req)
{
    const char *name = req->params[0];
    if (!auth_username_ok(name)) {
        http_error(req, "NOT_FOUND", "no such user");
        return;
    }
    if (streq(name, req->user)) {
        http_error(req, "CONFLICT", "you cannot delete yourself");
        return;
    }
    char user_key[KEYS_MAX], apikeys_key[KEYS_MAX], groups_key[KEYS_MAX], now[32];
    keys_build(user_key, KEYS_USER, name, NULL);
    keys_build(apikeys_key, KEYS_USER_APIKEYS, name, NULL);
    keys_build(groups_key, KEYS_USER_GROUPS, name, NULL);
    /* Read the user's keys and groups, then delete while they are still those: a few tries. */
    for (int attempt = 0; attempt < 3; attempt++) {
        redisReply *ids = store_command(req->store, "ZRANGE %s 0 -1", apikeys_key);
        redisReply *groups = store_command(req->store, "HKEYS %s", groups_key);
        if (!ids || ids->type != REDIS_REPLY_ARRAY || !groups ||
            groups->type != REDIS_REPLY_ARRAY) {
            if (ids)
                freeReplyObject(ids);
            if (groups)
                freeReplyObject(groups);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        size_t nk = ids->elements, ng = groups->elements, n = 6 + nk + ng;
        const char **argv = calloc(n + 5 + ng, sizeof *argv);
        char(*keys)[KEYS_MAX] = calloc(nk + ng + 1, KEYS_MAX);
        char nk_text[24], ng_text[24];
        snprintf(nk_text, sizeof nk_text, "%zu", nk);
        snprintf(ng_text, sizeof ng_text, "%zu", ng);
        snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
        redisReply *r = NULL;
        if (argv && keys) {
            const char *head[] = { user_key, KEYS_USERS, KEYS_ADMINS, apikeys_key, groups_key,
                                   KEYS_EVENTS };
            memcpy(argv, head, sizeof head);
            for (size_t i = 0; i < nk; i++)
                argv[6 + i] = keys_build(keys[i], KEYS_APIKEY,
                                         ids->element[i]->type == REDIS_REPLY_STRING
                                             ? ids->element[i]->str
                                             : "-",
                                         NULL);
            for (size_t i = 0; i < ng; i++)
                argv[6 + nk + i] = keys_build(keys[nk + i], KEYS_GROUP_MEMBERS,
                                              groups->element[i]->type == REDIS_REPLY_STRING
                                                  ? groups->element[i]->str
                                                  : "-",
                                              NULL);
            const char *args[] = { name, nk_text, ng_text, now, req->user };
            memcpy(argv + n, args, sizeof args);
            for (size_t i = 0; i < ng; i++)
                argv[n + 5 + i] = groups->element[i]->type == REDIS_REPLY_STRING
                                      ? groups->element[i]->str
                                      : "-";
            r = store_run(req->store, &lua_auth_delete_user, (int)n, (int)(n + 5 + ng), argv);
        }
        free(argv);
        free(keys);
        freeReplyObject(ids);
        freeReplyObject(groups);
        if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) {
            if (r)
                freeReplyObject(r);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        char answer[16];
        util_strlcpy(answer, r->str, sizeof answer);
        freeReplyObject(r);
        if (streq(answer, "CHANGED"))
            continue;
        if (streq(answer, "NO_USER")) {
            http_error(req, "NOT_FOUND", "no such user");
            return;
        }
        if (streq(answer, "LAST_ADMIN")) {
            http_error(req, "CONFLICT", "the platform's last active admin cannot be deleted");
            return;
        }
        /* Its tokens and keys are refused from now on (no record): at once here, within
           token_cache_ms on other gateways. */
        atomic_fetch_add_explicit(&s_revocations, 1, memory_order_release);
        perm_forget(name);
        if (sshkeys_forget(req->store, name, req->request_id) != 0)
            log_warn(req->request_id, "SSH keys of a deleted user left in place", "{s:s}", "user",
                     name);
        log_info(req->request_id, "user deleted", "{s:s, s:s, s:i, s:i}", "user", name, "by",
                 req->user, "api_keys", (int)nk, "memberships", (int)ng);
        http_json(req, 200, json_pack("{s:s, s:b}", "username", name, "deleted", 1));
        return;
    }
    http_error(req, "CONFLICT", "the user changed while being deleted; try again");
}

void auth_change_password(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "current", "new", NULL };
    const char *current, *fresh;
    if (rest_body(req, allowed) ||
        rest_str(req, "current", 1, (size_t)gw->password_max, &current) ||
        rest_str(req, "new", 1, (size_t)gw->password_max, &fresh))
        return;
    if (strlen(fresh) < (size_t)gw->password_min) {
        http_bad_field(req, "new", "password must be at least %d characters", gw->password_min);
        return;
    }
    s_user_t u;
    if (!s_check_password(req, req->user, current, &u))
        return;
    /* The new hash in a new epoch: every token of the old one is refused, this one too; the
       answer carries a token of the new epoch in its place. */
    char expected[USER_RECORD_MAC_HEX], answer[16];
    util_strlcpy(expected, u.mac, sizeof expected);
    if (s_hash(u.password, fresh) != 0) {
        http_error(req, "INTERNAL", "cannot hash the password");
        return;
    }
    user_record_epoch(u.epoch);
    s_power_t p;
    s_power(gw, &p, u.name, u.password, u.role, u.state, u.epoch);
    util_strlcpy(u.mac, p.mac, sizeof u.mac);
    if (s_user_put(req->store, "update", expected, u.name, 10, p.pairs, answer, sizeof answer)) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (!streq(answer, "OK")) {
        http_error(req, "CONFLICT", "the user changed meanwhile; try again");
        return;
    }
    atomic_fetch_add_explicit(&s_revocations, 1, memory_order_release);
    log_info(req->request_id, "password changed: the user's other tokens revoked", "{s:s}", "user",
             u.name);
    s_issue_token(req, &u, json_pack("{s:b}", "password_changed", 1), 0);
}

int auth_token_key(http_req_t *req, char *buf, size_t size)
{
    int from_cookie;
    const char *token = s_request_token(req, &from_cookie);
    if (!token || !*token)
        return -1;
    s_token_key(req->app, buf, size, token, NULL);
    return 0;
}
