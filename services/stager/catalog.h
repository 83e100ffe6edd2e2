/*  catalog: the stager's image store. Each model image is an Image message (proto/berth.proto)
    stored as the hash berth:image:<name> through lib/model, its name in the set berth:images
    and its id in berth:image-id:<id>; its state (IMPORTING, STAGING, READY, FAILED, DELETING)
   changes by the image rows of the lifecycle table. The image file itself lives in the images
    directory. At start the stager makes sure the base images exist (small qcow2 files made
    with qemu-img); imports add more (import.h), and staging derives staged images from them
    (staging.h), each listed in berth:image-staged:<model id>. */
#ifndef BERTH_STAGER_CATALOG_H
#define BERTH_STAGER_CATALOG_H

#include "error.h"
#include "model.h"

#define CATALOG_NOT_FOUND 1 /* no image of that name */

typedef struct {
    const char *qemu_img;  /* the tool, looked up in PATH when not absolute */
    const char *base_size; /* virtual size of created base images, qemu-img syntax ("2G") */
    int timeout_ms;        /* a qemu-img run longer than this is killed */
    int max_images;        /* most images ListImages returns */
    const char *instance;  /* this stager instance: the worker named in records it works on */
} catalog_config_t;

typedef struct _catalog_t catalog_t;

/* A catalog over store (borrowed) keeping files in images_dir (created if missing). */
catalog_t *catalog_new(store_t *store, const char *images_dir, const catalog_config_t *config);
void catalog_destroy(catalog_t **self_p);

/* 1 if text can name an image: [a-z0-9][a-z0-9._-]{0,63}. */
int catalog_valid_name(const char *text);

/* Make sure every base image has its file on this machine and its record in Redis:
   a record whose file is missing here is rebuilt. 0, or -1 with error. */
int catalog_ensure_base(catalog_t *self, char *error, size_t error_size);

/* The image ref names (its id, or its name): 0 and *image_p (free with
   protobuf_c_message_free_unpacked), CATALOG_NOT_FOUND, or -1 when Redis failed. */
int catalog_get(catalog_t *self, const char *ref, Berth__Image **image_p);

/* The images directory (absolute, resolved). */
const char *catalog_dir(catalog_t *self);

/* Record an accepted import: image (id, name and what describes it set; no path yet) becomes
   IMPORTING, if its name and id are free. 0, or -1 with error (CONFLICT naming `name`). */
int catalog_import_begin(catalog_t *self, const Berth__Image *image, const char *actor,
                         const char *request_id, berth_error_t *error);

/* End an import: READY with its file's path (and a direct-boot image's kernel and initrd,
   NULL or "" when none), size and sha256, or FAILED with fault (then the rest is not used).
   0, MODEL_CONFLICT (not IMPORTING any more) or -1. */
int catalog_import_end(catalog_t *self, const char *name, const char *path, const char *kernel,
                       const char *initrd, int64_t size, const char *sha256, const char *fault);

/* Delete the image ref names, and its file, unless a template or a VM that is not DISPOSED
   (or REJECTED) names it. 0 and *deleted_p (the record as it was; free it), or -1 with error:
   NOT_FOUND, CONFLICT (in use: details.templates, details.vms name a few; or IMPORTING),
   UNAVAILABLE. actor and request_id go into the audit trail. */
int catalog_delete(catalog_t *self, const char *ref, const char *actor, const char *request_id,
                   Berth__Image **deleted_p, berth_error_t *error);

/* Every image of kind ("model", "staged"; NULL or "": all), by name, at most max_images,
   without their manifests: 0 and *list_p (free with protobuf_c_message_free_unpacked), or -1
   when Redis failed. */
int catalog_list(catalog_t *self, const char *kind, Berth__ImageList **list_p);

/* Record a staged image derived from model: staged (id, name, kind "staged", model and what
   describes it) becomes STAGING, listed under the model's staged images, if the model is
   still READY and the name and id are free. 0, or -1 with error (CONFLICT, UNAVAILABLE). */
int catalog_stage_begin(catalog_t *self, const Berth__Image *model, const Berth__Image *staged,
                        const char *actor, const char *request_id, berth_error_t *error);

/* How far a STAGING image is: its stage and percent. 0, MODEL_CONFLICT (not STAGING) or -1. */
int catalog_stage_progress(catalog_t *self, const char *name, const char *stage, int percent);

/* What a staging that succeeded made (all borrowed). */
typedef struct {
    const char *path; /* the qcow2 file in the images directory */
    int64_t size;
    const char *sha256;
    const char *manifest; /* the manifest left by sysprep ("" when none) */
    const char *report;   /* what each sysprep operation did (JSON) */
} catalog_staged_t;

/* End a staging: READY with done, or FAILED with fault (done not used). 0, MODEL_CONFLICT
   (not STAGING any more) or -1. */
int catalog_stage_end(catalog_t *self, const char *name, const catalog_staged_t *done,
                      const char *fault);

/*  Recovery: a record IMPORTING or STAGING names the stager instance working on it (its
    `worker`). One whose worker is no live stager instance, or is this instance but no job of
    it here (restarted under the same name), was left by a stager that died: it ends FAILED
    with a fault saying so, and its partial files go. A captured image's record (recorded
    before its upload's file is moved into the store) is kept while the upload's files are
    here: the taskmgr's FinishUpload, sent again, ends it. */

/* This instance works on the image id now (an import's copy, a staging): recovery leaves it
   alone until catalog_work_end. */
void catalog_work_begin(catalog_t *self, const char *id);
void catalog_work_end(catalog_t *self, const char *id);

/* Take over an import a dead stager left (its record now names this instance): 0 when it
   is being imported again, -1 when it cannot be (then it ends FAILED with why). */
typedef int(catalog_resume_fn)(void *arg, const Berth__Image *image, const char *why);

/* End every record left behind as above, given the live stager instances (n names), and
   remove partial files of images no live instance works on. A path import that names its
   files (import_path) is taken over and handed to resume (when not NULL) instead. 0 and
   *failed_p (records ended FAILED or taken over), or -1 when Redis failed. */
int catalog_recover(catalog_t *self, const char *const *live, size_t n, catalog_resume_fn *resume,
                    void *arg, int *failed_p);

#endif
