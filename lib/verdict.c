/* verdict: see verdict.h. */
#include "verdict.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *s_dup(const char *text)
{
    return strdup(text ? text : "");
}

int verdict_rule(Berth__BuildVerdict *v, const char *rule, const char *field, const char *format,
                 ...)
{
    char text[256];
    va_list ap;
    va_start(ap, format);
    vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    Berth__BuildRule **grown = realloc(v->violations, (v->n_violations + 1) * sizeof *grown);
    if (!grown)
        return -1;
    v->violations = grown;
    Berth__BuildRule *r = malloc(sizeof *r);
    if (!r)
        return -1;
    berth__build_rule__init(r);
    grown[v->n_violations++] = r;
    r->rule = s_dup(rule);
    r->field = s_dup(field);
    r->message = s_dup(text);
    return r->rule && r->field && r->message ? 0 : -1;
}

int verdict_suggest(Berth__BuildVerdict *v, const char *kind, const char *value, const char *format,
                    ...)
{
    for (size_t i = 0; i < v->n_suggestions; i++)
        if (strcmp(v->suggestions[i]->kind, kind) == 0 &&
            strcmp(v->suggestions[i]->value, value) == 0)
            return 0;
    char text[256];
    va_list ap;
    va_start(ap, format);
    vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    Berth__BuildSuggestion **grown =
        realloc(v->suggestions, (v->n_suggestions + 1) * sizeof *grown);
    if (!grown)
        return -1;
    v->suggestions = grown;
    Berth__BuildSuggestion *s = malloc(sizeof *s);
    if (!s)
        return -1;
    berth__build_suggestion__init(s);
    grown[v->n_suggestions++] = s;
    s->kind = s_dup(kind);
    s->value = s_dup(value);
    s->message = s_dup(text);
    return s->kind && s->value && s->message ? 0 : -1;
}
