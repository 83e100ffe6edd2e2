/*  heuristics: validate a machine asked for and choose its image (heuristics.h).

    The reasoning, in the order applied:
    1. Candidates. A template's request names a model image: the candidates are that image
       and the staged images made from it. A custom build names an OS (and maybe a version):
       the candidates are the READY images of that OS (and version). None: the OS rule is
       broken, and the OSes (or versions) the catalog has are suggested.
    2. Applications. Each application asked for must be in some candidate (so that an image
       or a first-boot install can provide it); one that is not breaks the applications rule,
       and the suggestions are to drop it, or to choose an OS version that has it.
    3. The best image: the most applications asked for, then the fewest not asked for (less
       to carry, less to patch), then the newest, then the smallest, then by name (so two
       schedulers choose alike). What it lacks is installed at first boot.
    4. Need. The chosen image's min_ram_mb / min_disk_gb are the OS's minimum; each
       application adds the largest need any image of the OS states for it (ImageApp); the
       sum plus the margin is what RAM and disk must reach, else "raise RAM to N MB".
    5. Hosts. Some host must be able to hold the size at all (its capacity with the
       overcommit ratios, whatever it holds now). If none can, the largest size that fits
       the biggest host is suggested; a need above every host says so. */
#include "heuristics.h"

#include "verdict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int64_t heuristics_with_margin(int64_t base, int margin_pct)
{
    if (base <= 0)
        return 0;
    return (base * (100 + margin_pct) + 99) / 100;
}

static char *s_dup(const char *text)
{
    return strdup(text ? text : "");
}

static int s_same(const char *a, const char *b)
{
    return strcasecmp(a ? a : "", b ? b : "") == 0;
}

static int s_ready(const Berth__Image *im)
{
    return !im->state || !*im->state || strcmp(im->state, "READY") == 0;
}

/* Does im hold the application named app? */
static const Berth__ImageApp *s_app(const Berth__Image *im, const char *app)
{
    for (size_t i = 0; i < im->n_applications; i++)
        if (s_same(im->applications[i]->name, app))
            return im->applications[i];
    return NULL;
}

/* Append one string (copied) to a repeated string field; -1 when out of memory. */
static int s_push(char ***list, size_t *n, const char *text)
{
    char **grown = realloc(*list, (*n + 1) * sizeof *grown);
    if (!grown)
        return -1;
    *list = grown;
    if (!(grown[*n] = s_dup(text)))
        return -1;
    (*n)++;
    return 0;
}

static Berth__Resources *s_resources(int64_t vcpus, int64_t ram_mb, int64_t disk_gb)
{
    Berth__Resources *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    berth__resources__init(r);
    r->vcpus = (int32_t)vcpus;
    r->ram_mb = ram_mb;
    r->disk_gb = disk_gb;
    return r;
}

