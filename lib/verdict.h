/*  verdict: the rules a machine asked for breaks and the suggestions that would make it work,
    appended to a BuildVerdict by the scheduler's heuristics (need, host fit, applications) and
    by approval's group checks (quota, budget, templates) alike. What is appended is owned by
    the verdict (malloc'd) and freed with it (protobuf_c_message_free_unpacked). */
#ifndef BERTH_VERDICT_H
#define BERTH_VERDICT_H

#include "berth.pb-c.h"

/* Append a rule broken: rule (ram, disk, vcpus, host, os, applications, image, template,
   quota, budget), the request field it concerns, and why. 0, or -1 when out of memory. */
int verdict_rule(Berth__BuildVerdict *v, const char *rule, const char *field, const char *format,
                 ...) __attribute__((format(printf, 4, 5)));

/* Append a suggestion (kind, its value, the sentence a person reads), once per (kind, value):
   a second one with the same pair is dropped. 0, or -1 when out of memory. */
int verdict_suggest(Berth__BuildVerdict *v, const char *kind, const char *value, const char *format,
                    ...) __attribute__((format(printf, 4, 5)));

#endif
