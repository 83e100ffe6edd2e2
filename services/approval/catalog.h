/*  catalog: the template catalog in Redis (berth:template:<id>, berth:templates, the name
    index berth:template-name:<name>). Seeds the first templates on an empty store, lists,
    adds and resolves templates by id or name. Every write is one model_tx whose checks
    keep names unique even with several approval instances. */
#ifndef BERTH_APPROVAL_CATALOG_H
#define BERTH_APPROVAL_CATALOG_H

#include "fault.h"
#include "policy.h"
#include "store.h"

#include "berth.pb-c.h"

/* Seed the built-in templates when the catalog is empty. Returns how many were added
   (0 when the catalog already had templates, or another instance seeded it first), or
   -1 with a fault when Redis failed. Safe to call from any number of instances at once. */
int catalog_seed(store_t *store, fault_t *fault);

/* Every template, sorted by name. *list_p is freed with catalog_list_destroy(). */
int catalog_list(store_t *store, Berth__TemplateList **list_p, fault_t *fault);
void catalog_list_destroy(Berth__TemplateList **list_p);

/* Add a template after checking every field; id_out (UTIL_ID_LEN) receives its new id.
   CONFLICT when the name is taken, BAD_REQUEST on invalid fields or a full catalog. */
int catalog_create(store_t *store, const policy_t *policy, const Berth__Template *tmpl,
                   const char *actor, char *id_out, fault_t *fault);

/* The template a request names, by id or by name. NOT_FOUND "unknown template '<ref>'".
   Free *tmpl_p with protobuf_c_message_free_unpacked(). */
int catalog_find(store_t *store, const char *ref, Berth__Template **tmpl_p, fault_t *fault);

#endif
