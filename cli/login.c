/*  berth login: trade a user name and password for a bearer token (POST /v1/auth/tokens)
    and keep it for later commands. The password comes from --password-stdin, BERTH_PASSWORD,
    a prompt without echo on a terminal, or else one line of stdin; it never appears on the
    command line, where every user of the machine could read it. berth logout revokes the
    token (DELETE /v1/auth/tokens/current) and removes the token file. */
#include "cli.h"

#include <errno.h>
#include <termios.h>
#include <unistd.h>

#define SECRET_MAX 1024

/* One line from f without its line ending. -1 at end of input or when too long. */
static int s_line(FILE *f, char *buf, size_t size)
{
    if (!fgets(buf, (int)size, f))
        return -1;
    size_t len = strlen(buf);
    if (len > 0 && buf[len - 1] != '\n' && !feof(f))
        return -1;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    return 0;
}

/* Prompt on stderr and read a line from the terminal on stdin, without echo when secret. */
static int s_prompt(const char *prompt, int secret, char *buf, size_t size)
{
    fputs(prompt, stderr);
    fflush(stderr);
    struct termios saved, quiet;
    int restore = 0;
    if (secret && tcgetattr(STDIN_FILENO, &saved) == 0) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
    }
    int rc = s_line(stdin, buf, size);
    if (restore)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    return rc;
}

int cli_login(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "user", 1, NULL, 0 }, { "password-stdin", 0, NULL, 0 }, { NULL } };
    const char *pos[1] = { NULL };
    if (cli_parse(argc, argv, opts, pos, 0, 1) != 0 ||
        (pos[0] && opts[0].set && !streq(pos[0], opts[0].value))) {
        fprintf(stderr, "usage: berth login [USER | --user USER] [--password-stdin]\n");
        return 2;
    }
    int tty = isatty(STDIN_FILENO);
    char user[256] = "";
    const char *given = pos[0]     ? pos[0]
                        : opts[0].set ? opts[0].value
                                      : getenv("BERTH_USER");
    if (given && *given)
        util_strlcpy(user, given, sizeof user);
    else if (!tty || opts[1].set || s_prompt("Username: ", 0, user, sizeof user) != 0 || !*user) {
        fprintf(stderr, "berth login: no user name: pass --user USER or set BERTH_USER\n");
        return 2;
    }
    char password[SECRET_MAX] = "";
    int got;
    const char *env = getenv("BERTH_PASSWORD");
    if (opts[1].set)
        got = s_line(stdin, password, sizeof password);
    else if (env && *env)
        got = util_strlcpy(password, env, sizeof password);
    else if (tty)
        got = s_prompt("Password: ", 1, password, sizeof password);
    else
        got = s_line(stdin, password, sizeof password);
    if (got != 0 || !*password) {
        fprintf(stderr, "berth login: no password given\n");
        explicit_bzero(password, sizeof password);
        return 2;
    }
    json_t *ask = json_pack("{s:s, s:s}", "username", user, "password", password);
    explicit_bzero(password, sizeof password);
    if (!ask)
        return 1;
    cli->token[0] = '\0'; /* never send an old token along with a password */
    long status = 0;
    json_t *body = NULL;
    int rc = cli_request(cli, "POST", "/v1/auth/tokens", ask, &status, &body);
    json_t *secret = json_object_get(ask, "password");
    if (json_is_string(secret) && json_string_length(secret))
        explicit_bzero((char *)json_string_value(secret), json_string_length(secret));
    json_decref(ask);
    if (rc != 0)
        return 1;
    if (status != 201 && status != 200) {
        cli_print_error(cli, "berth login", status, body);
        json_decref(body);
        return 1;
    }
    const char *token = json_string_value(json_object_get(body, "token"));
    const char *expires = json_string_value(json_object_get(body, "expires_at"));
    rc = cli_session_save(cli, user, token, expires);
    if (rc == 0) {
        if (cli->json) {
            /* The token stays in the file: scripts get what they need without the secret. */
            json_object_del(body, "token");
            cli_print_json(body);
        } else
            printf("logged in to %s as %s (token expires %s)\n", cli->url, user,
                   expires ? expires : "-");
    }
    json_t *t = json_object_get(body, "token");
    if (json_is_string(t) && json_string_length(t))
        explicit_bzero((char *)json_string_value(t), json_string_length(t));
    json_decref(body);
    return rc == 0 ? 0 : 1;
}

