/*  kinds: the table of request kinds (kinds.h). */
#include "kinds.h"
#include "allocations.h"
#include "extensions.h"
#include "onboarding.h"
#include "util.h"

#include <stdlib.h>

static const kinds_t s_kinds[] = {
    { "vm", NULL, NULL, NULL },
    { "onboarding", onboarding_approve, onboarding_conflict, free },
    { "allocation", allocations_approve, NULL, allocations_release },
    { "extension", extensions_approve, NULL, NULL },
    { NULL, NULL, NULL, NULL },
};

const kinds_t *kinds_find(const char *kind)
{
    if (!kind || !*kind)
        kind = "vm";
    for (const kinds_t *k = s_kinds; k->kind; k++)
        if (streq(k->kind, kind))
            return k;
    return NULL;
}
