/*  cli: shared pieces of the `berth` client: the session (gateway URL and bearer token),
    HTTP calls to the gateway, argument parsing, tables and progress lines. Each command
    lives in its own file and is listed in main.c's command table. */
#ifndef BERTH_CLI_H
#define BERTH_CLI_H

#include "util.h"

#include <czmq.h>
#include <jansson.h>

#define CLI_URL_MAX     1024
#define CLI_TOKEN_MAX   512
#define CLI_DEFAULT_URL "https://127.0.0.1:8080" /* make run's gateway */

typedef struct {
    const char *url;           /* gateway base URL, without a trailing slash */
    int json;                  /* -o json or -o yaml: the server's answer, not a table */
    int csv;                   /* -o csv: CSV where a command has it (chargeback), else a table */
    char token[CLI_TOKEN_MAX]; /* bearer token for url ("" when not logged in there) */
    char url_buf[CLI_URL_MAX]; /* storage behind url */
    int url_given;             /* url came from --url or BERTH_URL, not the token file */
    const char *ca_file;       /* --cacert or BERTH_CA_FILE: the certificate(s) an https URL
                                  is verified against (NULL: the system's CAs); never off */
    int pinned;                /* --pin or BERTH_PIN given: pin holds the certificate's */
    unsigned char pin[32];     /* SHA-256 of the DER certificate the gateway must present */
    char idempotency_key[40];  /* sent as Idempotency-Key on a POST when not "": a retry of
                                  the same command sends the same one */
} cli_t;

/* Parse a pin "sha256:<64 hex>" (colons between bytes allowed, as make run prints it) into
   cli->pin. 0, or -1 when it is not one. */
int cli_pin_parse(cli_t *cli, const char *text);

/* ---- session (session.c) ---- */

/* Where the token is kept: $XDG_CONFIG_HOME/berth/token, else ~/.config/berth/token.
   -1 when neither variable is set. */
int cli_token_path(char *path, size_t size);

/* Settle the gateway URL (--url, BERTH_URL, the token file's, the default) and load the
   token saved for that URL. -1 (message printed) when the token file is unsafe or corrupt
   and strict; otherwise such a file is ignored (login replaces it). */
int cli_session_load(cli_t *cli, const char *url_flag, int strict);

/* Save token for cli->url, readable by the user only (mode 0600, written atomically). */
int cli_session_save(cli_t *cli, const char *user, const char *token, const char *expires_at);

/* ---- HTTP (http.c) ---- */

/* One exchange with the gateway: 0 with *status and *body (parsed JSON or NULL; caller's)
   whatever the status, -1 (message printed) when the gateway could not be reached. */
int cli_request(cli_t *cli, const char *method, const char *path, json_t *request, long *status,
                json_t **body);

/* POST the file at file as the body of path (application/octet-stream, streamed from the
   file, its progress drawn on stderr when it is a terminal): 0 with *status and *body as
   cli_request, or -1 (message printed). */
int cli_upload(cli_t *cli, const char *path, const char *file, long *status, json_t **body);

/* Call the gateway. On a 2xx answer: 0 and *body (caller's). Otherwise prints the server's
   error message (or the login hint on 401) to stderr and returns -1. */
int cli_http(cli_t *cli, const char *method, const char *path, json_t *request, json_t **body);

/* Print the error of a non-2xx answer the way cli_http does, as `who` (the command): its
   message, code and details ("berth: count must be ... (BAD_REQUEST, field: count; HTTP 400)"). */
void cli_print_error(cli_t *cli, const char *who, long status, json_t *body);

/* s percent-encoded for a path segment or query value, into out. -1 when it does not fit. */
int cli_escape(const char *s, char *out, size_t size);
/* Every entry of a paged list: GET path (which may carry a query already) page after page
   of limit entries, following next_marker until the gateway says nothing follows, and the
   arrays under field joined. A new array, or NULL when a call failed (printed). */
json_t *cli_get_all(cli_t *cli, const char *path, int limit, const char *field);

/* id -> name of every entry of a list (GET path, following next_marker, the entries under field),
   so tables show names rather than ids. Quiet: what could be read (an empty object when nothing
   could). */
json_t *cli_names(cli_t *cli, const char *path, const char *field);

/* The name (from names, cli_names) of the id obj holds under key; the id itself when it has
   none there; "-" when obj holds no id. */
const char *cli_name_of(json_t *names, json_t *obj, const char *key);

