/*  images: the stager's image store over REST. POST /v1/images names a file under the
    stager's import directory and the model's metadata; the stager inspects the file
    (qemu-img) before it stores anything and answers the record IMPORTING, or refuses it
    naming the field (path for the file: a backing file, a format not accepted, a virtual
    size over the limit). Lists, reads, deletions and staging (POST /v1/images/{id}/stage:
    a staged image derived from a model) are the stager's too (over the bus);
    the gateway checks the shape of the body and shows the records. */
#include "gateway.h"

#include "appspec.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *view_image(const Berth__Image *im)
{
    json_t *apps = json_array();
    for (size_t i = 0; apps && i < im->n_applications; i++) {
        const Berth__ImageApp *a = im->applications[i];
        json_t *app =
            json_pack("{s:o, s:o}", "name", view_str(a->name), "version", view_str(a->version));
        /* What the application needs beyond the OS, when its importer stated it. */
        if (app && a->min_ram_mb > 0)
            json_object_set_new(app, "min_ram_mb", json_integer((json_int_t)a->min_ram_mb));
        if (app && a->min_disk_gb > 0)
            json_object_set_new(app, "min_disk_gb", json_integer((json_int_t)a->min_disk_gb));
        json_array_append_new(apps, app);
    }
    /* direct_boot: the image boots its own kernel and initrd (the paths stay the stager's). */
    json_t *boot = im->kernel_path && *im->kernel_path
                       ? json_pack("{s:o}", "cmdline", view_str(im->cmdline))
                       : json_null();
    int staged = im->kind && strcmp(im->kind, "staged") == 0;
    json_t *view = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:o, s:I, s:o, s:o, s:o, s:o, s:I, s:o, s:s, "
        "s:o, s:o, s:o}",
        "id", view_str(im->id), "name", view_str(im->name), "os", view_str(im->os), "os_version",
        view_str(im->os_version), "arch", view_str(im->arch), "applications",
        apps ? apps : json_array(), "min_ram_mb", (json_int_t)im->min_ram_mb, "min_disk_gb",
        (json_int_t)im->min_disk_gb, "format", view_str(im->format), "size_bytes",
        (json_int_t)im->size_bytes, "sha256", view_str(im->sha256), "state", view_str(im->state),
        "fault", view_str(im->fault), "created", rest_time(im->created_ms), "version",
        (json_int_t)im->version, "direct_boot", boot ? boot : json_null(), "kind",
        staged ? "staged" : "model", "model", staged ? view_str(im->model) : json_null(), "stage",
        im->stage && *im->stage ? view_str(im->stage) : json_null(), "percent",
        staged ? json_integer(im->percent) : json_null());
    /* The manifest and what sysprep did: stored as JSON text, shown as JSON (one image's read
       carries them; a list does not, see catalog_list). */
    if (view)
        json_object_set_new(view, "captured_from",
                            im->captured_from && *im->captured_from ? json_string(im->captured_from)
                                                                    : json_null());
    json_t *manifest = im->manifest && *im->manifest ? json_loads(im->manifest, 0, NULL) : NULL;
    if (view && manifest)
        json_object_set_new(view, "manifest", manifest);
    else
        json_decref(manifest);
    if (view && staged) {
        json_t *ops = im->sysprep_report && *im->sysprep_report
                          ? json_loads(im->sysprep_report, 0, NULL)
                          : NULL;
        json_object_set_new(view, "sysprep",
                            json_pack("{s:o, s:o}", "method", view_str(im->sysprep), "operations",
                                      ops ? ops : json_null()));
    }
    return view;
}

static void s_image_answer(http_req_t *req, ProtobufCMessage *answer, int status)
{
    const Berth__Image *im = (const Berth__Image *)answer;
    if (status == 201 && im->id && *im->id)
        snprintf(req->location, sizeof req->location, "/v1/images/%s", im->id);
    http_json(req, status, json_pack("{s:o}", "image", view_image(im)));
}

static void s_imported(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Image *im = (const Berth__Image *)answer;
    log_info(req->request_id, "image import accepted", "{s:s, s:s, s:s}", "image", im->name, "id",
             im->id, "by", req->user);
    s_image_answer(req, answer, 201);
}

