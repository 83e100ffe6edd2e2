/*  trail: the gateway's side of the audit trail (lib/audit.h). Every mutating call's record
    is queued to the audit writer when its status is known (http_options_t.done), and
    GET /v1/audit reads the stream newest first with filters, for admins and for the managers
    and auditors of a group (that group's records). */
#include "gateway.h"
#include "clock.h"

#include <arpa/inet.h>
#include <microhttpd.h>

const char *trail_action(const http_req_t *req, char *buf, size_t size)
{
    /* The route's row of the permission table; a call that matched no route is named by
       what it asked for. */
    if (req->action)
        return req->action;
    snprintf(buf, size, "%s %s", req->method ? req->method : "?", req->path ? req->path : "?");
    return buf;
}

/* The string field of the response that describes the object: at its top, or in the object
   the response wraps under the kind's name ({"request": {...}}). */
static const char *s_response_field(const http_req_t *req, const char *kind, const char *field)
{
    const char *v = json_string_value(json_object_get(req->response, field));
    if (!v)
        v = json_string_value(json_object_get(json_object_get(req->response, kind), field));
    return v;
}

/* "vm:<id>": the kind of the action and the object it names (path, else response, else the
   name the body gave). */
static void s_target(const http_req_t *req, const char *action, audit_record_t *r)
{
    char kind[32];
    size_t n = strcspn(action, ". ");
    snprintf(kind, sizeof kind, "%.*s", (int)(n < sizeof kind ? n : sizeof kind - 1), action);
    if (streq(kind, "auth"))
        snprintf(kind, sizeof kind, "user");
    const char *id = req->action ? req->params[0] : NULL;
    if (!id && req->status < 300)
        id = s_response_field(req, kind, "id");
    if (!id)
        id = json_string_value(json_object_get(req->body, "name"));
    if (!id)
        id = json_string_value(json_object_get(req->body, "username"));
    if (id)
        snprintf(r->target, sizeof r->target, "%s:%s", kind, id);
    /* The group: a group's own id (the path may name it by name), else the object's. */
    const char *group = NULL;
    if (streq(kind, "group")) {
        group = req->status < 300 ? s_response_field(req, "group", "id") : NULL;
        if (!group && req->status < 300)
            group = s_response_field(req, "member", "group");
        if (!group && req->action)
            group = req->params[0];
    } else if (req->status < 300)
        group = s_response_field(req, kind, "group");
    if (group)
        util_strlcpy(r->group, group, sizeof r->group);
}

void trail_done(http_req_t *req)
{
    gateway_t *gw = req->app;
    if (!gw->audit || !req->method || streq(req->method, "GET") || streq(req->method, "HEAD") ||
        streq(req->method, "OPTIONS"))
        return;
    audit_record_t r = { .at_ms = clock_now_ms() };
    char buf[sizeof r.action];
    const char *action = trail_action(req, buf, sizeof buf);
    util_strlcpy(r.action, action, sizeof r.action);
    util_strlcpy(r.actor, req->user[0] ? req->user : "anonymous", sizeof r.actor);
    s_target(req, action, &r);
    util_strlcpy(r.request_id, req->request_id ? req->request_id : "", sizeof r.request_id);
    snprintf(r.result, sizeof r.result, "%d", req->status);
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r.source, sizeof r.source);
    audit_log_push(gw->audit, &r);
}

/* ---- GET /v1/audit ---- */

/* The filters of one query. */
typedef struct {
    const char *actor, *target, *group, *action;
    json_t *groups; /* group id -> role the caller reads (NULL: every group; admins) */
} s_filter_t;

/* One stream entry as a JSON record when it passes the filters; NULL otherwise. */
static json_t *s_entry(const redisReply *e, const s_filter_t *f)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    const redisReply *kv = e->element[1];
    const char *actor = "", *target = "", *group = "", *action = "", *source = "", *rid = "",
               *result = "";
    int64_t at = 0;
    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
        const char *k = kv->element[i]->str, *v = kv->element[i + 1]->str;
        if (!k || !v)
            continue;
        if (streq(k, "actor"))
            actor = v;
        else if (streq(k, "target"))
            target = v;
        else if (streq(k, "group"))
            group = v;
        else if (streq(k, "action"))
            action = v;
        else if (streq(k, "source"))
            source = v;
        else if (streq(k, "request_id"))
            rid = v;
        else if (streq(k, "result"))
            result = v;
        else if (streq(k, "at_ms"))
            util_parse_int(v, 0, INT64_MAX, &at);
    }
    if ((f->actor && !streq(f->actor, actor)) || (f->target && !streq(f->target, target)) ||
        (f->group && !streq(f->group, group)) || (f->action && !streq(f->action, action)) ||
        (f->groups && !json_object_get(f->groups, group)))
        return NULL;
    return json_pack("{s:s, s:I, s:o, s:s, s:s, s:s, s:o, s:o, s:o, s:s}", "id", e->element[0]->str,
                     "at_ms", (json_int_t)at, "at", rest_time(at), "actor", actor, "action", action,
                     "target", target, "group", view_str(group), "source", view_str(source),
                     "request_id", view_str(rid), "result", result);
}

/* Is text a stream id (ms-seq)? */
static int s_stream_id(const char *text)
{
    size_t ms = strspn(text, "0123456789");
    return ms > 0 && ms <= 20 && text[ms] == '-' && text[ms + 1] &&
           strspn(text + ms + 1, "0123456789") == strlen(text + ms + 1) &&
           strlen(text + ms + 1) <= 20;
}