/* The path of one resource, "/v1/<collection>/<id escaped>", into out. -1 when too long. */
int cli_path(char *out, size_t size, const char *collection, const char *id);
#define CLI_PATH_MAX 600

/* A kind of resource with the verbs list, show REF, delete REF and one that makes it
   (import, create, add): what cli_resource needs of it. */
typedef struct {
    const char *noun;       /* "image": the command's first word */
    const char *label;      /* "image", "SSH key": what a deletion says was deleted */
    const char *collection; /* "images": /v1/<collection>, and the list's key in the answer */
    const char *one;        /* "image": the answer's key for one */
    const char *ref;        /* "id", "name": what REF is, for messages */
    const char *make_verb;  /* "import" */
    int (*make)(cli_t *cli, int argc, char **argv); /* argv[0] the verb */
    void (*show)(cli_t *cli, json_t *answer);       /* one, as the table or -o json */
    void (*table)(json_t *items);                   /* the list as a table */
    const char *usage;
} cli_resource_t;

/* berth NOUN list | show REF | delete REF | MAKE_VERB ... (argv[0] the command's word, argv[1]
   the verb; none: list). The exit status. */
int cli_resource(cli_t *cli, const cli_resource_t *r, int argc, char **argv);

/* GET /v1/<collection>/<id> into *body (caller frees): 0; 2 when the id is too long (said for
   `berth <command>`); 1 when the call failed (said by cli_http). */
int cli_get_one(cli_t *cli, const char *command, const char *collection, const char *id,
                json_t **body);

/* ---- the live event stream (http.c): GET /v1/events ---- */

#define CLI_EVENT_ID_MAX 64
typedef struct {
    char id[CLI_EVENT_ID_MAX]; /* the stream entry id (what a reconnect resumes after) */
    char event[64];            /* its type: "vm.state", "stream.open", "stream.end", ... */
    json_t *data;              /* its JSON (caller json_decrefs) */
} cli_event_t;
typedef struct _cli_stream_t cli_stream_t;

/* Open the stream, after event id since (NULL: from now). NULL when it could not be opened
   (said on stderr unless quiet: the caller falls back to polling). */
cli_stream_t *cli_stream_open(cli_t *cli, const char *since, int quiet);
/* The next event within timeout_ms: 1 with *ev, 0 when none came in time, -1 when the
   stream ended or broke (reopen it after cli_stream_last_id to go on without a gap). */
int cli_stream_next(cli_stream_t *self, int timeout_ms, cli_event_t *ev);
/* The id of the last event received ("" before any). */
const char *cli_stream_last_id(cli_stream_t *self);
void cli_stream_destroy(cli_stream_t **self_p);

/* Print JSON (for -o json), or YAML after cli_output_yaml(1) (-o yaml). */
void cli_print_json(json_t *value);
void cli_output_yaml(int on);

/* ---- arguments (args.c) ---- */

typedef struct {
    const char *name;  /* long option without dashes: "count" for --count */
    int has_value;     /* takes an argument (--count 3 or --count=3) */
    const char *value; /* set by cli_parse */
    int set;           /* seen on the command line */
} cli_opt_t;

/* Split argv[1..] into options (from opts, NULL-name terminated) and up to max_pos
   positional arguments. -1 (message printed) on an unknown option, a missing value or too
   many or too few (< min_pos) positional arguments. */
int cli_parse(int argc, char **argv, cli_opt_t *opts, const char **pos, int min_pos, int max_pos);

/* Take every --NAME VALUE (or --NAME=VALUE) out of argv[1..] into values (a JSON list), so
   the option may be given once per value. The new argc, or -1 when one lacks its value. */
int cli_take_all(int argc, char **argv, const char *name, json_t *values);

/* A time for the gateway's from/to: "now", "-30m", "-2h", "-7d" (relative to now) become
   ISO 8601 UTC; anything else (ISO 8601, unix seconds) is passed on for the gateway to
   check. -1 when a relative time does not parse. */
int cli_time(const char *text, char *out, size_t size);

/* ---- output (output.c) ---- */

/* A JSON value as table text: strings as they are, numbers, yes/no, "-" for null or absent,
   anything else as compact JSON. Returns buf. */
const char *cli_text(json_t *value, char *buf, size_t size);

/* A table with aligned columns, printed at the end. */
typedef struct _cli_table_t cli_table_t;
cli_table_t *cli_table_new(int columns, ...); /* column headers */
void cli_table_destroy(cli_table_t **self_p);
void cli_table_add(cli_table_t *self, ...); /* one row: columns strings (copied) */
void cli_table_print(cli_table_t *self, FILE *out);

