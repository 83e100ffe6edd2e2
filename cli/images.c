/*  berth images, image show, image import, image delete: the stager's model images (GET,
    POST and DELETE /v1/images). An import names a file under the stager's import directory
    (on the stager's machine, not this one) and the model's metadata; the stager inspects it
    before it stores anything and the image ends READY once copied. */
#include "cli.h"

#define T(obj, key) cli_text(json_object_get((obj), (key)), (char[256]){ 0 }, 256)

static const char s_usage[] =
    "usage: berth image list | berth image show IMAGE | berth image delete IMAGE\n"
    "       berth image import PATH --name NAME --os OS [--os-version V] [--arch ARCH]\n"
    "                          [--apps NAME=VERSION,...] [--min-ram-mb N] [--min-disk-gb N]\n"
    "                          [--kernel FILE --initrd FILE [--cmdline TEXT]]\n"
    "  PATH, FILE: files under the stager's import directory; IMAGE: id or name;\n"
    "  --kernel/--initrd: the image boots them directly (a direct-boot image)\n";

/* The applications as "name version, ..." into buf. */
static const char *s_apps(json_t *apps, char *buf, size_t size)
{
    size_t i, n = 0;
    json_t *a;
    buf[0] = '\0';
    json_array_foreach(apps, i, a)
    {
        const char *name = json_string_value(json_object_get(a, "name"));
        const char *version = json_string_value(json_object_get(a, "version"));
        int w = snprintf(buf + n, size - n, "%s%s%s%s", i ? ", " : "", name ? name : "",
                         version ? " " : "", version ? version : "");
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
    return buf[0] ? buf : "-";
}

static void s_table(json_t *images)
{
    cli_table_t *table = cli_table_new(9, "ID", "NAME", "STATE", "OS", "VERSION", "ARCH",
                                       "APPLICATIONS", "MIN_RAM_MB", "MIN_DISK_GB");
    size_t i;
    json_t *im;
    char apps[512];
    json_array_foreach(images, i, im) cli_table_add(
        table, T(im, "id"), T(im, "name"), T(im, "state"), T(im, "os"), T(im, "os_version"),
        T(im, "arch"), s_apps(json_object_get(im, "applications"), apps, sizeof apps),
        T(im, "min_ram_mb"), T(im, "min_disk_gb"));
    cli_table_print(table, stdout);
    cli_table_destroy(&table);
}

/* One image: -o json/yaml as answered, else its fields one per line. */
static void s_show(cli_t *cli, json_t *answer)
{
    if (cli->json) {
        cli_print_json(answer);
        return;
    }
    static const char *const first[] = { "id",   "name",   "state",      "os",     "os_version",
                                         "arch", "format", "size_bytes", "sha256", NULL };
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

/* "a=1,b" as [{"name": "a", "version": "1"}, {"name": "b"}]. */
static json_t *s_apps_arg(const char *text)
{
    json_t *out = json_array();
    char buf[4096];
    if (!out || util_strlcpy(buf, text, sizeof buf) != 0) {
        json_decref(out);
        return NULL;
    }
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(p, '=');
        if (eq)
            *eq = '\0';
        json_t *app = json_pack("{s:s}", "name", p);
        if (eq && app)
            json_object_set_new(app, "version", json_string(eq + 1));
        json_array_append_new(out, app);
    }
    return out;
}

static int s_import(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = { { "name", 1, NULL, 0 },
                         { "os", 1, NULL, 0 },
                         { "os-version", 1, NULL, 0 },
                         { "arch", 1, NULL, 0 },
                         { "apps", 1, NULL, 0 },
                         { "min-ram-mb", 1, NULL, 0 },
                         { "min-disk-gb", 1, NULL, 0 },
                         { "kernel", 1, NULL, 0 },
                         { "initrd", 1, NULL, 0 },
                         { "cmdline", 1, NULL, 0 },
                         { NULL } };
    const char *pos[1] = { NULL };
    if (cli_parse(argc, argv, opts, pos, 1, 1) != 0 || !opts[0].set || !opts[1].set) {
        fputs(s_usage, stderr);
        return 2;
    }
    json_t *body =
        json_pack("{s:s, s:s, s:s}", "path", pos[0], "name", opts[0].value, "os", opts[1].value);
    if (opts[2].set)
        json_object_set_new(body, "os_version", json_string(opts[2].value));
    if (opts[3].set)
        json_object_set_new(body, "arch", json_string(opts[3].value));
    if (opts[4].set) {
        json_t *apps = s_apps_arg(opts[4].value);
        if (!apps) {
            fputs("berth image import: --apps takes NAME=VERSION,...\n", stderr);
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

/* berth image list | show IMAGE | import PATH ... | delete IMAGE (argv[0] "images") */
int cli_images(cli_t *cli, int argc, char **argv)
{
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
