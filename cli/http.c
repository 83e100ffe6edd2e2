/*  cli http: one request to the gateway with libcurl; the JSON error body of a failure is
    turned into one line on stderr. The bearer token goes only to the URL it was issued by.
    An https gateway's certificate and name are always verified (libcurl's defaults, never
    turned off), against cli->ca_file when given, or against a pin: the certificate's
    SHA-256, checked in the TLS handshake itself, before anything (a token) is sent. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define RESPONSE_MAX (64 * 1024 * 1024) /* a larger answer is not from our gateway */

typedef struct {
    char *data;
    size_t size;
} s_buffer_t;

static size_t s_collect(char *chunk, size_t size, size_t n, void *arg)
{
    s_buffer_t *buf = arg;
    size_t len = size * n;
    if (buf->size + len > RESPONSE_MAX)
        return 0;
    char *grown = realloc(buf->data, buf->size + len + 1);
    if (!grown)
        return 0;
    memcpy(grown + buf->size, chunk, len);
    buf->data = grown;
    buf->size += len;
    buf->data[buf->size] = '\0';
    return len;
}

int cli_pin_parse(cli_t *cli, const char *text)
{
    if (strncasecmp(text, "sha256:", 7) != 0)
        return -1;
    size_t n = 0;
    for (const char *p = text + 7; *p; p++) {
        if (*p == ':')
            continue;
        if (!isxdigit((unsigned char)*p) || n == 2 * sizeof cli->pin)
            return -1;
        int v = isdigit((unsigned char)*p) ? *p - '0' : tolower((unsigned char)*p) - 'a' + 10;
        cli->pin[n / 2] = (unsigned char)(n % 2 ? cli->pin[n / 2] | v : v << 4);
        n++;
    }
    if (n != 2 * sizeof cli->pin)
        return -1;
    cli->pinned = 1;
    return 0;
}

/* The pin the handshake checks against, and what the gateway presented instead (the CLI is
   one thread, one request at a time). */
static struct {
    const unsigned char *want;
    unsigned char seen[32];
    int mismatch;
} s_pin;

/* OpenSSL's verdict on each certificate of the chain: the gateway's own (depth 0) is
   trusted when it is the pinned one, whoever signed it, and refused otherwise, which ends
   the handshake. The host name is still checked by libcurl. */
static int s_pin_verify(int ok, X509_STORE_CTX *store)
{
    (void)ok;
    if (X509_STORE_CTX_get_error_depth(store) != 0)
        return 1; /* the chain above is what the pin replaces */
    unsigned int len = 0;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    if (!cert || !X509_digest(cert, EVP_sha256(), s_pin.seen, &len) || len != 32 ||
        CRYPTO_memcmp(s_pin.seen, s_pin.want, 32) != 0) {
        s_pin.mismatch = 1;
        return 0;
    }
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
}

static CURLcode s_pin_ctx(CURL *curl, void *ssl_ctx, void *arg)
{
    (void)curl;
    (void)arg;
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, s_pin_verify);
    return CURLE_OK;
}

static void s_hex(const unsigned char *bytes, char out[32 * 3])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 3 * i, 4, i < 31 ? "%02X:" : "%02X", bytes[i]);
}

/* The gateway's certificate checks of every exchange: the CA file, or the pin. CURLE_OK, or
   CURLE_NOT_BUILT_IN (said) when a pin cannot be checked by this libcurl. */
static CURLcode s_tls(cli_t *cli, CURL *curl)
{
    if (cli->ca_file)
        curl_easy_setopt(curl, CURLOPT_CAINFO, cli->ca_file);
    if (!cli->pinned)
        return CURLE_OK;
    memset(&s_pin, 0, sizeof s_pin);
    s_pin.want = cli->pin;
    /* No session reuse: every handshake shows its certificate to s_pin_verify. */
    curl_easy_setopt(curl, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    CURLcode res = curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, s_pin_ctx);
    if (res != CURLE_OK) {
        fprintf(stderr, "berth: --pin needs libcurl built with OpenSSL: %s\n",
                curl_easy_strerror(res));
        return CURLE_NOT_BUILT_IN;
    }
    return CURLE_OK;
}

