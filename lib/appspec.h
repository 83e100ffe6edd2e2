/*  appspec: an image's applications written as one line of text, the form the CLI's --apps
    and an upload's `applications` query parameter take: NAME[=VERSION][;ram=MB][;disk=GB],...
    ';' and ',' never occur in a Debian version, so a version is taken whole up to them. */
#ifndef BERTH_APPSPEC_H
#define BERTH_APPSPEC_H

#include <jansson.h>
#include <stddef.h>

/* The text as the JSON import's array: [{"name", "version", "min_ram_mb", "min_disk_gb"}]
   (version only when given, a need only when given). NULL with the reason in why (a whole
   sentence naming the item) when an item is empty, a name or version too long, a need not a
   whole number or over its limit, a key unknown or given twice, or too many items. */
json_t *appspec_parse(const char *text, char *why, size_t why_size);

#endif