static void s_got(http_req_t *req, ProtobufCMessage *answer)
{
    s_image_answer(req, answer, 200);
}

static void s_deleted(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Image *im = (const Berth__Image *)answer;
    log_info(req->request_id, "image deleted", "{s:s, s:s, s:s}", "image", im->name, "id", im->id,
             "by", req->user);
    s_image_answer(req, answer, 200);
}

static void s_staged(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Image *im = (const Berth__Image *)answer;
    log_info(req->request_id, "image staging accepted", "{s:s, s:s, s:s, s:s}", "image", im->name,
             "id", im->id, "model", im->model, "by", req->user);
    if (im->id && *im->id)
        snprintf(req->location, sizeof req->location, "/v1/images/%s", im->id);
    http_json(req, 202, json_pack("{s:o}", "image", view_image(im)));
}

static void s_listed(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__ImageList *list = (const Berth__ImageList *)answer;
    json_t *images = json_array();
    for (size_t i = 0; images && i < list->n_images; i++)
        json_array_append_new(images, view_image(list->images[i]));
    http_json(req, 200, json_pack("{s:o}", "images", images));
}

/* The body's "applications": [{name, version}] into items/ptrs (strings borrowed from the
   body). 0 and *n, or -1 with a 400 naming the field sent. */
int images_applications(http_req_t *req, Berth__ImageApp *items, Berth__ImageApp **ptrs, size_t *n)
{
    *n = 0;
    json_t *apps = json_object_get(req->body, "applications");
    if (!apps)
        return 0;
    if (!json_is_array(apps))
        return http_bad_field(req, "applications",
                              "applications must be an array of {name, version}");
    if (json_array_size(apps) > LIMIT_IMAGE_APPS_MAX)
        return http_bad_field(req, "applications", "at most %d applications", LIMIT_IMAGE_APPS_MAX);
    size_t i;
    json_t *app;
    json_array_foreach(apps, i, app)
    {
        json_t *name = json_object_get(app, "name"), *version = json_object_get(app, "version");
        json_t *ram = json_object_get(app, "min_ram_mb"),
               *disk = json_object_get(app, "min_disk_gb");
        size_t known = 1 + (version != NULL) + (ram != NULL) + (disk != NULL);
        if (!json_is_object(app) || json_object_size(app) != known || !json_is_string(name) ||
            (version && !json_is_string(version)) ||
            (ram && (!json_is_integer(ram) || json_integer_value(ram) < 0 ||
                     json_integer_value(ram) > LIMIT_RAM_MB_MAX)) ||
            (disk && (!json_is_integer(disk) || json_integer_value(disk) < 0 ||
                      json_integer_value(disk) > LIMIT_DISK_GB_MAX)))
            return http_bad_field(req, "applications",
                                  "applications[%zu] must be {\"name\": text, \"version\": text, "
                                  "\"min_ram_mb\": 0 to %d, \"min_disk_gb\": 0 to %d}",
                                  i, LIMIT_RAM_MB_MAX, LIMIT_DISK_GB_MAX);
        size_t nlen = json_string_length(name), vlen = version ? json_string_length(version) : 0;
        if (nlen == 0 || nlen > LIMIT_IMAGE_TEXT_MAX || vlen > LIMIT_IMAGE_TEXT_MAX)
            return http_bad_field(req, "applications",
                                  "applications[%zu]: name 1 to %d characters, version at most %d",
                                  i, LIMIT_IMAGE_TEXT_MAX, LIMIT_IMAGE_TEXT_MAX);
        berth__image_app__init(&items[i]);
        items[i].name = (char *)json_string_value(name);
        items[i].version = (char *)(version ? json_string_value(version) : "");
        items[i].min_ram_mb = ram ? (int64_t)json_integer_value(ram) : 0;
        items[i].min_disk_gb = disk ? (int64_t)json_integer_value(disk) : 0;
        ptrs[i] = &items[i];
    }
    *n = json_array_size(apps);
    return 0;
}

/* The query parameters an upload takes: the metadata a JSON import gives in its body. */
static const char *const s_meta_params[] = { "name",         "os",         "os_version",  "arch",
                                             "applications", "min_ram_mb", "min_disk_gb", NULL };

