/*  berth images, image show, image import, image delete, image stage: the stager's images
    (GET, POST and DELETE /v1/images; POST /v1/images/{id}/stage). An import names a file under
    the stager's import directory (on the stager's machine, not this one) and the model's
    metadata; the stager inspects it before it stores anything and the image ends READY once
    copied. Staging derives a staged image from a model (identity stripped, qcow2, sha256);
    --wait follows its stages. */
#include "cli.h"

#include "appspec.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] =
    "usage: berth image list [--kind model|staged] | berth image show IMAGE\n"
    "       berth image delete IMAGE | berth image stage MODEL [--wait]\n"
    "       berth image import PATH|--file LOCAL --name NAME --os OS [--os-version V]\n"
    "                          [--arch ARCH] [--apps APPS] [--min-ram-mb N]\n"
    "                          [--min-disk-gb N] [--kernel FILE --initrd FILE [--cmdline TEXT]]\n"
    "  PATH, FILE: files under the stager's import directory; IMAGE: id or name;\n"
    "  --apps: NAME[=VERSION][;ram=MB][;disk=GB],... each application and what it needs\n"
    "    beyond the OS (--min-*), e.g. 'nginx=1.22;ram=256;disk=1,postgresql=15'\n"
    "  --file LOCAL: a file on this machine, uploaded (streamed, with progress);\n"
    "  --kernel/--initrd: the image boots them directly (a direct-boot image)\n";

/* The applications as "name version (256 MB RAM, 1 GB disk), ..." into buf: each with what
   it needs beyond the OS when its importer stated it. */
