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

    A user's state (ACTIVE, or DISABLED by an admin: PATCH /v1/users/{name}) is read with
    each token check that reaches Redis: a disabled or deleted user's tokens are refused, at
    once on the gateway that disabled it (the revocation count again), and a disabled user
    cannot sign in. */
#include "gateway.h"
#include "clock.h"
#include "keys.h"
#include "lua_scripts.h"

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

/* Create user name. 1 created, 0 the name is taken, -1 Redis failed. */
static int s_create(store_t *store, const char *name, const char *role, const char *hash,
                    int64_t created_ms)
{
    char key[128], created[32];
    s_user_key(key, sizeof key, name);
    snprintf(created, sizeof created, "%lld", (long long)created_ms);
    const char *argv[] = { key, name, role, hash, created };
    redisReply *r = store_run(store, &lua_auth_create_user, 1, 5, argv);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "user creation failed in Redis", "{s:s, s:s}", "user", name, "reason",
                 r->str);
    if (r)
        freeReplyObject(r);
    return rc;
}

/* The stored password hash and role of a user. 1 found, 0 no such user, -1 Redis failed.
   hash and role are written only when found. */
static int s_lookup_state(store_t *store, const char *name, char hash[crypto_pwhash_STRBYTES],
                          char role[HTTP_ROLE_MAX], int *disabled)
{
    char key[128];
    s_user_key(key, sizeof key, name);
    redisReply *r = store_command(store, "HMGET %s password role state", key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int found = r->element[0]->type == REDIS_REPLY_STRING;
    if (found) {
        util_strlcpy(hash, r->element[0]->str, crypto_pwhash_STRBYTES);
        util_strlcpy(role, r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "user",
                     HTTP_ROLE_MAX);
        *disabled =
            r->element[2]->type == REDIS_REPLY_STRING && streq(r->element[2]->str, USER_DISABLED);
    }
    freeReplyObject(r);
    return found;
}

/* s_lookup_state without the state (the bootstrap admin is checked whatever its state). */
static int s_lookup(store_t *store, const char *name, char hash[crypto_pwhash_STRBYTES],
                    char role[HTTP_ROLE_MAX])
{
    int disabled = 0;
    return s_lookup_state(store, name, hash, role, &disabled);
}

int auth_bootstrap(gateway_t *gw, store_t *store, const char *user, const char *password)
{
    (void)gw;
    char hash[crypto_pwhash_STRBYTES], role[HTTP_ROLE_MAX];
    /* Twice at most: a second gateway may create the admin between our look and our write. */
    for (int attempt = 0; attempt < 2; attempt++) {
        int found = s_lookup(store, user, hash, role);
        if (found < 0) {
            log_warn(NULL, "cannot bootstrap the admin user yet: state store unreachable", "{s:s}",
                     "user", user);
            return -1;
        }
        if (found && s_verify(hash, password) && streq(role, "admin") &&
            crypto_pwhash_str_needs_rehash(hash, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                           crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0) {
            log_info(NULL, "admin user present", "{s:s}", "user", user);
            return 0;
        }
        char fresh[crypto_pwhash_STRBYTES];
        if (s_hash(fresh, password) != 0) {
            log_error(NULL, "cannot hash the admin password (out of memory?)", "{s:s}", "user",
                      user);
            return -1;
        }
        if (found) {
            /* The configured password no longer verifies (or the role or hash parameters
               changed): the operator's config is the authority, so it replaces what is
               stored. */
            char key[128];
            s_user_key(key, sizeof key, user);
            redisReply *r = store_command(store, "HSET %s password %s role admin", key, fresh);
            int ok = r && r->type == REDIS_REPLY_INTEGER;
            if (r)
                freeReplyObject(r);
            if (!ok) {
                log_warn(NULL, "cannot reset the admin user's password yet", "{s:s}", "user", user);
                return -1;
            }
            log_warn(NULL, "admin user's password or role reset from the configuration", "{s:s}",
                     "user", user);
            return 0;
        }
        int created = s_create(store, user, "admin", fresh, clock_now_ms());
        if (created < 0) {
            log_warn(NULL, "cannot create the admin user yet", "{s:s}", "user", user);
            return -1;
        }
        if (created) {
            log_info(NULL, "admin user created", "{s:s}", "user", user);
            return 0;
        }
    }
    log_warn(NULL, "admin user changed under us while bootstrapping; will retry", "{s:s}", "user",
             user);
    return -1;
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

/* The MAC of a token record (hex into out): its key, user, role and expiry, each with its
   NUL so that no two different records read the same. */
static void s_token_mac(const gateway_t *gw, char out[MAC_HEX], const char *key, const char *user,
                        const char *role, const char *expires)
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, gw->token_key, sizeof gw->token_key);
    const char *parts[] = { "berth-token-v1", key, user, role, expires };
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

int auth_authenticate(http_req_t *req)
{
    const char *header = http_header(req, "Authorization");
    if (!header)
        return s_unauthorized(req, "missing Authorization: Bearer token", 0);
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return s_unauthorized(req, "Authorization must be a Bearer token", 0);
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    /* Only what we could have issued reaches Redis. */
    if (len == 0 || len > TOKEN_TEXT_MAX ||
        strspn(token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != len)
        return s_unauthorized(req, "invalid or expired token", 1);
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
    redisReply *r = store_command(req->store, "HMGET %s user role expires_ms mac", key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
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
             r->element[3]->type == REDIS_REPLY_STRING && strlen(r->element[3]->str) == MAC_HEX - 1;
    if (ok) {
        /* Only a record the gateway wrote, unchanged, vouches for the token. */
        char mac[MAC_HEX];
        s_token_mac(gw, mac, key, r->element[0]->str, r->element[1]->str, r->element[2]->str);
        ok = sodium_memcmp(mac, r->element[3]->str, MAC_HEX - 1) == 0;
        if (!ok)
            log_warn(req->request_id, "token record with a wrong MAC: not written by a gateway",
                     "{s:s}", "key", key);
    }
    if (ok) {
        /* The token's user must still exist and be active (disabled or deleted: refused). */
        char user_key[128];
        s_user_key(user_key, sizeof user_key, r->element[0]->str);
        redisReply *u = store_command(req->store, "HMGET %s role state", user_key);
        if (!u || u->type != REDIS_REPLY_ARRAY || u->elements != 2) {
            if (u)
                freeReplyObject(u);
            freeReplyObject(r);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return -1;
        }
        ok = u->element[0]->type == REDIS_REPLY_STRING &&
             !(u->element[1]->type == REDIS_REPLY_STRING &&
               streq(u->element[1]->str, USER_DISABLED));
        freeReplyObject(u);
    }
    if (ok) {
        util_strlcpy(req->user, r->element[0]->str, sizeof req->user);
        util_strlcpy(req->role, r->element[1]->str, sizeof req->role);
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

void auth_login(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "username", "password", NULL };
    const char *user, *password;
    if (rest_body(req, allowed) || rest_str(req, "username", 1, 256, &user) ||
        rest_str(req, "password", 1, (size_t)gw->password_max, &password))
        return;

    char address[64];
    http_client_address(req, address, sizeof address);
    const char *counted = auth_username_ok(user) ? user : NULL;
    if (s_login_throttled(req, counted, address, 0))
        return;
    char hash[crypto_pwhash_STRBYTES], role[HTTP_ROLE_MAX];
    int disabled = 0;
    int found = counted ? s_lookup_state(req->store, user, hash, role, &disabled) : 0;
    if (found < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    /* Same work either way: an unknown user is checked against the dummy hash. */
    int verified = s_verify(found ? hash : gw->dummy_hash, password) && found && !disabled;
    if (!verified) {
        log_info(req->request_id, "login failed", "{s:s, s:s}", "user",
                 counted ? user : "(malformed)", "address", address);
        if (!s_login_throttled(req, counted, address, 1))
            http_error(req, "UNAUTHORIZED", LOGIN_FAILED);
        return;
    }
    /* The name's failures are forgotten; the address's stay (they may be other names'). */
    int64_t ignored;
    if (s_throttle(req, KEYS_LOGIN_FAIL_USER, user, "clear", gw->login_user_max, &ignored) < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }

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
    s_token_mac(gw, mac, key, user, role, expires_text);
    const char *argv[] = { key, user, role, expires_text, ttl_text, mac };
    redisReply *r = store_run(req->store, &lua_auth_store_token, 1, 6, argv);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        sodium_memzero(token, sizeof token);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    log_info(req->request_id, "token issued", "{s:s, s:s}", "user", user, "role", role);
    char iso[REST_TIME_MAX];
    rest_iso(expires, iso);
    http_json(req, 201,
              json_pack("{s:s, s:s, s:s, s:s}", "token", token, "expires_at", iso, "user", user,
                        "role", role));
    sodium_memzero(token, sizeof token);
}

void auth_create_user(http_req_t *req)
{
    gateway_t *gw = req->app;
    static const char *const allowed[] = { "username", "password", "role", NULL };
    const char *user, *password, *role = "user";
    if (rest_body(req, allowed) || rest_str(req, "username", 1, HTTP_USER_MAX - 1, &user) ||
        rest_str(req, "password", 1, (size_t)gw->password_max, &password) ||
        rest_str(req, "role", 0, HTTP_ROLE_MAX - 1, &role) < 0)
        return;
    if (!auth_username_ok(user)) {
        http_bad_field(req, "username",
                       "username must be 1 to 64 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit");
        return;
    }
    if (!streq(role, "user") && !streq(role, "operator") && !streq(role, "admin")) {
        http_bad_field(req, "role", "role must be \"user\", \"operator\" or \"admin\"");
        return;
    }
    if (strlen(password) < (size_t)gw->password_min) {
        http_bad_field(req, "password", "password must be at least %d characters",
                       gw->password_min);
        return;
    }
    char hash[crypto_pwhash_STRBYTES];
    if (s_hash(hash, password) != 0) {
        http_error(req, "INTERNAL", "cannot hash the password");
        return;
    }
    int64_t now = clock_now_ms();
    int created = s_create(req->store, user, role, hash, now);
    if (created < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (!created) {
        http_error(req, "CONFLICT", "a user with this name already exists");
        return;
    }
    log_info(req->request_id, "user created", "{s:s, s:s, s:s}", "user", user, "role", role, "by",
             req->user);
    http_json(req, 201,
              json_pack("{s:{s:s, s:s, s:o}}", "user", "username", user, "role", role, "created_at",
                        rest_time(now)));
}

void auth_logout(http_req_t *req)
{
    /* auth_authenticate has accepted this header: its token is well formed. */
    const char *token = http_header(req, "Authorization") + 7;
    while (*token == ' ')
        token++;
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
    log_info(req->request_id, "token revoked (logout)", "{s:s}", "user", req->user);
    http_json(req, 200, json_pack("{s:s, s:b}", "user", req->user, "revoked", 1));
}

void auth_update_user(http_req_t *req)
{
    static const char *const allowed[] = { "state", NULL };
    const char *state;
    const char *name = req->params[0];
    if (rest_body(req, allowed) || rest_str(req, "state", 1, 16, &state))
        return;
    if (!streq(state, USER_ACTIVE) && !streq(state, USER_DISABLED)) {
        http_bad_field(req, "state", "state must be \"ACTIVE\" or \"DISABLED\"");
        return;
    }
    if (!auth_username_ok(name)) {
        http_error(req, "NOT_FOUND", "no such user");
        return;
    }
    /* The caller is an active admin who cannot disable itself: one always remains. */
    if (streq(state, USER_DISABLED) && streq(name, req->user)) {
        http_error(req, "CONFLICT", "you cannot disable yourself");
        return;
    }
    char key[128];
    s_user_key(key, sizeof key, name);
    const char *argv[] = { key, state };
    redisReply *r = store_run(req->store, &lua_auth_set_user_state, 1, 2, argv);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (r->elements != 2) {
        freeReplyObject(r);
        http_error(req, "NOT_FOUND", "no such user");
        return;
    }
    if (streq(state, USER_DISABLED))
        atomic_fetch_add_explicit(&s_revocations, 1, memory_order_release);
    int64_t created = 0;
    if (r->element[1]->type == REDIS_REPLY_STRING)
        util_parse_int(r->element[1]->str, 0, INT64_MAX, &created);
    json_t *user =
        json_pack("{s:s, s:s, s:s, s:o}", "username", name, "role",
                  r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "user", "state",
                  state, "created_at", rest_time(created));
    freeReplyObject(r);
    log_info(req->request_id, "user state set", "{s:s, s:s, s:s}", "user", name, "state", state,
             "by", req->user);
    http_json(req, 200, json_pack("{s:o}", "user", user));
}
