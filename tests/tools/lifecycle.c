/*  berth-lifecycle: the lifecycle table (lib/lifecycle.c) as the "Lifecycle" section of
    docs/state.md. --markdown prints the section, --write FILE replaces it in FILE, and
    --check FILE (the test docs.lifecycle) fails when FILE's section is not what the table
    says, naming the first line that differs. */
#include "lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole of a stream as a string (caller frees), or NULL. */
static char *s_slurp(FILE *in)
{
    size_t size = 0, cap = 8192;
    char *text = malloc(cap);
    while (text) {
        size += fread(text + size, 1, cap - size - 1, in);
        if (ferror(in)) {
            free(text);
            return NULL;
        }
        if (feof(in))
            break;
        if (size + 1 == cap) {
            char *bigger = realloc(text, cap *= 2);
            if (!bigger)
                free(text);
            text = bigger;
        }
    }
    if (text)
        text[size] = '\0';
    return text;
}

static char *s_read(const char *path)
{
    FILE *in = fopen(path, "r");
    if (!in) {
        fprintf(stderr, "berth-lifecycle: cannot read %s\n", path);
        return NULL;
    }
    char *text = s_slurp(in);
    fclose(in);
    if (!text)
        fprintf(stderr, "berth-lifecycle: cannot read %s\n", path);
    return text;
}

/* The generated section, or NULL. */
static char *s_section(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return NULL;
    int rc = lifecycle_markdown(out);
    fclose(out);
    if (rc != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Where the section starts in doc and its length (through the end marker's newline). */
static int s_find(const char *doc, size_t *start, size_t *len)
{
    const char *begin = strstr(doc, LIFECYCLE_DOC_BEGIN);
    const char *end = begin ? strstr(begin, LIFECYCLE_DOC_END) : NULL;
    if (!end)
        return -1;
    end += strlen(LIFECYCLE_DOC_END);
    if (*end == '\n')
        end++;
    *start = (size_t)(begin - doc);
    *len = (size_t)(end - begin);
    return 0;
}

static int s_check(const char *path)
{
    char *doc = s_read(path), *want = s_section();
    int rc = 1;
    size_t start, len;
    if (!doc || !want)
        ;
    else if (s_find(doc, &start, &len) != 0)
        fprintf(stderr,
                "%s has no generated lifecycle section (%s ... %s); run "
                "`berth-lifecycle --write %s`\n",
                path, LIFECYCLE_DOC_BEGIN, LIFECYCLE_DOC_END, path);
    else if (len == strlen(want) && memcmp(doc + start, want, len) == 0)
        rc = 0;
    else {
        /* Name the first line that differs, counted in the file. */
        const char *have = doc + start, *w = want;
        int line = 1;
        for (const char *p = doc; p < have; p++)
            line += *p == '\n';
        while (*have && *w && *have == *w && (size_t)(have - doc) < start + len) {
            line += *have == '\n';
            have++;
            w++;
        }
        const char *want_line = w, *have_line = have;
        while (want_line > want && want_line[-1] != '\n')
            want_line--;
        while (have_line > doc && have_line[-1] != '\n')
            have_line--;
        fprintf(stderr,
                "%s:%d: the lifecycle section differs from the table in lib/lifecycle.c\n"
                "  doc:   %.*s\n  table: %.*s\nregenerate it with `berth-lifecycle --write %s`\n",
                path, line, (int)strcspn(have_line, "\n"), have_line, (int)strcspn(want_line, "\n"),
                want_line, path);
    }
    free(doc);
    free(want);
    return rc;
}

static int s_write(const char *path)
{
    char *doc = s_read(path), *want = s_section();
    int rc = 1;
    size_t start, len;
    if (doc && want) {
        if (s_find(doc, &start, &len) != 0) {
            start = strlen(doc); /* no section yet: append it */
            len = 0;
        }
        FILE *out = fopen(path, "w");
        if (out) {
            fwrite(doc, 1, start, out);
            fputs(want, out);
            fputs(doc + start + len, out);
            rc = fclose(out) == 0 ? 0 : 1;
        }
        if (rc)
            fprintf(stderr, "berth-lifecycle: cannot write %s\n", path);
    }
    free(doc);
    free(want);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--markdown") == 0)
        return lifecycle_markdown(stdout) == 0 ? 0 : 1;
    if (argc == 3 && strcmp(argv[1], "--check") == 0)
        return s_check(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--write") == 0)
        return s_write(argv[2]);
    fprintf(stderr, "usage: berth-lifecycle --markdown | --check FILE | --write FILE\n");
    return 2;
}