/* Say why an exchange with the gateway failed (res is not CURLE_OK). */
static void s_report(cli_t *cli, CURLcode res)
{
    char want[32 * 3], seen[32 * 3];
    if (cli->pinned && s_pin.mismatch) {
        s_hex(s_pin.want, want);
        s_hex(s_pin.seen, seen);
        fprintf(stderr,
                "berth: the gateway at %s presented a certificate other than the pinned one "
                "(SHA-256 %s, --pin/BERTH_PIN wants %s): nothing was sent\n",
                cli->url, seen, want);
    } else if (res == CURLE_NOT_BUILT_IN)
        ; /* said by s_tls */
    else if (res == CURLE_PEER_FAILED_VERIFICATION || res == CURLE_SSL_CACERT_BADFILE)
        fprintf(stderr,
                "berth: the gateway at %s is not trusted: %s (give its certificate with "
                "--cacert FILE or BERTH_CA_FILE; make run prints where it is)\n",
                cli->url, curl_easy_strerror(res));
    else
        fprintf(stderr, "berth: cannot reach the gateway at %s: %s\n", cli->url,
                curl_easy_strerror(res));
}

/* Send what curl was set up for (method, URL, body) with the options every call shares: the
   headers, the answer collected into buf, connect timeout, no signals, HTTP(S) only, TLS as
   configured. Frees headers and curl; *code is the HTTP status (0: none). */
static CURLcode s_perform(cli_t *cli, CURL *curl, struct curl_slist *headers, s_buffer_t *buf,
                          long *code)
{
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, buf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode res = s_tls(cli, curl);
    res = res == CURLE_OK ? curl_easy_perform(curl) : CURLE_NOT_BUILT_IN;
    *code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return res;
}

int cli_request(cli_t *cli, const char *method, const char *path, json_t *request, long *status,
                json_t **body)
{
    CURL *curl = curl_easy_init();
    if (!curl) {
        fprintf(stderr, "berth: cannot start an HTTP client\n");
        return -1;
    }
    char url[CLI_URL_MAX + 1024];
    snprintf(url, sizeof url, "%s%s", cli->url, path);
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    char auth[CLI_TOKEN_MAX + 32];
    if (cli->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cli->token);
        headers = curl_slist_append(headers, auth);
    }
    char idem[sizeof cli->idempotency_key + 32];
    if (cli->idempotency_key[0] && strcmp(method, "POST") == 0) {
        snprintf(idem, sizeof idem, "Idempotency-Key: %s", cli->idempotency_key);
        headers = curl_slist_append(headers, idem);
    }
    char *payload = request ? json_dumps(request, JSON_COMPACT) : NULL;
    if (payload) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    }
    s_buffer_t buf = { 0 };
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    long code;
    CURLcode res = s_perform(cli, curl, headers, &buf, &code);
    if (payload) {
        explicit_bzero(payload, strlen(payload)); /* may hold a password */
        free(payload);
    }
    int rc = -1;
    if (res != CURLE_OK || (cli->pinned && s_pin.mismatch))
        s_report(cli, res);
    else {
        *status = code;
        *body = buf.data ? json_loads(buf.data, 0, NULL) : NULL;
        rc = 0;
    }
    free(buf.data);
    return rc;
}

/* What an upload reads its body from, and shows its progress with. */
typedef struct {
    FILE *file;
    int64_t size;
    int progress;    /* draw it (stderr is a terminal) */
    int64_t shown_s; /* the second last drawn, so a line is drawn at most once a second */
} s_upload_src_t;

static size_t s_upload_read(char *buf, size_t size, size_t n, void *arg)
{
    s_upload_src_t *src = arg;
    size_t got = fread(buf, 1, size * n, src->file);
    if (got == 0 && ferror(src->file))
        return CURL_READFUNC_ABORT;
    return got;
}