/* "key: value" lines for every field of an object, nested objects flattened as a.b, the
   names in first (NULL-terminated) printed first in that order. */
void cli_print_object(json_t *object, const char *const *first);

/* Live progress: one line per item, rewritten in place on a terminal, printed again only
   when it changed otherwise. */
typedef struct _cli_progress_t cli_progress_t;
cli_progress_t *cli_progress_new(FILE *out);
void cli_progress_destroy(cli_progress_t **self_p);
void cli_progress_set(cli_progress_t *self, const char *key, const char *line);
void cli_progress_draw(cli_progress_t *self);
/* Drawn in place on a terminal (room for a progress bar), or plain lines. */
int cli_progress_tty(cli_progress_t *self);

/* Sleep between polls of --wait (a CLI, not an event loop). */
void cli_pause_ms(int ms);

/* ---- commands ---- */
int cli_health(cli_t *cli, int argc, char **argv);
int cli_login(cli_t *cli, int argc, char **argv);
int cli_logout(cli_t *cli, int argc, char **argv); /* revoke the token, forget it */
/* A secret (a password): one line of stdin with from_stdin (or when stdin is no terminal),
   else a prompt without echo. 0 or -1 (nothing read). */
int cli_secret(int from_stdin, const char *prompt, char *buf, size_t size);
int cli_users(cli_t *cli, int argc, char **argv);  /* list, show, enable, disable, delete */
int cli_passwd(cli_t *cli, int argc, char **argv); /* change one's own password */
int cli_keys(cli_t *cli, int argc, char **argv);   /* one's API keys: create, list, revoke */
int cli_templates(cli_t *cli, int argc, char **argv);
int cli_template_create(cli_t *cli, int argc, char **argv); /* POST /v1/templates (admins) */
int cli_template_pool(cli_t *cli, int argc, char **argv);   /* GET|PUT /v1/templates/{id}/pool */
int cli_hosts(cli_t *cli, int argc, char **argv);
int cli_images(cli_t *cli, int argc, char **argv);   /* model images: list, show, import, delete */
int cli_networks(cli_t *cli, int argc, char **argv); /* networks: list, show, create, delete */
int cli_ssh_keys(cli_t *cli, int argc, char **argv); /* SSH keys: list, add, show, delete */
int cli_host(cli_t *cli, int argc, char **argv);
int cli_vms(cli_t *cli, int argc, char **argv);
int cli_vm(cli_t *cli, int argc, char **argv);
int cli_task(cli_t *cli, int argc, char **argv);
int cli_usage(cli_t *cli, int argc, char **argv);
int cli_request_cmd(cli_t *cli, int argc, char **argv);
int cli_dispose(cli_t *cli, int argc, char **argv);
int cli_action(cli_t *cli, int argc, char **argv);  /* start, stop, ... (argv[0] is the action) */
int cli_capture(cli_t *cli, int argc, char **argv); /* vm capture VM --name NAME [--wait] */
int cli_extend(cli_t *cli, int argc, char **argv);  /* add days to a VM's lease */
int cli_revive(cli_t *cli, int argc, char **argv);  /* extend an EXPIRED VM: back on */
/* "HOST:VCPUS,RAM_MB,DISK_GB" ('*' or empty HOST: any host) as a reservation object for
   the API, or NULL (said on stderr). */
json_t *cli_reservation(const char *arg);
int cli_groups(cli_t *cli, int argc, char **argv);
int cli_audit(cli_t *cli, int argc, char **argv);
int cli_rates(cli_t *cli, int argc, char **argv);      /* rate cards: list, show, create */
int cli_chargeback(cli_t *cli, int argc, char **argv); /* a group's chargeback report */
int cli_vm_charges(cli_t *cli, int argc, char **argv); /* one VM's charges by day */
int cli_budget(cli_t *cli, int argc, char **argv);     /* a group's budget: show, set, delete */
int cli_requests(cli_t *cli, int argc, char **argv);
int cli_approve(cli_t *cli, int argc, char **argv);
int cli_reject(cli_t *cli, int argc, char **argv);
int cli_onboard(cli_t *cli, int argc, char **argv);  /* ask for a new group */
int cli_allocate(cli_t *cli, int argc, char **argv); /* ask for more quota for a group */
int cli_watch(cli_t *cli, int argc, char **argv);    /* follow live events (watch.c) */

#endif