static Berth__Image *s_clone(const Berth__Image *im)
{
    size_t len = berth__image__get_packed_size(im);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    berth__image__pack(im, buf);
    Berth__Image *copy = berth__image__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

/* Is image im a candidate for ask (see step 1)? model: the template's model image, or NULL. */
static int s_candidate(const Berth__ValidateBuild *ask, const Berth__Image *model,
                       const Berth__Image *im)
{
    if (!s_ready(im))
        return 0;
    if (model)
        return im == model || (s_same(im->kind, "staged") && im->model && model->id && *model->id &&
                               strcmp(im->model, model->id) == 0);
    if (!s_same(im->os, ask->os))
        return 0;
    return !ask->os_version || !*ask->os_version || s_same(im->os_version, ask->os_version);
}

/* Is a better than b for ask (step 3)? */
static int s_better(const Berth__ValidateBuild *ask, const Berth__Image *a, const Berth__Image *b)
{
    size_t have_a = 0, have_b = 0;
    for (size_t i = 0; i < ask->n_applications; i++) {
        have_a += s_app(a, ask->applications[i]) != NULL;
        have_b += s_app(b, ask->applications[i]) != NULL;
    }
    if (have_a != have_b)
        return have_a > have_b;
    size_t extra_a = a->n_applications - have_a, extra_b = b->n_applications - have_b;
    if (extra_a != extra_b)
        return extra_a < extra_b;
    if (a->created_ms != b->created_ms)
        return a->created_ms > b->created_ms;
    if (a->size_bytes != b->size_bytes)
        return a->size_bytes < b->size_bytes;
    return strcmp(a->name ? a->name : "", b->name ? b->name : "") < 0;
}

/* The best candidate for ask (steps 1 and 3), or NULL when there is none. */
static const Berth__Image *s_best(const Berth__ValidateBuild *ask, const Berth__Image *model,
                                  Berth__Image *const *images, size_t n)
{
    const Berth__Image *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (s_candidate(ask, model, images[i]) && (!best || s_better(ask, images[i], best)))
            best = images[i];
    return best;
}

/* The image named name (READY only when ready is set), or NULL. */
static const Berth__Image *s_named(Berth__Image *const *images, size_t n, const char *name,
                                   int ready)
{
    for (size_t i = 0; i < n; i++)
        if ((!ready || s_ready(images[i])) && s_same(images[i]->name, name))
            return images[i];
    return NULL;
}

const Berth__Image *heuristics_build_image(const char *image, int fixed,
                                           Berth__Image *const *images, size_t n_images)
{
    if (!image || !*image)
        return NULL;
    if (fixed)
        return s_named(images, n_images, image, 0);
    const Berth__Image *model = s_named(images, n_images, image, 1);
    if (!model)
        return NULL;
    /* A template's request: its model image, and no applications asked for beyond it. */
    Berth__ValidateBuild ask = BERTH__VALIDATE_BUILD__INIT;
    ask.image = (char *)image;
    return s_best(&ask, model, images, n_images);
}

/* An application's need for the OS of the candidates: the largest any of them states. */
static void s_app_need(const Berth__ValidateBuild *ask, const Berth__Image *model,
                       Berth__Image *const *images, size_t n, const char *app, int64_t *ram,
                       int64_t *disk)
{
    *ram = *disk = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s_candidate(ask, model, images[i]) &&
            !(model == NULL && s_ready(images[i]) && s_same(images[i]->os, ask->os)))
            continue;
        const Berth__ImageApp *a = s_app(images[i], app);
        if (a && a->min_ram_mb > *ram)
            *ram = a->min_ram_mb;
        if (a && a->min_disk_gb > *disk)
            *disk = a->min_disk_gb;
    }
}

/* Step 1's suggestions when no image fits: the versions of the OS, else the OSes. */
static int s_suggest_os(Berth__BuildVerdict *v, const Berth__ValidateBuild *ask,
                        Berth__Image *const *images, size_t n)
{
    int versions = 0;
    for (size_t i = 0; i < n; i++)
        if (s_ready(images[i]) && s_same(images[i]->os, ask->os)) {
            versions++;
            if (verdict_suggest(v, "os_version", images[i]->os_version,
                                "choose %s %s, which exists", images[i]->os,
                                images[i]->os_version) != 0)
                return -1;
        }
    if (versions)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s_ready(images[i]) && images[i]->os && *images[i]->os &&
            verdict_suggest(v, "os", images[i]->os, "choose os %s, which exists", images[i]->os) !=
                0)
            return -1;
    return 0;
}

/* Step 2 for one application missing from every candidate: drop it, or choose an OS version
   (the same OS first, then any) whose image has it. */
static int s_suggest_app(Berth__BuildVerdict *v, const Berth__ValidateBuild *ask,
                         Berth__Image *const *images, size_t n, const char *app)
{
    const char *os = ask->os && *ask->os ? ask->os : "this OS";
    if (verdict_suggest(v, "drop_application", app,
                        "drop application %s, which has no build for %s%s%s", app, os,
                        ask->os_version && *ask->os_version ? " " : "",
                        ask->os_version ? ask->os_version : "") != 0)
        return -1;
    const Berth__Image *found = NULL;
    for (int pass = 0; pass < 2 && !found; pass++)
        for (size_t i = 0; i < n && !found; i++)
            if (s_ready(images[i]) && s_app(images[i], app) &&
                (pass == 1 || s_same(images[i]->os, ask->os)))
                found = images[i];
    if (!found)
        return 0;
    char value[160];
    snprintf(value, sizeof value, "%s %s", found->os ? found->os : "",
             found->os_version ? found->os_version : "");
    return verdict_suggest(v, "os_version", value, "choose %s, which has %s", value, app);
}

/* Step 5: the host that holds the most of the size asked for (by RAM, then vCPUs, then
   disk), and that part of the size. */