static int s_upload_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                             curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    s_upload_src_t *src = arg;
    int64_t now_s = (int64_t)time(NULL);
    if (!src->progress || (now_s == src->shown_s && ulnow < src->size))
        return 0;
    src->shown_s = now_s;
    fprintf(stderr, "\ruploaded %lld of %lld MiB (%d%%)", (long long)(ulnow >> 20),
            (long long)(src->size >> 20),
            src->size ? (int)((int64_t)ulnow * 100 / src->size) : 100);
    if (ulnow >= src->size)
        fputs("; the image store checks it\n", stderr);
    fflush(stderr);
    return 0;
}

int cli_upload(cli_t *cli, const char *path, const char *file, long *status, json_t **body)
{
    FILE *f = fopen(file, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "berth: cannot read %s: %s\n", file,
                f ? "not a regular file" : strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    CURL *curl = curl_easy_init();
    if (!curl) {
        fclose(f);
        fprintf(stderr, "berth: cannot start an HTTP client\n");
        return -1;
    }
    s_upload_src_t src = { .file = f, .size = (int64_t)st.st_size, .progress = isatty(2) };
    char url[CLI_URL_MAX + 1024];
    snprintf(url, sizeof url, "%s%s", cli->url, path);
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
    char auth[CLI_TOKEN_MAX + 32];
    if (cli->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cli->token);
        headers = curl_slist_append(headers, auth);
    }
    s_buffer_t buf = { 0 };
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, s_upload_read);
    curl_easy_setopt(curl, CURLOPT_READDATA, &src);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, s_upload_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &src);
    /* No bound on the whole: a large image takes as long as it takes; a stalled one ends. */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    long code;
    CURLcode res = s_perform(cli, curl, headers, &buf, &code);
    fclose(f);
    int rc = -1;
    /* A refusal before the body (too large, a name taken) is an answer, not a failure. */
    if ((res != CURLE_OK && !(code && buf.data)) || (cli->pinned && s_pin.mismatch))
        s_report(cli, res);
    else {
        *status = code;
        *body = buf.data ? json_loads(buf.data, 0, NULL) : NULL;
        rc = 0;
    }
    free(buf.data);
    return rc;
}

/* "CODE, key: value, ..." of an error body (the code and its details, keys sorted) into
   out; "" when the body has no code. */
static void s_error_why(json_t *error, char *out, size_t size)
{
    out[0] = '\0';
    const char *code = json_string_value(json_object_get(error, "code"));
    if (!code || size == 0)
        return;
    size_t n = (size_t)snprintf(out, size, "%s", code);
    json_t *details = json_object_get(error, "details");
    const char *keys[16];
    size_t count = 0;
    const char *key;
    json_t *value;
    json_object_foreach(details, key, value)
    {
        if (json_is_string(value) && count < sizeof keys / sizeof keys[0])
            keys[count++] = key;
    }
    /* A few keys: insertion sort keeps the line the same from one run to the next. */
    for (size_t i = 1; i < count; i++)
        for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    for (size_t i = 0; i < count && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, ", %s: %s", keys[i],
                              json_string_value(json_object_get(details, keys[i])));
}

void cli_print_error(cli_t *cli, const char *who, long status, json_t *body)
{
    (void)cli;
    json_t *error = json_object_get(body, "error");
    const char *message = json_string_value(json_object_get(error, "message"));
    char why[512];
    s_error_why(error, why, sizeof why);
    if (status == 401 && strcmp(who, "berth") == 0)
        fprintf(stderr, "berth: not logged in or token expired: run berth login\n");
    else if (message && why[0])
        fprintf(stderr, "%s: %s (%s; HTTP %ld)\n", who, message, why, status);
    else if (message)
        fprintf(stderr, "%s: %s (HTTP %ld)\n", who, message, status);
    else
        fprintf(stderr, "%s: unexpected answer from the gateway (HTTP %ld)\n", who, status);
}