static const char *s_apps(json_t *apps, char *buf, size_t size)
{
    size_t i, n = 0;
    json_t *a;
    buf[0] = '\0';
    json_array_foreach(apps, i, a)
    {
        const char *name = json_string_value(json_object_get(a, "name"));
        const char *version = json_string_value(json_object_get(a, "version"));
        json_int_t ram = json_integer_value(json_object_get(a, "min_ram_mb"));
        json_int_t disk = json_integer_value(json_object_get(a, "min_disk_gb"));
        char need[64] = "";
        if (ram > 0 && disk > 0)
            snprintf(need, sizeof need, " (%lld MB RAM, %lld GB disk)", (long long)ram,
                     (long long)disk);
        else if (ram > 0)
            snprintf(need, sizeof need, " (%lld MB RAM)", (long long)ram);
        else if (disk > 0)
            snprintf(need, sizeof need, " (%lld GB disk)", (long long)disk);
        int w = snprintf(buf + n, size - n, "%s%s%s%s%s", i ? ", " : "", name ? name : "",
                         version && *version ? " " : "", version ? version : "", need);
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
    return buf[0] ? buf : "-";
}

/* The images as a table; a staged image's model by name (from names: id -> name). */
static void s_table_named(json_t *images, json_t *names)
{
    cli_table_t *table = cli_table_new(11, "ID", "NAME", "KIND", "MODEL", "STATE", "OS", "VERSION",
                                       "ARCH", "APPLICATIONS", "MIN_RAM_MB", "MIN_DISK_GB");
    size_t i;
    json_t *im;
    char apps[512];
    json_array_foreach(images, i, im) cli_table_add(
        table, T(im, "id"), T(im, "name"), T(im, "kind"), cli_name_of(names, im, "model"),
        T(im, "state"), T(im, "os"), T(im, "os_version"), T(im, "arch"),
        s_apps(json_object_get(im, "applications"), apps, sizeof apps), T(im, "min_ram_mb"),
        T(im, "min_disk_gb"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

static void s_table(json_t *images)
{
    json_t *names = json_object();
    size_t i;
    json_t *im;
    json_array_foreach(images, i, im)
    {
        const char *id = json_string_value(json_object_get(im, "id"));
        if (id && names)
            json_object_set(names, id, json_object_get(im, "name"));
    }
    s_table_named(images, names);
    json_decref(names);
}

/* One image: -o json/yaml as answered, else its fields one per line. */
static void s_show(cli_t *cli, json_t *answer)
{
    if (cli->json) {
        cli_print_json(answer);
        return;
    }
    static const char *const first[] = { "id",     "name",       "kind",   "model",      "state",
                                         "stage",  "percent",    "os",     "os_version", "arch",
                                         "format", "size_bytes", "sha256", NULL };
    json_t *im = json_deep_copy(json_object_get(answer, "image"));
    char apps[1024];
    if (im) {
        json_object_set_new(
            im, "applications",
            json_string(s_apps(json_object_get(im, "applications"), apps, sizeof apps)));
        cli_print_object(im, first);
    }
    json_decref(im);
}

/* Append &key=value (escaped) to the query in path. -1 when it does not fit. */
static int s_query_add(char *path, size_t size, const char *key, const char *value)
{
    char escaped[1024];
    size_t n = strlen(path);
    if (cli_escape(value, escaped, sizeof escaped) != 0)
        return -1;
    int w = snprintf(path + n, size - n, "%s%s=%s", strchr(path, '?') ? "&" : "?", key, escaped);
    return w < 0 || (size_t)w >= size - n ? -1 : 0;
}

/* berth image import --file LOCAL: the file uploaded (POST /v1/images, the file as the body,
   the metadata as query parameters). */
static int s_upload(cli_t *cli, const char *file, const cli_opt_t *opts)
{
    static const char *const keys[] = { "name",         "os",         "os_version", "arch",
                                        "applications", "min_ram_mb", "min_disk_gb" };
    char path[CLI_PATH_MAX] = "/v1/images";
    for (int i = 0; i < 7; i++)
        if (opts[i].set && s_query_add(path, sizeof path, keys[i], opts[i].value) != 0) {
            fprintf(stderr, "berth image import: --%s is too long\n", opts[i].name);
            return 2;
        }
    long status = 0;
    json_t *answer = NULL;
    if (cli_upload(cli, path, file, &status, &answer) != 0)
        return 1;
    if (status != 201 || !json_is_object(answer)) {
        cli_print_error(cli, "berth image import", status, answer);
        json_decref(answer);
        return 1;
    }
    s_show(cli, answer);
    json_decref(answer);
    return 0;
}

static int s_import(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "name", 1, NULL, 0 },        { "os", 1, NULL, 0 },
                         { "os-version", 1, NULL, 0 },  { "arch", 1, NULL, 0 },
                         { "apps", 1, NULL, 0 },        { "min-ram-mb", 1, NULL, 0 },
                         { "min-disk-gb", 1, NULL, 0 }, { "kernel", 1, NULL, 0 },
                         { "initrd", 1, NULL, 0 },      { "cmdline", 1, NULL, 0 },
                         { "file", 1, NULL, 0 },        { NULL } };
    const char *pos[1] = { NULL };
    if (cli_parse(argc, argv, opts, pos, 0, 1) != 0 || !opts[0].set || !opts[1].set ||
        !pos[0] == !opts[10].set || (opts[10].set && (opts[7].set || opts[8].set || opts[9].set))) {
        fputs(s_usage, stderr);
        return 2;
    }
    if (opts[10].set)
        return s_upload(cli, opts[10].value, opts);
    json_t *body =
        json_pack("{s:s, s:s, s:s}", "path", pos[0], "name", opts[0].value, "os", opts[1].value);
    if (opts[2].set)
        json_object_set_new(body, "os_version", json_string(opts[2].value));
    if (opts[3].set)
        json_object_set_new(body, "arch", json_string(opts[3].value));
    if (opts[4].set) {
        /* Read as the gateway reads an upload's applications (lib/appspec.h). */
        char why[256];
        json_t *apps = appspec_parse(opts[4].value, why, sizeof why);
        if (!apps) {
            fprintf(stderr, "berth image import: --apps: %s\n", why);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, "applications", apps);
    }
    const char *boot[] = { "kernel", "initrd", "cmdline" };
    for (int i = 0; i < 3; i++)
        if (opts[7 + i].set)
            json_object_set_new(body, boot[i], json_string(opts[7 + i].value));
    const char *fields[] = { "min_ram_mb", "min_disk_gb" };
    for (int i = 0; i < 2; i++) {
        int64_t v;
        if (!opts[5 + i].set)
            continue;
        if (util_parse_int(opts[5 + i].value, 0, INT64_MAX, &v) != 0) {
            fprintf(stderr, "berth image import: --%s must be a whole number\n", opts[5 + i].name);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, fields[i], json_integer(v));
    }
    json_t *answer = NULL;
    int rc = cli_http(cli, "POST", "/v1/images", body, &answer);
    json_decref(body);
    if (rc != 0)
        return 1;
    s_show(cli, answer);
    json_decref(answer);
    return 0;
}

/* berth image list [--kind K]: every image, or one kind (GET /v1/images?kind=K). */
static int s_list(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "kind", 1, NULL, 0 }, { NULL } };
    if (cli_parse(argc, argv, opts, NULL, 0, 0) != 0) {
        fputs(s_usage, stderr);
        return 2;
    }
    char path[CLI_PATH_MAX], kind[64];
    if (opts[0].set && cli_escape(opts[0].value, kind, sizeof kind) != 0) {
        fputs("berth image list: --kind is model or staged\n", stderr);
        return 2;
    }
    snprintf(path, sizeof path, "/v1/images%s%s", opts[0].set ? "?kind=" : "",
             opts[0].set ? kind : "");
    json_t *answer = NULL;
    if (cli_http(cli, "GET", path, NULL, &answer) != 0)
        return 1;
    if (cli->json)
        cli_print_json(answer);
    else {
        /* The models named by the staged images listed, whichever kind was asked for. */
        json_t *names = cli_names(cli, "/v1/images?kind=model", "images");
        s_table_named(json_object_get(answer, "images"), names);
        json_decref(names);
    }
    json_decref(answer);
    return 0;
}