static void s_largest_fit(const heuristics_size_t *hosts, size_t n, const heuristics_size_t *want,
                          heuristics_size_t *fit, heuristics_size_t *largest)
{
    memset(fit, 0, sizeof *fit);
    memset(largest, 0, sizeof *largest);
    for (size_t i = 0; i < n; i++) {
        heuristics_size_t f = {
            .vcpus = want->vcpus < hosts[i].vcpus ? want->vcpus : hosts[i].vcpus,
            .ram_mb = want->ram_mb < hosts[i].ram_mb ? want->ram_mb : hosts[i].ram_mb,
            .disk_gb = want->disk_gb < hosts[i].disk_gb ? want->disk_gb : hosts[i].disk_gb,
        };
        if (f.ram_mb > fit->ram_mb || (f.ram_mb == fit->ram_mb && f.vcpus > fit->vcpus) ||
            (f.ram_mb == fit->ram_mb && f.vcpus == fit->vcpus && f.disk_gb > fit->disk_gb))
            *fit = f;
        if (hosts[i].ram_mb > largest->ram_mb ||
            (hosts[i].ram_mb == largest->ram_mb && hosts[i].vcpus > largest->vcpus))
            *largest = hosts[i];
    }
}

static int s_fits_any(const heuristics_size_t *hosts, size_t n, const heuristics_size_t *want)
{
    for (size_t i = 0; i < n; i++)
        if (want->vcpus <= hosts[i].vcpus && want->ram_mb <= hosts[i].ram_mb &&
            want->disk_gb <= hosts[i].disk_gb)
            return 1;
    return 0;
}