int cli_http(cli_t *cli, const char *method, const char *path, json_t *request, json_t **body)
{
    long status = 0;
    json_t *doc = NULL;
    if (cli_request(cli, method, path, request, &status, &doc) != 0)
        return -1;
    if (status >= 200 && status < 300 && json_is_object(doc)) {
        *body = doc;
        return 0;
    }
    cli_print_error(cli, "berth", status, doc);
    json_decref(doc);
    return -1;
}

int cli_escape(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        if (n + (plain ? 1 : 3) >= size)
            return -1;
        if (plain)
            out[n++] = (char)*p;
        else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    if (size == 0)
        return -1;
    out[n] = '\0';
    return 0;
}

int cli_path(char *out, size_t size, const char *collection, const char *id)
{
    char escaped[CLI_PATH_MAX];
    if (cli_escape(id, escaped, sizeof escaped) != 0)
        return -1;
    int n = snprintf(out, size, "/v1/%s/%s", collection, escaped);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int cli_get_one(cli_t *cli, const char *command, const char *collection, const char *id,
                json_t **body)
{
    char path[CLI_PATH_MAX];
    if (cli_path(path, sizeof path, collection, id) != 0) {
        fprintf(stderr, "berth %s: id too long\n", command);
        return 2;
    }
    return cli_http(cli, "GET", path, NULL, body) != 0 ? 1 : 0;
}

static int s_yaml_on; /* -o yaml: cli_print_json prints YAML */

void cli_output_yaml(int on)
{
    s_yaml_on = on;
}

/* A string as a YAML scalar: plain when it cannot be read as anything else (a number, a
   boolean, null, a date, an indicator), else double-quoted, escaping what YAML may not hold
   as it is (controls, DEL, C1 controls, U+FEFF, U+FFFE, U+FFFF). jansson's strings are valid
   UTF-8. */
static void s_yaml_string(FILE *out, const char *s)
{
    static const char *const reserved[] = { "true", "false", "yes",  "no", "on", "off",
                                            "y",    "n",     "null", "~",  NULL };
    int plain =
        (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_' || s[0] == '/';
    for (const char *p = s; plain && *p; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr("_./@+-", *p) != NULL;
    for (int i = 0; plain && reserved[i]; i++)
        plain = strcasecmp(s, reserved[i]) != 0;
    if (plain) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        unsigned cp = *p;
        int len = cp < 0x80 ? 1 : cp < 0xE0 ? 2 : cp < 0xF0 ? 3 : 4;
        if (len == 2)
            cp = ((cp & 0x1Fu) << 6) | (p[1] & 0x3Fu);
        else if (len == 3)
            cp = ((cp & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
        if (cp == '"' || cp == '\\')
            fprintf(out, "\\%c", (char)cp);
        else if (cp == '\n')
            fputs("\\n", out);
        else if (cp == '\t')
            fputs("\\t", out);
        else if (cp < 0x20 || cp == 0x7F || (len == 2 && cp >= 0x80 && cp <= 0x9F) ||
                 (len == 3 && (cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF)))
            fprintf(out, "\\u%04X", cp);
        else
            fwrite(p, 1, (size_t)len, out);
        p += len;
    }
    fputc('"', out);
}

static void s_yaml_scalar(FILE *out, json_t *v)
{
    if (json_is_string(v))
        s_yaml_string(out, json_string_value(v));
    else if (json_is_integer(v))
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v)) {
        char *text = json_dumps(v, JSON_ENCODE_ANY); /* always with a '.' or an exponent */
        fputs(text ? text : "0.0", out);
        free(text);
    } else if (json_is_boolean(v))
        fputs(json_is_true(v) ? "true" : "false", out);
    else if (json_is_object(v))
        fputs("{}", out); /* only empty ones get here */
    else if (json_is_array(v))
        fputs("[]", out);
    else
        fputs("null", out);
}

static int s_yaml_block(json_t *v)
{
    return (json_is_object(v) && json_object_size(v) > 0) ||
           (json_is_array(v) && json_array_size(v) > 0);
}

/* v at indent; the caller has written what leads up to it (a key, a "- "), and first_inline
   says the first line of a block goes on that same line (after "- "). */
static void s_yaml(FILE *out, json_t *v, int indent, int first_inline)
{
    int first = 1;
    if (json_is_object(v) && json_object_size(v) > 0) {
        const char *key;
        json_t *item;
        json_object_foreach(v, key, item)
        {
            if (!(first && first_inline))
                fprintf(out, "%*s", indent, "");
            first = 0;
            s_yaml_string(out, key);
            if (s_yaml_block(item)) {
                fputs(":\n", out);
                s_yaml(out, item, json_is_array(item) ? indent : indent + 2, 0);
            } else {
                fputs(": ", out);
                s_yaml_scalar(out, item);
                fputc('\n', out);
            }
        }
    } else if (json_is_array(v) && json_array_size(v) > 0) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (!(first && first_inline))
                fprintf(out, "%*s", indent, "");
            first = 0;
            fputs("- ", out);
            if (s_yaml_block(item))
                s_yaml(out, item, indent + 2, 1);
            else {
                s_yaml_scalar(out, item);
                fputc('\n', out);
            }
        }
    } else {
        s_yaml_scalar(out, v);
        fputc('\n', out);
    }
}