#define STAGE_POLL_MS 200
#define STAGE_WAIT_S  3600 /* a staging is followed this long (virt-sysprep is slow emulated) */

/* berth image stage MODEL [--wait]: a staged image derived from the model; with --wait its
   stages and percent as they pass (stderr), then the image (0 READY, 1 FAILED). */
static int s_stage(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "wait", 0, NULL, 0 }, { NULL } };
    const char *pos[1] = { NULL };
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0) {
        fputs(s_usage, stderr);
        return 2;
    }
    char path[CLI_PATH_MAX], stage_path[CLI_PATH_MAX + 8];
    if (cli_path(path, sizeof path, "images", pos[0]) != 0) {
        fputs("berth image stage: image too long\n", stderr);
        return 2;
    }
    snprintf(stage_path, sizeof stage_path, "%s/stage", path);
    json_t *answer = NULL;
    if (cli_http(cli, "POST", stage_path, NULL, &answer) != 0)
        return 1;
    char id[64];
    cli_text(json_object_get(json_object_get(answer, "image"), "id"), id, sizeof id);
    if (!opts[0].set || cli_path(path, sizeof path, "images", id) != 0) {
        s_show(cli, answer);
        json_decref(answer);
        return 0;
    }
    char name[128];
    cli_text(json_object_get(json_object_get(answer, "image"), "name"), name, sizeof name);
    cli_progress_t *progress = cli_progress_new(stderr);
    int64_t deadline = util_mono_ms() + (int64_t)STAGE_WAIT_S * 1000;
    int rc = -1;
    while (rc < 0) {
        json_decref(answer);
        answer = NULL;
        if (cli_http(cli, "GET", path, NULL, &answer) != 0) {
            rc = 1;
            break;
        }
        json_t *im = json_object_get(answer, "image");
        char stage[32], state[32], line[256];
        cli_text(json_object_get(im, "stage"), stage, sizeof stage);
        cli_text(json_object_get(im, "state"), state, sizeof state);
        snprintf(line, sizeof line, "stage %s  %-8s %3d%%  %s", name, stage,
                 (int)json_integer_value(json_object_get(im, "percent")), state);
        cli_progress_set(progress, id, line);
        cli_progress_draw(progress);
        if (streq(state, "READY"))
            rc = 0;
        else if (!streq(state, "STAGING")) {
            char fault[1024];
            fprintf(stderr, "berth: staging %s %s: %s\n", name, state,
                    cli_text(json_object_get(im, "fault"), fault, sizeof fault));
            rc = 1;
        } else if (util_mono_ms() >= deadline) {
            fprintf(stderr, "berth: %s is still STAGING after %d s\n", name, STAGE_WAIT_S);
            rc = 1;
        } else
            cli_pause_ms(STAGE_POLL_MS);
    }
    cli_progress_destroy(&progress);
    if (answer)
        s_show(cli, answer);
    json_decref(answer);
    return rc;
}

/* berth image list | show IMAGE | import PATH ... | delete IMAGE | stage MODEL
   (argv[0] "images") */
int cli_images(cli_t *cli, int argc, char **argv)
{
    const char *verb = argc > 1 && argv[1][0] != '-' ? argv[1] : "list";
    int shift = argc > 1 && argv[1][0] != '-' ? 1 : 0;
    if (streq(verb, "stage"))
        return s_stage(cli, argc - 1, argv + 1);
    if (streq(verb, "list"))
        return s_list(cli, argc - shift, argv + shift);
    static const cli_resource_t images = { .noun = "image",
                                           .label = "image",
                                           .collection = "images",
                                           .one = "image",
                                           .ref = "id",
                                           .make_verb = "import",
                                           .make = s_import,
                                           .show = s_show,
                                           .table = s_table,
                                           .usage = s_usage };
    return cli_resource(cli, &images, argc, argv);
}