int cli_logout(cli_t *cli, int argc, char **argv)
{
    const char *pos[1];
    if (cli_parse(argc, argv, NULL, pos, 0, 0) != 0) {
        fprintf(stderr, "usage: berth logout\n");
        return 2;
    }
    if (!cli->token[0]) {
        fprintf(stderr, "berth logout: not logged in to %s\n", cli->url);
        return 1;
    }
    long status = 0;
    json_t *body = NULL;
    if (cli_request(cli, "DELETE", "/v1/auth/tokens/current", NULL, &status, &body) != 0)
        return 1;
    /* 401: the token was already revoked or expired; either way it is forgotten here. */
    if (status != 200 && status != 401) {
        cli_print_error(cli, "berth logout", status, body);
        json_decref(body);
        return 1;
    }
    json_decref(body);
    char path[4096];
    if (cli_token_path(path, sizeof path) != 0 || (unlink(path) != 0 && errno != ENOENT)) {
        fprintf(stderr, "berth logout: token revoked, but cannot remove the token file %s: %s\n",
                path, strerror(errno));
        return 1;
    }
    explicit_bzero(cli->token, sizeof cli->token);
    if (cli->json) {
        json_t *out = json_pack("{s:s, s:b}", "url", cli->url, "revoked", status == 200);
        cli_print_json(out);
        json_decref(out);
    } else
        printf("logged out of %s%s\n", cli->url,
               status == 200 ? " (token revoked)" : " (the token was no longer valid)");
    return 0;
}

int cli_secret(int from_stdin, const char *prompt, char *buf, size_t size)
{
    if (from_stdin || !isatty(STDIN_FILENO))
        return s_line(stdin, buf, size) == 0 && *buf ? 0 : -1;
    return s_prompt(prompt, 1, buf, size) == 0 && *buf ? 0 : -1;
}

/* berth passwd: change one's own password (POST /v1/auth/password). Every token of the user
   is revoked by it, this session's too: the new token the answer carries replaces it. */
int cli_passwd(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "password-stdin", 0, NULL, 0 }, { NULL } };
    const char *pos[1];
    if (cli_parse(argc, argv, opts, pos, 0, 0) != 0) {
        fprintf(stderr, "usage: berth passwd [--password-stdin (current, then new, one a line)]\n");
        return 2;
    }
    if (!cli->token[0]) {
        fprintf(stderr, "berth passwd: not logged in to %s: berth login first\n", cli->url);
        return 1;
    }
    char current[SECRET_MAX] = "", fresh[SECRET_MAX] = "", again[SECRET_MAX] = "";
    int rc = 2;
    if (cli_secret(opts[0].set, "Current password: ", current, sizeof current) != 0 ||
        cli_secret(opts[0].set, "New password: ", fresh, sizeof fresh) != 0)
        fprintf(stderr, "berth passwd: no password given\n");
    else if (!opts[0].set && isatty(STDIN_FILENO) &&
             (s_prompt("New password again: ", 1, again, sizeof again) != 0 ||
              strcmp(again, fresh) != 0))
        fprintf(stderr, "berth passwd: the new passwords differ\n");
    else
        rc = 0;
    json_t *ask = rc == 0 ? json_pack("{s:s, s:s}", "current", current, "new", fresh) : NULL;
    explicit_bzero(current, sizeof current);
    explicit_bzero(fresh, sizeof fresh);
    explicit_bzero(again, sizeof again);
    if (!ask)
        return rc ? rc : 1;
    json_t *body = NULL;
    long status = 0;
    /* Not cli_http: a 401 here means a wrong current password, not an expired session. */
    rc = cli_request(cli, "POST", "/v1/auth/password", ask, &status, &body);
    if (rc == 0 && status != 201) {
        cli_print_error(cli, "berth passwd", status, body);
        json_decref(body);
        rc = -1;
    }
    const char *const fields[] = { "current", "new" };
    for (int i = 0; i < 2; i++) {
        json_t *s = json_object_get(ask, fields[i]);
        if (json_is_string(s) && json_string_length(s))
            explicit_bzero((char *)json_string_value(s), json_string_length(s));
    }
    json_decref(ask);
    if (rc != 0)
        return 1;
    const char *user = json_string_value(json_object_get(body, "user"));
    const char *token = json_string_value(json_object_get(body, "token"));
    const char *expires = json_string_value(json_object_get(body, "expires_at"));
    rc = user && token ? cli_session_save(cli, user, token, expires) : -1;
    if (rc == 0) {
        if (cli->json) {
            json_object_del(body, "token");
            cli_print_json(body);
        } else
            printf("password changed for %s; your other sessions are signed out\n", user);
    }
    json_t *t = json_object_get(body, "token");
    if (json_is_string(t) && json_string_length(t))
        explicit_bzero((char *)json_string_value(t), json_string_length(t));
    json_decref(body);
    return rc == 0 ? 0 : 1;
}