void cli_print_json(json_t *value)
{
    if (s_yaml_on) {
        s_yaml(stdout, value, 0, 0);
        return;
    }
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text)
        puts(text);
    free(text);
}

json_t *cli_get_all(cli_t *cli, const char *path, int limit, const char *field)
{
    enum { PAGES_MAX = 100000 }; /* a gateway that never ends a listing must not hang us */
    json_t *all = json_array();
    char last[512] = "", marker[512 * 3 + 1], page[4096];
    const char *join = strchr(path, '?') ? "&" : "?";
    for (int n = 0; all && n < PAGES_MAX; n++) {
        if (last[0] && cli_escape(last, marker, sizeof marker) == 0)
            snprintf(page, sizeof page, "%s%slimit=%d&marker=%s", path, join, limit, marker);
        else
            snprintf(page, sizeof page, "%s%slimit=%d", path, join, limit);
        json_t *body = NULL;
        if (cli_http(cli, "GET", page, NULL, &body) != 0) {
            json_decref(all);
            return NULL;
        }
        json_array_extend(all, json_object_get(body, field));
        const char *next = json_string_value(json_object_get(body, "next_marker"));
        int more = next && *next && !streq(next, last) && strlen(next) < sizeof last;
        if (more)
            util_strlcpy(last, next, sizeof last);
        json_decref(body);
        if (!more)
            break;
    }
    return all;
}

json_t *cli_names(cli_t *cli, const char *path, const char *field)
{
    enum { PAGES_MAX = 1000 };
    json_t *names = json_object();
    char last[512] = "", marker[512 * 3 + 1], page[4096];
    const char *join = strchr(path, '?') ? "&" : "?";
    for (int n = 0; n < PAGES_MAX; n++) {
        /* No limit: an unpaged list (templates) takes none; a paged one says next_marker. */
        if (last[0] && cli_escape(last, marker, sizeof marker) == 0)
            snprintf(page, sizeof page, "%s%smarker=%s", path, join, marker);
        else
            snprintf(page, sizeof page, "%s", path);
        long status = 0;
        json_t *body = NULL;
        if (cli_request(cli, "GET", page, NULL, &status, &body) != 0 || status != 200) {
            json_decref(body);
            break;
        }
        size_t i;
        json_t *entry;
        json_array_foreach(json_object_get(body, field), i, entry)
        {
            const char *id = json_string_value(json_object_get(entry, "id"));
            json_t *name = json_object_get(entry, "name");
            if (id && json_is_string(name))
                json_object_set(names, id, name);
        }
        const char *next = json_string_value(json_object_get(body, "next_marker"));
        int more = next && *next && !streq(next, last) && strlen(next) < sizeof last;
        if (more)
            util_strlcpy(last, next, sizeof last);
        json_decref(body);
        if (!more)
            break;
    }
    return names;
}