void images_import(http_req_t *req)
{
    for (const char *const *p = s_meta_params; *p; p++)
        if (http_query(req, *p))
            return (void)http_bad_field(req, *p,
                                        "query parameters are for an upload (Content-Type: "
                                        "application/octet-stream); a JSON import gives '%s' in "
                                        "its body",
                                        *p);
    static const char *const allowed[] = { "path",   "name",         "os",         "os_version",
                                           "arch",   "applications", "min_ram_mb", "min_disk_gb",
                                           "kernel", "initrd",       "cmdline",    "manifest",
                                           NULL };
    const char *path, *name, *os, *os_version = NULL, *arch = NULL;
    const char *kernel = NULL, *initrd = NULL, *cmdline = NULL;
    int64_t min_ram_mb = 0, min_disk_gb = 0;
    if (rest_body(req, allowed) || rest_str(req, "path", 1, LIMIT_IMAGE_PATH_MAX, &path) ||
        rest_str(req, "name", 1, LIMIT_IMAGE_NAME_MAX, &name) ||
        rest_str(req, "os", 1, LIMIT_TEXT_MAX, &os) ||
        rest_str(req, "os_version", 0, LIMIT_IMAGE_TEXT_MAX, &os_version) < 0 ||
        rest_str(req, "arch", 0, LIMIT_IMAGE_TEXT_MAX, &arch) < 0 ||
        rest_int(req, "min_ram_mb", 0, 0, LIMIT_RAM_MB_MAX, &min_ram_mb) < 0 ||
        rest_int(req, "min_disk_gb", 0, 0, LIMIT_DISK_GB_MAX, &min_disk_gb) < 0 ||
        rest_str(req, "kernel", 0, LIMIT_IMAGE_PATH_MAX, &kernel) < 0 ||
        rest_str(req, "initrd", 0, LIMIT_IMAGE_PATH_MAX, &initrd) < 0 ||
        rest_str(req, "cmdline", 0, LIMIT_IMAGE_CMDLINE_MAX, &cmdline) < 0)
        return;
    Berth__ImageApp items[LIMIT_IMAGE_APPS_MAX];
    Berth__ImageApp *ptrs[LIMIT_IMAGE_APPS_MAX];
    size_t n_apps = 0;
    if (images_applications(req, items, ptrs, &n_apps) != 0)
        return;
    Berth__Image image = BERTH__IMAGE__INIT;
    image.name = (char *)name;
    image.os = (char *)os;
    image.os_version = (char *)(os_version ? os_version : "");
    image.arch = (char *)(arch ? arch : "");
    image.applications = ptrs;
    image.n_applications = n_apps;
    image.min_ram_mb = min_ram_mb;
    image.min_disk_gb = min_disk_gb;
    image.cmdline = (char *)(cmdline ? cmdline : "");
    /* The manifest goes to the stager as JSON text; the stager checks what it lists. */
    json_t *given = json_object_get(req->body, "manifest");
    char *manifest = NULL;
    if (given && !json_is_null(given)) {
        manifest = json_is_object(given) ? json_dumps(given, JSON_COMPACT) : NULL;
        if (!manifest)
            return (void)http_bad_field(req, "manifest",
                                        "manifest must be an object {\"files\": [{\"path\", "
                                        "\"content\"}]}");
        if (strlen(manifest) > LIMIT_IMAGE_MANIFEST_MAX) {
            free(manifest);
            return (void)http_bad_field(req, "manifest", "manifest is longer than %d bytes",
                                        LIMIT_IMAGE_MANIFEST_MAX);
        }
    }
    Berth__ImportImage ask = BERTH__IMPORT_IMAGE__INIT;
    ask.manifest = manifest ? manifest : "";
    ask.path = (char *)path;
    ask.kernel = (char *)(kernel ? kernel : "");
    ask.initrd = (char *)(initrd ? initrd : "");
    ask.image = &image;
    rest_call(req, "stager", &ask.base, &berth__image__descriptor, s_imported);
    free(manifest);
}

