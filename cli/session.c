/*  cli session: which gateway to talk to and the bearer token for it. `berth login` keeps
    {"url", "user", "token", "expires_at"} in the user's config directory, readable by the
    user alone; like ssh with a private key, a token file others can read is refused, and a
    token is only ever sent to the URL that issued it. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_FILE_MAX 65536

int cli_token_path(char *path, size_t size)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && *xdg == '/')
        n = snprintf(path, size, "%s/berth/token", xdg);
    else if (home && *home)
        n = snprintf(path, size, "%s/.config/berth/token", home);
    else
        return -1;
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* The URL without trailing slashes, into cli. */
static int s_set_url(cli_t *cli, const char *url)
{
    size_t len = strlen(url);
    while (len > 0 && url[len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof cli->url_buf)
        return -1;
    memcpy(cli->url_buf, url, len);
    cli->url_buf[len] = '\0';
    cli->url = cli->url_buf;
    return 0;
}

/* A token as the gateway issues it: printable, no spaces, bounded. */
static int s_token_ok(const char *token)
{
    size_t len = token ? strlen(token) : 0;
    if (len == 0 || len >= CLI_TOKEN_MAX)
        return 0;
    for (const char *p = token; *p; p++)
        if (*p <= ' ' || *p > '~')
            return 0;
    return 1;
}

/* The token file, parsed, or NULL when there is none (*bad set when it exists but must not
   be used; the reason is printed). */
static json_t *s_read(const char *path, int *bad)
{
    *bad = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            fprintf(stderr, "berth: cannot read %s: %s\n", path, strerror(errno));
            *bad = 1;
        }
        return NULL;
    }
    struct stat st;
    json_t *doc = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "berth: %s is not a regular file\n", path);
        *bad = 1;
    } else if (st.st_uid != getuid() || (st.st_mode & 077)) {
        fprintf(stderr,
                "berth: %s may be read by other users (mode %03o): remove it and run "
                "berth login again, or chmod 600 it\n",
                path, (unsigned)(st.st_mode & 0777));
        *bad = 1;
    } else if (st.st_size > TOKEN_FILE_MAX) {
        fprintf(stderr, "berth: %s is too large to be a token file\n", path);
        *bad = 1;
    } else {
        json_error_t err;
        doc = json_loadfd(fd, 0, &err);
        if (!json_is_object(doc)) {
            fprintf(stderr, "berth: %s is corrupt: run berth login again\n", path);
            json_decref(doc);
            doc = NULL;
            *bad = 1;
        }
    }
    close(fd);
    return doc;
}

int cli_session_load(cli_t *cli, const char *url_flag, int strict)
{
    const char *url = url_flag ? url_flag : getenv("BERTH_URL");
    cli->url_given = url && *url;
    char path[4096];
    json_t *saved = NULL;
    if (cli_token_path(path, sizeof path) == 0) {
        int bad;
        saved = s_read(path, &bad);
        if (bad && strict)
            return -1;
    }
    const char *saved_url = json_string_value(json_object_get(saved, "url"));
    if (!cli->url_given)
        url = saved_url ? saved_url : CLI_DEFAULT_URL;
    if (s_set_url(cli, url) != 0) {
        fprintf(stderr, "berth: the gateway URL is empty or too long\n");
        json_decref(saved);
        return -1;
    }
    const char *token = json_string_value(json_object_get(saved, "token"));
    char normalized[CLI_URL_MAX] = "";
    if (saved_url)
        util_strlcpy(normalized, saved_url, sizeof normalized);
    size_t len = strlen(normalized);
    while (len > 0 && normalized[len - 1] == '/')
        normalized[--len] = '\0';
    if (s_token_ok(token) && streq(normalized, cli->url))
        util_strlcpy(cli->token, token, sizeof cli->token);
    json_decref(saved);
    return 0;
}

/* mkdir -p for the directories above path, private to the user. */
static int s_mkdirs(const char *path)
{
    char dir[4096];
    if (util_strlcpy(dir, path, sizeof dir) != 0)
        return -1;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int cli_session_save(cli_t *cli, const char *user, const char *token, const char *expires_at)
{
    char path[4096], tmp[4200];
    if (cli_token_path(path, sizeof path) != 0) {
        fprintf(stderr, "berth: neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the "
                        "token\n");
        return -1;
    }
    if (!s_token_ok(token)) {
        fprintf(stderr, "berth: the gateway answered without a usable token\n");
        return -1;
    }
    if (s_mkdirs(path) != 0) {
        fprintf(stderr, "berth: cannot create the directory for %s: %s\n", path, strerror(errno));
        return -1;
    }
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s?}", "url", cli->url, "user", user, "token", token,
                            "expires_at", expires_at);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (!text)
        return -1;
    /* Write a private temporary file beside it, then rename: a reader sees the old token or
       the new one, never half a file, and the file is never readable by others. */
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    int rc = -1;
    if (fd < 0)
        fprintf(stderr, "berth: cannot write %s: %s\n", path, strerror(errno));
    else {
        size_t len = strlen(text);
        int ok = fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t)len &&
                 write(fd, "\n", 1) == 1 && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        if (ok && rename(tmp, path) == 0)
            rc = 0;
        else {
            fprintf(stderr, "berth: cannot write %s: %s\n", path, strerror(errno));
            unlink(tmp);
        }
    }
    explicit_bzero(text, strlen(text));
    free(text);
    if (rc == 0)
        util_strlcpy(cli->token, token, sizeof cli->token);
    return rc;
}