static int s_verdict(const heuristics_config_t *config, const Berth__ValidateBuild *ask,
                     Berth__Image *const *images, size_t n_images, const heuristics_size_t *hosts,
                     size_t n_hosts, Berth__BuildVerdict *v)
{
    const Berth__Resources *fl = ask->flavor;
    heuristics_size_t want = { fl ? fl->vcpus : 0, fl ? fl->ram_mb : 0, fl ? fl->disk_gb : 0 };
    if (!(v->flavor = s_resources(want.vcpus, want.ram_mb, want.disk_gb)))
        return -1;

    /* 1. Candidates. */
    const Berth__Image *model = NULL;
    if (ask->image && *ask->image) {
        model = s_named(images, n_images, ask->image, 1);
        if (!model && verdict_rule(v, "image", "template",
                                   "the template's image %s is not READY in "
                                   "the catalog",
                                   ask->image) != 0)
            return -1;
    }
    const Berth__Image *best =
        model || !ask->image || !*ask->image ? s_best(ask, model, images, n_images) : NULL;
    if (!best && !model && (!ask->image || !*ask->image)) {
        if (ask->os_version && *ask->os_version) {
            if (verdict_rule(v, "os", "os_version", "no image of %s %s in the catalog", ask->os,
                             ask->os_version) != 0)
                return -1;
        } else if (verdict_rule(v, "os", "os", "no image of os %s in the catalog", ask->os) != 0)
            return -1;
        if (s_suggest_os(v, ask, images, n_images) != 0)
            return -1;
    }

    /* 2. Applications (only with an image of the OS to judge them by). */
    if (best)
        for (size_t a = 0; a < ask->n_applications; a++) {
            const char *app = ask->applications[a];
            int exists = 0;
            for (size_t i = 0; i < n_images && !exists; i++)
                exists = s_candidate(ask, model, images[i]) && s_app(images[i], app);
            if (!exists) {
                if (verdict_rule(v, "applications", "applications",
                                 "application %s has no build for %s %s", app, best->os,
                                 best->os_version) != 0 ||
                    s_suggest_app(v, ask, images, n_images, app) != 0)
                    return -1;
                continue;
            }
            /* 3. With the image or at first boot. */
            if (s_app(best, app) ? s_push(&v->from_image, &v->n_from_image, app)
                                 : s_push(&v->first_boot, &v->n_first_boot, app))
                return -1;
        }

    /* 4. Need. */
    if (best) {
        if (!(v->image = s_clone(best)))
            return -1;
        int64_t ram = best->min_ram_mb, disk = best->min_disk_gb;
        for (size_t a = 0; a < ask->n_applications; a++) {
            int64_t app_ram, app_disk;
            s_app_need(ask, model, images, n_images, ask->applications[a], &app_ram, &app_disk);
            ram += app_ram;
            disk += app_disk;
        }
        v->need_ram_mb = heuristics_with_margin(ram, config->margin_pct);
        v->need_disk_gb = heuristics_with_margin(disk, config->margin_pct);
    }

    /* 5. Hosts. */
    heuristics_size_t fit, largest;
    s_largest_fit(hosts, n_hosts, &want, &fit, &largest);
    if (!(v->largest = s_resources(largest.vcpus, largest.ram_mb, largest.disk_gb)))
        return -1;
    char value[96];
    if (v->need_ram_mb > want.ram_mb) {
        if (verdict_rule(v, "ram", "ram_mb",
                         "ram_mb %lld is below the %lld MB %s%s (with a %d%% margin)",
                         (long long)want.ram_mb, (long long)v->need_ram_mb, best->name,
                         ask->n_applications ? " and its applications need" : " needs",
                         config->margin_pct) != 0)
            return -1;
        snprintf(value, sizeof value, "%lld", (long long)v->need_ram_mb);
        if (v->need_ram_mb <= largest.ram_mb &&
            verdict_suggest(v, "ram_mb", value, "raise RAM to %lld MB",
                            (long long)v->need_ram_mb) != 0)
            return -1;
    }
    if (v->need_disk_gb > want.disk_gb) {
        if (verdict_rule(v, "disk", "disk_gb",
                         "disk_gb %lld is below the %lld GB %s%s (with a %d%% margin)",
                         (long long)want.disk_gb, (long long)v->need_disk_gb, best->name,
                         ask->n_applications ? " and its applications need" : " needs",
                         config->margin_pct) != 0)
            return -1;
        snprintf(value, sizeof value, "%lld", (long long)v->need_disk_gb);
        if (v->need_disk_gb <= largest.disk_gb &&
            verdict_suggest(v, "disk_gb", value, "raise disk to %lld GB",
                            (long long)v->need_disk_gb) != 0)
            return -1;
    }
    if (v->need_ram_mb > largest.ram_mb || v->need_disk_gb > largest.disk_gb) {
        if (verdict_rule(v, "host", "applications",
                         "the OS and applications need %lld MB RAM and %lld GB disk, more than any "
                         "host can hold (the largest: %lld MB, %lld GB)",
                         (long long)v->need_ram_mb, (long long)v->need_disk_gb,
                         (long long)largest.ram_mb, (long long)largest.disk_gb) != 0)
            return -1;
    }
    if (!s_fits_any(hosts, n_hosts, &want)) {
        if (verdict_rule(v, "host", want.vcpus > largest.vcpus ? "vcpus" : "ram_mb",
                         "no host could ever hold %lld vCPUs, %lld MB RAM and %lld GB disk (the "
                         "largest host: %lld vCPUs, %lld MB, %lld GB)",
                         (long long)want.vcpus, (long long)want.ram_mb, (long long)want.disk_gb,
                         (long long)largest.vcpus, (long long)largest.ram_mb,
                         (long long)largest.disk_gb) != 0)
            return -1;
        if (n_hosts && fit.vcpus > 0 && fit.ram_mb > 0 && fit.disk_gb > 0) {
            snprintf(value, sizeof value, "vcpus=%lld,ram_mb=%lld,disk_gb=%lld",
                     (long long)fit.vcpus, (long long)fit.ram_mb, (long long)fit.disk_gb);
            if (verdict_suggest(v, "size", value,
                                "the largest size that fits a host: %lld vCPUs, %lld MB RAM, %lld "
                                "GB disk",
                                (long long)fit.vcpus, (long long)fit.ram_mb,
                                (long long)fit.disk_gb) != 0)
                return -1;
        }
    }
    v->ok = v->n_violations == 0;
    return 0;
}

int heuristics_verdict(const heuristics_config_t *config, const Berth__ValidateBuild *ask,
                       Berth__Image *const *images, size_t n_images, const heuristics_size_t *hosts,
                       size_t n_hosts, Berth__BuildVerdict **verdict_p)
{
    Berth__BuildVerdict *v = malloc(sizeof *v);
    if (!v)
        return -1;
    berth__build_verdict__init(v);
    if (s_verdict(config, ask, images, n_images, hosts, n_hosts, v) != 0) {
        protobuf_c_message_free_unpacked(&v->base, NULL);
        return -1;
    }
    *verdict_p = v;
    return 0;
}