void images_list(http_req_t *req)
{
    const char *kind = http_query(req, "kind");
    if (kind && strcmp(kind, "model") != 0 && strcmp(kind, "staged") != 0) {
        http_bad_field(req, "kind", "kind is model or staged");
        return;
    }
    Berth__ListImages ask = BERTH__LIST_IMAGES__INIT;
    ask.kind = (char *)(kind ? kind : "");
    rest_call(req, "stager", &ask.base, &berth__image_list__descriptor, s_listed);
}

/* The {id} of the route, when it can name an image (its id, or its name); NULL with 404. */
static const char *s_ref(http_req_t *req)
{
    const char *id = req->params[0];
    if (!rest_id_ok(id)) {
        http_error(req, "NOT_FOUND", "no such image");
        return NULL;
    }
    return id;
}

void images_get(http_req_t *req)
{
    const char *id = s_ref(req);
    if (!id)
        return;
    Berth__GetImage ask = BERTH__GET_IMAGE__INIT;
    ask.id = (char *)id;
    rest_call(req, "stager", &ask.base, &berth__image__descriptor, s_got);
}

void images_delete(http_req_t *req)
{
    const char *id = s_ref(req);
    if (!id)
        return;
    Berth__DeleteImage ask = BERTH__DELETE_IMAGE__INIT;
    ask.id = (char *)id;
    rest_call(req, "stager", &ask.base, &berth__image__descriptor, s_deleted);
}

void images_stage(http_req_t *req)
{
    static const char *const none[] = { NULL }; /* it takes no field */
    const char *id = s_ref(req);
    if (!id || (req->body && rest_body(req, none)))
        return;
    Berth__StageModel ask = BERTH__STAGE_MODEL__INIT;
    ask.id = (char *)id;
    rest_call(req, "stager", &ask.base, &berth__image__descriptor, s_staged);
}

/* ---- uploads: POST /v1/images with the image file as an application/octet-stream body ----

   The body is never held whole: it is cut into chunks (image_upload_chunk_bytes, at most what
   the stager takes) as it arrives, and each is sent to the stager (PutImageChunk, with its
   SHA-256) before more of the body is read: the request is parked while a chunk is on its
   way, so the client is held back by TCP, and the gateway holds one chunk per upload. The
   whole file's SHA-256 is computed on the way and handed over with FinishUpload, where the
   stager checks it and inspects the file with qemu-img as it inspects a path import. A
   request that ends before FinishUpload was answered (the client went away, a refusal)
   drops the upload at the stager (AbortUpload); the stager drops an upload left idle. */

typedef struct {
    char id[UTIL_ID_LEN];
    uint8_t *buffer; /* the chunk being filled */
    size_t chunk;    /* its size */
    size_t filled;   /* bytes in it */
    int64_t held;    /* bytes the stager holds */
    int ending;      /* the body has ended: the last chunk, then FinishUpload */
    int done;        /* FinishUpload answered with the image */
    crypto_hash_sha256_state digest;
} s_upload_t;

/* AbortUpload, sent without waiting: its end frees it. */
static void s_abort_done(calls_call_t *call)
{
    if (call->reply)
        berth__envelope__free_unpacked(call->reply, NULL);
    free(call->body);
    free(call);
}

static void s_abort(gateway_t *gw, const char *id, const char *request_id)
{
    Berth__AbortUpload ask = BERTH__ABORT_UPLOAD__INIT;
    ask.upload_id = (char *)id;
    calls_call_t *call = calloc(1, sizeof *call);
    if (!call)
        return;
    call->service = "stager";
    call->type = &berth__abort_upload__descriptor;
    call->body_len = berth__abort_upload__get_packed_size(&ask);
    call->body = malloc(call->body_len ? call->body_len : 1);
    if (!call->body) {
        free(call);
        return;
    }
    berth__abort_upload__pack(&ask, call->body);
    util_strlcpy(call->request_id, request_id, sizeof call->request_id);
    call->timeout_ms = gw->call_timeout_ms;
    call->done = s_abort_done;
    calls_submit(gw->calls, call);
}

void images_upload_release(http_req_t *req, int finished)
{
    (void)finished;
    s_upload_t *u = req->upload;
    if (!u)
        return;
    if (!u->done) {
        log_info(req->request_id, "image upload dropped", "{s:s, s:I}", "upload", u->id, "held",
                 (json_int_t)u->held);
        s_abort(req->app, u->id, req->request_id);
    }
    free(u->buffer);
    free(u);
    req->upload = NULL;
}

