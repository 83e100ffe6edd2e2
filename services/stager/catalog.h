/*  catalog: the stager's image catalog. Each image is an Image message (proto/berth.proto)
    stored as the hash berth:image:<name> through lib/model, its name in the set
    berth:images; the image file itself lives in the images directory. At start the stager
    makes sure the base images exist: small qcow2 files made with qemu-img. */
#ifndef BERTH_STAGER_CATALOG_H
#define BERTH_STAGER_CATALOG_H

#include "model.h"

#define CATALOG_NOT_FOUND 1 /* no image of that name */

typedef struct {
    const char *qemu_img;  /* the tool, looked up in PATH when not absolute */
    const char *base_size; /* virtual size of created base images, qemu-img syntax ("2G") */
    int timeout_ms;        /* a qemu-img run longer than this is killed */
    int max_images;        /* most images ListImages returns */
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

/* The image called name: 0 and *image_p (free with protobuf_c_message_free_unpacked),
   CATALOG_NOT_FOUND, or -1 when Redis failed. */
int catalog_get(catalog_t *self, const char *name, Berth__Image **image_p);

/* Every image, by name, at most max_images: 0 and *list_p (free with
   protobuf_c_message_free_unpacked), or -1 when Redis failed. */
int catalog_list(catalog_t *self, Berth__ImageList **list_p);

#endif