const char *cli_name_of(json_t *names, json_t *obj, const char *key)
{
    const char *id = json_string_value(json_object_get(obj, key));
    const char *name = id ? json_string_value(json_object_get(names, id)) : NULL;
    return name ? name : id && *id ? id : "-";
}

/* ---- the live event stream (GET /v1/events) ----
   libcurl's multi interface runs the one transfer while the caller waits for the next event
   with a timeout; what arrives is kept until it forms whole blocks (a blank line ends one). */

#define STREAM_PENDING_MAX (16 * 1024 * 1024) /* undelivered text; past it the stream breaks */

struct _cli_stream_t {
    cli_t *cli;
    CURLM *multi;
    CURL *curl;
    struct curl_slist *headers;
    char *buf; /* received, not yet handed out */
    size_t len;
    int done;        /* the transfer ended */
    CURLcode result; /* how */
    char last_id[CLI_EVENT_ID_MAX];
};

static size_t s_stream_write(char *chunk, size_t size, size_t n, void *arg)
{
    cli_stream_t *self = arg;
    size_t len = size * n;
    if (self->len + len > STREAM_PENDING_MAX)
        return 0;
    char *grown = realloc(self->buf, self->len + len + 1);
    if (!grown)
        return 0;
    memcpy(grown + self->len, chunk, len);
    self->buf = grown;
    self->len += len;
    self->buf[self->len] = '\0';
    return len;
}

/* Let libcurl work for up to timeout_ms. */
static void s_stream_run(cli_stream_t *self, int timeout_ms)
{
    int running = 0;
    curl_multi_poll(self->multi, NULL, 0, timeout_ms > 0 ? timeout_ms : 0, NULL);
    curl_multi_perform(self->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(self->multi, &left)))
        if (msg->msg == CURLMSG_DONE) {
            self->done = 1;
            self->result = msg->data.result;
        }
    if (!running)
        self->done = 1;
}