static void s_finish(http_req_t *req);

static void s_uploaded(http_req_t *req, ProtobufCMessage *answer)
{
    s_upload_t *u = req->upload;
    const Berth__Image *im = (const Berth__Image *)answer;
    u->done = 1;
    log_info(req->request_id, "image uploaded", "{s:s, s:s, s:s, s:I}", "image", im->name, "id",
             im->id, "by", req->user, "size_bytes", (json_int_t)im->size_bytes);
    s_image_answer(req, answer, 201);
}

/* A chunk is held by the stager: the next one fills, or the upload ends. */
static void s_chunk_held(http_req_t *req, ProtobufCMessage *answer)
{
    s_upload_t *u = req->upload;
    const Berth__UploadState *state = (const Berth__UploadState *)answer;
    if (state->received != u->held + (int64_t)u->filled) {
        log_warn(req->request_id, "the stager holds another length of an upload", "{s:s, s:I, s:I}",
                 "upload", u->id, "received", (json_int_t)state->received, "expected",
                 (json_int_t)(u->held + (int64_t)u->filled));
        http_error(req, "INTERNAL", "the image store lost part of the upload; send it again");
        return;
    }
    u->held = state->received;
    u->filled = 0;
    if (u->ending)
        s_finish(req);
}

/* Send the chunk filled (parks the request until the stager holds it). */
static void s_send_chunk(http_req_t *req)
{
    s_upload_t *u = req->upload;
    uint8_t digest[crypto_hash_sha256_BYTES];
    char hex[65];
    crypto_hash_sha256(digest, u->buffer, u->filled);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    crypto_hash_sha256_update(&u->digest, u->buffer, u->filled);
    Berth__PutImageChunk ask = BERTH__PUT_IMAGE_CHUNK__INIT;
    ask.upload_id = u->id;
    ask.offset = u->held;
    ask.data.data = u->buffer;
    ask.data.len = u->filled;
    ask.sha256 = hex;
    rest_call(req, "stager", &ask.base, &berth__upload_state__descriptor, s_chunk_held);
}

/* Every byte is held: the stager checks the whole file and inspects it. */
static void s_finish(http_req_t *req)
{
    s_upload_t *u = req->upload;
    if (u->filled) {
        s_send_chunk(req);
        return;
    }
    uint8_t digest[crypto_hash_sha256_BYTES];
    char hex[65];
    crypto_hash_sha256_final(&u->digest, digest);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    Berth__FinishUpload ask = BERTH__FINISH_UPLOAD__INIT;
    ask.upload_id = u->id;
    ask.sha256 = hex;
    rest_call(req, "stager", &ask.base, &berth__image__descriptor, s_uploaded);
}

static void s_opened(http_req_t *req, ProtobufCMessage *answer)
{
    s_upload_t *u = req->upload;
    const Berth__UploadState *state = (const Berth__UploadState *)answer;
    if (state->chunk_max > 0 && (int64_t)u->chunk > state->chunk_max)
        u->chunk = (size_t)state->chunk_max;
    log_info(req->request_id, "image upload opened", "{s:s, s:I, s:s}", "upload", u->id, "bytes",
             (json_int_t)req->body_length, "by", req->user);
}