/* A time parameter: unix ms, or ISO 8601 / RFC 3339. */
static int s_time(http_req_t *req, const char *name, int64_t *ms)
{
    const char *text = http_query(req, name);
    if (!text)
        return 1;
    if (strspn(text, "0123456789") == strlen(text) &&
        util_parse_int(text, 0, INT64_MAX / 2, ms) == 0)
        return 0;
    if (rest_parse_time(text, ms) == 0)
        return 0;
    return http_bad_field(req, name,
                          "%s must be unix milliseconds or an RFC 3339 time "
                          "(2024-05-01T12:00:00Z)",
                          name);
}

/* The groups whose records the caller reads: NULL for an admin (all), else a new object of
   the groups the caller manages or audits; -1 with 403 set when there are none (or the
   group asked for is not one of them). */
static int s_readable(http_req_t *req, const char *group, json_t **out)
{
    *out = NULL;
    if (streq(req->role, "admin"))
        return 0;
    json_t *mine = json_object();
    const char *id;
    json_t *role;
    json_object_foreach(req->groups, id, role)
    {
        const char *r = json_string_value(role);
        if (r && (streq(r, "auditor") || streq(r, "manager")))
            json_object_set_new(mine, id, json_true());
    }
    if (json_object_size(mine) == 0 || (group && !json_object_get(mine, group))) {
        json_decref(mine);
        http_error_details(req, "FORBIDDEN",
                           group ? "reading this group's audit trail needs the auditor or "
                                   "manager role in it, or admin"
                                 : "reading the audit trail needs the admin role, or the "
                                   "auditor or manager role in a group",
                           json_pack("{s:s}", "action", "audit.read"));
        return -1;
    }
    *out = mine;
    return 0;
}

void trail_list(http_req_t *req)
{
    gateway_t *gw = req->app;
    int64_t limit = gw->list_default, from = 0, to = 0;
    const char *text = http_query(req, "limit"), *marker = http_query(req, "marker");
    s_filter_t f = { .actor = http_query(req, "actor"),
                     .target = http_query(req, "target"),
                     .group = http_query(req, "group"),
                     .action = http_query(req, "action") };
    if (text && util_parse_int(text, 1, gw->list_max, &limit) != 0) {
        http_bad_field(req, "limit", "limit must be an integer from 1 to %d", gw->list_max);
        return;
    }
    if (marker && !s_stream_id(marker)) {
        http_bad_field(req, "marker", "marker is not an audit record id");
        return;
    }
    const char *names[] = { "actor", "target", "group", "action" };
    const char *values[] = { f.actor, f.target, f.group, f.action };
    for (int i = 0; i < 4; i++)
        if (values[i] && (!*values[i] || strlen(values[i]) > 160)) {
            http_bad_field(req, names[i], "%s must be 1 to 160 characters", names[i]);
            return;
        }
    /* A group by name too; a name that names no group stays as given and matches nothing
       (records hold group ids). */
    char group_id[UTIL_ID_LEN] = "";
    if (f.group && rest_group_id(req, f.group, group_id) != 0)
        return;
    if (*group_id)
        f.group = group_id;
    int has_from = s_time(req, "from", &from), has_to = s_time(req, "to", &to);
    if (has_from < 0 || has_to < 0)
        return;
    if (has_from == 0 && has_to == 0 && from > to) {
        http_bad_field(req, "from", "from must not be after to");
        return;
    }
    if (s_readable(req, f.group, &f.groups) != 0)
        return;
    /* Newest first from the marker (exclusive) or `to`, down to `from`, in chunks; the scan
       stops at list_scan_max entries looked at, with the last one as the next marker. */
    char end[64], start[32];
    if (marker)
        snprintf(end, sizeof end, "(%s", marker);
    else if (has_to == 0)
        snprintf(end, sizeof end, "%lld", (long long)to);
    else
        snprintf(end, sizeof end, "+");
    if (has_from == 0)
        snprintf(start, sizeof start, "%lld", (long long)from);
    else
        snprintf(start, sizeof start, "-");
    json_t *records = json_array();
    char last[48] = "";
    int64_t scanned = 0, chunk = limit < 100 ? 100 : limit;
    int more = 1;
    while (more && (int64_t)json_array_size(records) < limit && scanned < gw->scan_max) {
        redisReply *r = store_command(req->store, "XREVRANGE %s %s %s COUNT %lld", KEYS_AUDIT, end,
                                      start, (long long)chunk);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            json_decref(records);
            json_decref(f.groups);
            http_error(req, "UNAVAILABLE", "the state store is unreachable");
            return;
        }
        size_t i = 0;
        for (; i < r->elements && (int64_t)json_array_size(records) < limit; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 || !e->element[0]->str)
                continue;
            util_strlcpy(last, e->element[0]->str, sizeof last);
            scanned++;
            json_t *record = s_entry(e, &f);
            if (record)
                json_array_append_new(records, record);
        }
        /* A full chunk, or one left part way (the page is full): there may be more. */
        more = (int64_t)r->elements == chunk || i < r->elements;
        freeReplyObject(r);
        snprintf(end, sizeof end, "(%s", last);
    }
    json_decref(f.groups);
    http_json(req, 200,
              json_pack("{s:o, s:o}", "records", records, "next_marker",
                        more && last[0] ? json_string(last) : json_null()));
}