cli_stream_t *cli_stream_open(cli_t *cli, const char *since, int quiet)
{
    cli_stream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cli = cli;
    self->multi = curl_multi_init();
    self->curl = curl_easy_init();
    if (!self->multi || !self->curl) {
        fprintf(stderr, "berth: cannot start an HTTP client\n");
        cli_stream_destroy(&self);
        return NULL;
    }
    char url[CLI_URL_MAX + 64], auth[CLI_TOKEN_MAX + 32], last[CLI_EVENT_ID_MAX + 32];
    snprintf(url, sizeof url, "%s/v1/events", cli->url);
    self->headers = curl_slist_append(NULL, "Accept: text/event-stream");
    if (cli->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cli->token);
        self->headers = curl_slist_append(self->headers, auth);
    }
    if (since && *since) {
        util_strlcpy(self->last_id, since, sizeof self->last_id);
        snprintf(last, sizeof last, "Last-Event-ID: %s", since);
        self->headers = curl_slist_append(self->headers, last);
    }
    curl_easy_setopt(self->curl, CURLOPT_URL, url);
    curl_easy_setopt(self->curl, CURLOPT_HTTPHEADER, self->headers);
    curl_easy_setopt(self->curl, CURLOPT_WRITEFUNCTION, s_stream_write);
    curl_easy_setopt(self->curl, CURLOPT_WRITEDATA, self);
    curl_easy_setopt(self->curl, CURLOPT_CONNECTTIMEOUT, 10L);
    /* Keepalives come every few seconds: a minute of silence is a dead connection. */
    curl_easy_setopt(self->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(self->curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(self->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(self->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode res = s_tls(cli, self->curl);
    if (res != CURLE_OK) {
        cli_stream_destroy(&self);
        return NULL;
    }
    curl_multi_add_handle(self->multi, self->curl);
    /* Until the answer's status is known. */
    int64_t deadline = util_mono_ms() + 15000;
    long code = 0;
    while (!self->done && code == 0 && util_mono_ms() < deadline) {
        s_stream_run(self, 100);
        curl_easy_getinfo(self->curl, CURLINFO_RESPONSE_CODE, &code);
    }
    if (code == 200)
        return self;
    /* An error answers with a JSON body: wait for all of it. */
    while (!self->done && code != 0 && util_mono_ms() < deadline)
        s_stream_run(self, 100);
    if (!quiet) {
        if (code == 0 || (self->done && self->result != CURLE_OK && code == 0))
            s_report(cli, self->done ? self->result : CURLE_OPERATION_TIMEDOUT);
        else {
            json_t *body = self->buf ? json_loads(self->buf, 0, NULL) : NULL;
            cli_print_error(cli, "berth", code, body);
            json_decref(body);
        }
    }
    cli_stream_destroy(&self);
    return NULL;
}

/* The first whole block of the buffer as an event: 1 (an event), 0 (a block without one: a
   comment, a retry), -1 (no whole block yet). */
static int s_stream_block(cli_stream_t *self, cli_event_t *ev)
{
    char *end = self->buf ? strstr(self->buf, "\n\n") : NULL;
    if (!end)
        return -1;
    *end = '\0';
    char *data = NULL;
    size_t data_len = 0;
    memset(ev, 0, sizeof *ev);
    for (char *line = self->buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *value = strchr(line, ':');
        if (line[0] == ':' || !value)
            continue;
        *value++ = '\0';
        if (*value == ' ')
            value++;
        if (streq(line, "id"))
            util_strlcpy(self->last_id, value, sizeof self->last_id);
        else if (streq(line, "event"))
            util_strlcpy(ev->event, value, sizeof ev->event);
        else if (streq(line, "data")) {
            size_t vlen = strlen(value);
            char *grown = realloc(data, data_len + vlen + 2);
            if (grown) {
                data = grown;
                if (data_len)
                    data[data_len++] = '\n';
                memcpy(data + data_len, value, vlen + 1);
                data_len += vlen;
            }
        }
    }
    size_t used = (size_t)(end + 2 - self->buf);
    memmove(self->buf, self->buf + used, self->len - used + 1);
    self->len -= used;
    if (!data)
        return 0;
    util_strlcpy(ev->id, self->last_id, sizeof ev->id);
    if (!ev->event[0])
        util_strlcpy(ev->event, "message", sizeof ev->event);
    ev->data = json_loads(data, 0, NULL);
    free(data);
    if (!ev->data)
        ev->data = json_object();
    return 1;
}

int cli_stream_next(cli_stream_t *self, int timeout_ms, cli_event_t *ev)
{
    int64_t deadline = util_mono_ms() + timeout_ms;
    for (;;) {
        int rc;
        while ((rc = s_stream_block(self, ev)) == 0)
            ;
        if (rc == 1)
            return 1;
        if (self->done)
            return -1;
        int64_t left = deadline - util_mono_ms();
        if (left <= 0)
            return 0;
        s_stream_run(self, left < 1000 ? (int)left : 1000);
    }
}

const char *cli_stream_last_id(cli_stream_t *self)
{
    return self->last_id;
}

void cli_stream_destroy(cli_stream_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cli_stream_t *self = *self_p;
    if (self->multi && self->curl)
        curl_multi_remove_handle(self->multi, self->curl);
    if (self->curl)
        curl_easy_cleanup(self->curl);
    if (self->multi)
        curl_multi_cleanup(self->multi);
    curl_slist_free_all(self->headers);
    free(self->buf);
    free(self);
    *self_p = NULL;
}