void images_upload_begin(http_req_t *req)
{
    gateway_t *gw = req->app;
    /* The metadata arrives as query parameters: checked as the JSON import's body is. */
    json_t *meta = json_object();
    for (const char *const *p = s_meta_params; meta && *p; p++) {
        const char *v = http_query(req, *p);
        if (!v)
            continue;
        json_t *value = NULL;
        int64_t n;
        if (streq(*p, "applications")) {
            /* NAME[=VERSION][;ram=MB][;disk=GB],... (lib/appspec.h): the CLI's --apps too. */
            char why[256];
            if (!(value = appspec_parse(v, why, sizeof why))) {
                json_decref(meta);
                return (void)http_bad_field(req, "applications", "%s", why);
            }
        } else if (streq(*p, "min_ram_mb") || streq(*p, "min_disk_gb")) {
            if (util_parse_int(v, 0, INT64_MAX, &n) != 0) {
                json_decref(meta);
                return (void)http_bad_field(req, *p, "%s must be a whole number", *p);
            }
            value = json_integer(n);
        } else
            value = json_string(v);
        json_object_set_new(meta, *p, value ? value : json_null());
    }
    req->body = meta;
    const char *name, *os, *os_version = NULL, *arch = NULL;
    int64_t min_ram_mb = 0, min_disk_gb = 0;
    if (!meta || rest_str(req, "name", 1, LIMIT_IMAGE_NAME_MAX, &name) ||
        rest_str(req, "os", 1, LIMIT_TEXT_MAX, &os) ||
        rest_str(req, "os_version", 0, LIMIT_IMAGE_TEXT_MAX, &os_version) < 0 ||
        rest_str(req, "arch", 0, LIMIT_IMAGE_TEXT_MAX, &arch) < 0 ||
        rest_int(req, "min_ram_mb", 0, 0, LIMIT_RAM_MB_MAX, &min_ram_mb) < 0 ||
        rest_int(req, "min_disk_gb", 0, 0, LIMIT_DISK_GB_MAX, &min_disk_gb) < 0) {
        if (!req->status)
            http_error(req, "INTERNAL", "out of memory");
        return;
    }
    Berth__ImageApp items[LIMIT_IMAGE_APPS_MAX];
    Berth__ImageApp *ptrs[LIMIT_IMAGE_APPS_MAX];
    size_t n_apps = 0;
    if (images_applications(req, items, ptrs, &n_apps) != 0)
        return;
    /* The size: declared, and within the limit, before a byte is read. */
    if (req->body_length < 1)
        return (void)http_bad_field(req, "Content-Length",
                                    "an upload states its size (Content-Length, 1 or more bytes)");
    if (req->body_length > gw->upload_max_bytes) {
        char message[128];
        snprintf(message, sizeof message,
                 "the image is %lld bytes, over the upload limit of %lld bytes",
                 (long long)req->body_length, (long long)gw->upload_max_bytes);
        return (void)http_error_details(
            req, "PAYLOAD_TOO_LARGE", message,
            json_pack("{s:s, s:I}", "field", "file", "max", (json_int_t)gw->upload_max_bytes));
    }
    s_upload_t *u = calloc(1, sizeof *u);
    if (u)
        u->buffer = malloc((size_t)gw->upload_chunk_bytes);
    if (!u || !u->buffer) {
        free(u);
        return (void)http_error(req, "INTERNAL", "out of memory");
    }
    util_uuid(u->id);
    u->chunk = (size_t)gw->upload_chunk_bytes;
    crypto_hash_sha256_init(&u->digest);
    req->upload = u;
    Berth__Image image = BERTH__IMAGE__INIT;
    image.name = (char *)name;
    image.os = (char *)os;
    image.os_version = (char *)(os_version ? os_version : "");
    image.arch = (char *)(arch ? arch : "");
    image.applications = ptrs;
    image.n_applications = n_apps;
    image.min_ram_mb = min_ram_mb;
    image.min_disk_gb = min_disk_gb;
    Berth__BeginUpload ask = BERTH__BEGIN_UPLOAD__INIT;
    ask.upload_id = u->id;
    ask.source = "gateway";
    ask.size_bytes = req->body_length;
    ask.image = &image;
    rest_call(req, "stager", &ask.base, &berth__upload_state__descriptor, s_opened);
}

size_t images_upload_data(http_req_t *req, const char *data, size_t size)
{
    s_upload_t *u = req->upload;
    size_t taken = 0;
    while (taken < size) {
        size_t n = u->chunk - u->filled < size - taken ? u->chunk - u->filled : size - taken;
        memcpy(u->buffer + u->filled, data + taken, n);
        u->filled += n;
        taken += n;
        if (u->filled == u->chunk) {
            s_send_chunk(req); /* parked until the stager holds it */
            break;
        }
    }
    return taken;
}

void images_upload_end(http_req_t *req)
{
    s_upload_t *u = req->upload;
    u->ending = 1;
    s_finish(req);
}
