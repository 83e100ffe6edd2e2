/*  cli output: what a person reads. JSON values as short text, tables with aligned columns,
    "key: value" listings, and the live progress lines of --wait. */
#include "cli.h"

#include <stdarg.h>
#include <time.h>
#include <unistd.h>

const char *cli_text(json_t *value, char *buf, size_t size)
{
    if (!value || json_is_null(value))
        snprintf(buf, size, "-");
    else if (json_is_string(value))
        snprintf(buf, size, "%s", *json_string_value(value) ? json_string_value(value) : "-");
    else if (json_is_integer(value))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
    else if (json_is_real(value))
        snprintf(buf, size, "%.3f", json_real_value(value));
    else if (json_is_boolean(value))
        snprintf(buf, size, "%s", json_is_true(value) ? "yes" : "no");
    else {
        char *text = json_dumps(value, JSON_COMPACT);
        snprintf(buf, size, "%s", text ? text : "?");
        free(text);
    }
    return buf;
}

/* ---- tables ---- */

struct _cli_table_t {
    int columns;
    size_t rows; /* including the header row */
    size_t capacity;
    char **cells; /* rows * columns strings */
};

cli_table_t *cli_table_new(int columns, ...)
{
    cli_table_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->columns = columns;
    self->capacity = 16;
    self->cells = calloc(self->capacity * (size_t)columns, sizeof *self->cells);
    if (!self->cells) {
        free(self);
        return NULL;
    }
    va_list ap;
    va_start(ap, columns);
    for (int c = 0; c < columns; c++)
        self->cells[c] = strdup(va_arg(ap, const char *));
    va_end(ap);
    self->rows = 1;
    return self;
}

void cli_table_destroy(cli_table_t **self_p)
{
    if (self_p && *self_p) {
        cli_table_t *self = *self_p;
        for (size_t i = 0; i < self->rows * (size_t)self->columns; i++)
            free(self->cells[i]);
        free(self->cells);
        free(self);
        *self_p = NULL;
    }
}

void cli_table_add(cli_table_t *self, ...)
{
    if (!self)
        return;
    if (self->rows == self->capacity) {
        char **grown =
            realloc(self->cells, self->capacity * 2 * (size_t)self->columns * sizeof *self->cells);
        if (!grown)
            return;
        self->cells = grown;
        self->capacity *= 2;
    }
    va_list ap;
    va_start(ap, self);
    char **row = self->cells + self->rows * (size_t)self->columns;
    for (int c = 0; c < self->columns; c++) {
        const char *text = va_arg(ap, const char *);
        row[c] = strdup(text ? text : "-");
    }
    va_end(ap);
    self->rows++;
}

/* Characters on screen (UTF-8 continuation bytes take no column). */
static size_t s_width(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Print rows from `first` on (1 leaves the header out), aligned over every row. */
static void s_print(cli_table_t *self, FILE *out, size_t first)
{
    if (!self)
        return;
    size_t *width = calloc((size_t)self->columns, sizeof *width);
    if (!width)
        return;
    for (size_t r = first; r < self->rows; r++)
        for (int c = 0; c < self->columns; c++) {
            size_t w = s_width(self->cells[r * (size_t)self->columns + c]);
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = first; r < self->rows; r++) {
        for (int c = 0; c < self->columns; c++) {
            const char *cell = self->cells[r * (size_t)self->columns + c];
            cell = cell ? cell : "";
            if (c == self->columns - 1)
                fputs(cell, out);
            else
                fprintf(out, "%s%*s", cell, (int)(width[c] - s_width(cell) + 2), "");
        }
        fputc('\n', out);
    }
    free(width);
}

void cli_table_print(cli_table_t *self, FILE *out)
{
    s_print(self, out, 0);
}

/* ---- key: value ---- */

static void s_flatten(json_t *object, const char *prefix, json_t *out)
{
    const char *key;
    json_t *value;
    json_object_foreach(object, key, value)
    {
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", key);
        if (json_is_object(value) && json_object_size(value) > 0)
            s_flatten(value, name, out);
        else
            json_object_set(out, name, value);
    }
}

void cli_print_object(json_t *object, const char *const *first)
{
    json_t *flat = json_object();
    s_flatten(object, "", flat);
    cli_table_t *table = cli_table_new(2, "FIELD", "VALUE");
    char text[4096], label[300];
    for (const char *const *f = first; f && *f; f++) {
        json_t *value = json_object_get(flat, *f);
        if (!value)
            continue;
        snprintf(label, sizeof label, "%s:", *f);
        cli_table_add(table, label, cli_text(value, text, sizeof text));
        json_object_del(flat, *f);
    }
    const char *key;
    json_t *value;
    json_object_foreach(flat, key, value)
    {
        snprintf(label, sizeof label, "%s:", key);
        cli_table_add(table, label, cli_text(value, text, sizeof text));
    }
    s_print(table, stdout, 1); /* a listing, not a table: no header */
    cli_table_destroy(&table);
    json_decref(flat);
}

/* ---- progress ---- */

typedef struct {
    char *key;
    char *line;
    int changed; /* not printed since it last changed */
} s_line_t;

struct _cli_progress_t {
    FILE *out;
    int tty; /* rewrite in place */
    s_line_t *lines;
    size_t count;
    size_t drawn; /* lines on screen from the last draw (tty) */
};

cli_progress_t *cli_progress_new(FILE *out)
{
    cli_progress_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->out = out;
    const char *term = getenv("TERM");
    self->tty = isatty(fileno(out)) && !(term && streq(term, "dumb"));
    return self;
}

int cli_progress_tty(cli_progress_t *self)
{
    return self && self->tty;
}

void cli_progress_destroy(cli_progress_t **self_p)
{
    if (self_p && *self_p) {
        cli_progress_t *self = *self_p;
        for (size_t i = 0; i < self->count; i++) {
            free(self->lines[i].key);
            free(self->lines[i].line);
        }
        free(self->lines);
        free(self);
        *self_p = NULL;
    }
}

void cli_progress_set(cli_progress_t *self, const char *key, const char *line)
{
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++)
        if (streq(self->lines[i].key, key)) {
            if (!streq(self->lines[i].line, line)) {
                char *copy = strdup(line);
                if (copy) {
                    free(self->lines[i].line);
                    self->lines[i].line = copy;
                    self->lines[i].changed = 1;
                }
            }
            return;
        }
    s_line_t *grown = realloc(self->lines, (self->count + 1) * sizeof *grown);
    if (!grown)
        return;
    self->lines = grown;
    s_line_t *l = &self->lines[self->count];
    l->key = strdup(key);
    l->line = strdup(line);
    if (!l->key || !l->line) {
        free(l->key);
        free(l->line);
        return;
    }
    l->changed = 1;
    self->count++;
}

void cli_progress_draw(cli_progress_t *self)
{
    if (!self)
        return;
    if (self->tty) {
        int changed = self->count != self->drawn;
        for (size_t i = 0; i < self->count; i++)
            changed |= self->lines[i].changed;
        if (!changed)
            return;
        /* Back to the first line drawn, then every line again, each cleared first. */
        if (self->drawn)
            fprintf(self->out, "\033[%zuA", self->drawn);
        for (size_t i = 0; i < self->count; i++) {
            fprintf(self->out, "\r\033[2K%s\n", self->lines[i].line);
            self->lines[i].changed = 0;
        }
        self->drawn = self->count;
    } else
        for (size_t i = 0; i < self->count; i++)
            if (self->lines[i].changed) {
                fprintf(self->out, "%s\n", self->lines[i].line);
                self->lines[i].changed = 0;
            }
    fflush(self->out);
}

void cli_pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}
