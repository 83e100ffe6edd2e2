/*  cli http: one request to the gateway with libcurl; the JSON error body of a failure is
    turned into one line on stderr. */
#include "cli.h"

#include <curl/curl.h>

typedef struct {
    char *data;
    size_t size;
} s_buffer_t;

static size_t s_collect(char *chunk, size_t size, size_t n, void *arg)
{
    s_buffer_t *buf = arg;
    size_t len = size * n;
    char *grown = realloc(buf->data, buf->size + len + 1);
    if (!grown)
        return 0;
    memcpy(grown + buf->size, chunk, len);
    buf->data = grown;
    buf->size += len;
    buf->data[buf->size] = '\0';
    return len;
}

int cli_http(cli_t *cli, const char *method, const char *path, json_t *request, json_t **body)
{
    CURL *curl = curl_easy_init();
    if (!curl)
        return -1;
    char url[1024];
    snprintf(url, sizeof url, "%s%s", cli->url, path);
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    char auth[300];
    if (cli->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cli->token);
        headers = curl_slist_append(headers, auth);
    }
    char *payload = request ? json_dumps(request, JSON_COMPACT) : NULL;
    if (payload) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    }
    s_buffer_t buf = { 0 };
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    CURLcode res = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(payload);

    int rc = -1;
    if (res != CURLE_OK)
        fprintf(stderr, "berth: cannot reach %s: %s\n", cli->url, curl_easy_strerror(res));
    else {
        json_t *doc = buf.data ? json_loads(buf.data, 0, NULL) : NULL;
        if (status >= 200 && status < 300 && doc) {
            *body = doc;
            doc = NULL;
            rc = 0;
        } else {
            json_t *err = json_object_get(doc, "error");
            const char *message = json_string_value(json_object_get(err, "message"));
            fprintf(stderr, "berth: %s (HTTP %ld)\n", message ? message : "unexpected response",
                    status);
        }
        json_decref(doc);
    }
    free(buf.data);
    return rc;
}

void cli_print_json(json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text)
        puts(text);
    free(text);
}
