/*  policy: limits and input rules of the approval service. Names are checked against the
    narrow grammars the rest of the platform relies on (a VM name becomes a hostname and a
    libvirt domain title, an image name a file name on the stager), so nothing looser gets
    stored and every refusal says which field broke which rule. */
#include "policy.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void policy_defaults(policy_t *self)
{
    self->max_count = LIMIT_COUNT_MAX;
    self->idempotency_ttl_ms = 24 * 3600 * 1000LL;
    self->max_templates = 1000;
    self->max_text = LIMIT_TEXT_MAX;
    self->max_reason = LIMIT_REASON_MAX;
    self->ram_ratio = 1.0;
    self->cpu_ratio = 4.0;
    self->disk_ratio = 1.0;
    self->host_timeout_ms = 3000;
    self->build_timeout_ms = 5000;
    self->build_lease_days = 30;
    self->pool_refill_delay_ms = 1000;
}

/* A ratio key, a decimal number in (0, 1000] as the scheduler takes it. */
static int s_ratio(config_t *config, const char *key, double *out)
{
    const char *text = config_get(config, key);
    char *end = NULL;
    double v = text ? strtod(text, &end) : 0.0;
    if (!text || end == text || *end || !(v > 0.0 && v <= 1000.0)) {
        log_error(NULL, "ratio must be a number above 0 and at most 1000", "{s:s, s:s?}", "key",
                  key, "value", text);
        return -1;
    }
    *out = v;
    return 0;
}

void policy_declare(config_t *config)
{
    /* The defaults are the limits of lib/limits.h, which a setting may lower only. */
    char count[16], text[16], reason[16];
    snprintf(count, sizeof count, "%d", LIMIT_COUNT_MAX);
    snprintf(text, sizeof text, "%d", LIMIT_TEXT_MAX);
    snprintf(reason, sizeof reason, "%d", LIMIT_REASON_MAX);
    config_declare(config, "max_count", count, 0);
    config_declare(config, "idempotency_ttl_s", "86400", 0);
    config_declare(config, "max_templates", "1000", 0);
    config_declare(config, "max_text", text, 0);
    config_declare(config, "max_reason", reason, 0);
    config_declare(config, "pool_refill_delay_ms", "1000", 0);
    /* The scheduler's keys, with its defaults */
    config_declare(config, "ram_ratio", "1.0", 0);
    config_declare(config, "cpu_ratio", "4.0", 0);
    config_declare(config, "disk_ratio", "1.0", 0);
    config_declare(config, "host_timeout_ms", "3000", 0);
    config_declare(config, "build_timeout_ms", "5000", 0);
    config_declare(config, "build_lease_days", "30", 0);
}

int policy_load(policy_t *self, config_t *config)
{
    int64_t count, ttl, templates, text, reason, lease;
    /* Upper bounds keep one request's transaction and one ListTemplates answer well inside
       a bus frame (ENVELOPE_MAX_BYTES). */
    if (config_int(config, "max_count", 1, LIMIT_COUNT_MAX, &count) ||
        config_int(config, "idempotency_ttl_s", 1, 30 * 86400, &ttl) ||
        config_int(config, "max_templates", 1, 10000, &templates) ||
        config_int(config, "max_text", 1, LIMIT_TEXT_MAX, &text) ||
        config_int(config, "max_reason", 0, LIMIT_REASON_MAX, &reason) ||
        config_int(config, "host_timeout_ms", 100, 86400000, &self->host_timeout_ms) ||
        config_int(config, "build_timeout_ms", 100, 600000, &self->build_timeout_ms) ||
        config_int(config, "build_lease_days", 1, 3650, &lease) ||
        config_int(config, "pool_refill_delay_ms", 0, 3600000, &self->pool_refill_delay_ms) ||
        s_ratio(config, "ram_ratio", &self->ram_ratio) ||
        s_ratio(config, "cpu_ratio", &self->cpu_ratio) ||
        s_ratio(config, "disk_ratio", &self->disk_ratio))
        return -1;
    self->max_count = (int)count;
    self->idempotency_ttl_ms = ttl * 1000;
    self->max_templates = (int)templates;
    self->max_text = (int)text;
    self->max_reason = (int)reason;
    self->build_lease_days = (int32_t)lease;
    return 0;
}

static int s_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int s_alnum(char c)
{
    return s_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* A token: 1..max characters from [A-Za-z0-9._-] (plus extra), starting with a letter or
   digit. The shape of user names, image names and keys. */
static int s_token(const char *text, size_t max, const char *extra)
{
    size_t len = text ? strlen(text) : 0;
    if (len == 0 || len > max || !s_alnum(text[0]))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!s_alnum(text[i]) && !strchr("._-", text[i]) && !(extra && strchr(extra, text[i])))
            return 0;
    return 1;
}

int policy_check_uuid(const char *field, const char *text, fault_t *fault)
{
    if (!text || !*text)
        return error_field(fault, field, "%s is required", field);
    if (!util_is_uuid(text))
        return error_field(fault, field, "%s must be a UUID", field);
    return 0;
}

int policy_check_owner(const char *field, const char *text, fault_t *fault)
{
    if (!text || !*text)
        return error_field(fault, field, "%s is required", field);
    if (!s_token(text, POLICY_OWNER_MAX, "@"))
        return error_field(fault, field,
                           "%s must be 1 to %d characters of letters, digits, '.', '_', '-', '@'",
                           field, POLICY_OWNER_MAX);
    return 0;
}

/* [a-z0-9][a-z0-9._-]{0,62}, and not shaped like an id: a reference to a template is
   either, and must never be both. */
int policy_is_template_name(const char *text)
{
    size_t len = text ? strlen(text) : 0;
    if (len == 0 || len > POLICY_TEMPLATE_NAME_MAX || !s_lower_alnum(text[0]))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!s_lower_alnum(text[i]) && !strchr("._-", text[i]))
            return 0;
    return !util_is_uuid(text);
}

int policy_check_template(const policy_t *self, const Berth__Template *t, fault_t *fault)
{
    if (!t)
        return error_field(fault, "template", "template is required");
    if (t->id && *t->id)
        return error_field(fault, "id", "template id is assigned by the server");
    if (!policy_is_template_name(t->name))
        return error_field(fault, "name",
                           "template name must match [a-z0-9][a-z0-9._-]{0,%d} and not be a UUID",
                           POLICY_TEMPLATE_NAME_MAX - 1);
    if (t->vcpus < 1 || t->vcpus > LIMIT_VCPUS_MAX)
        return error_field(fault, "vcpus", "vcpus must be between 1 and %d", LIMIT_VCPUS_MAX);
    if (t->ram_mb < LIMIT_RAM_MB_MIN || t->ram_mb > LIMIT_RAM_MB_MAX)
        return error_field(fault, "ram_mb", "ram_mb must be between %d and %d", LIMIT_RAM_MB_MIN,
                           LIMIT_RAM_MB_MAX);
    if (t->disk_gb < 1 || t->disk_gb > LIMIT_DISK_GB_MAX)
        return error_field(fault, "disk_gb", "disk_gb must be between 1 and %d", LIMIT_DISK_GB_MAX);
    if (t->lease_days < 1 || t->lease_days > LIMIT_LEASE_DAYS_MAX)
        return error_field(fault, "lease_days", "lease_days must be between 1 and %d",
                           LIMIT_LEASE_DAYS_MAX);
    /* Lease policy (0: the group's); taskmgr applies it (services/taskmgr/leases.c). */
    if (t->max_lease_days < 0 || t->max_lease_days > 36500)
        return error_field(fault, "max_lease_days", "max_lease_days must be from 0 to 36500");
    if (t->lease_notice_ms < 0 || t->lease_notice_ms > 36500LL * 86400000)
        return error_field(fault, "lease_notice_hours", "lease_notice_hours must be from 0 to %d",
                           36500 * 24);
    if (!s_token(t->image, (size_t)self->max_text, NULL))
        return error_field(fault, "image",
                           "image must be 1 to %d characters of letters, digits, '.', '_', '-'",
                           self->max_text);
    if (!s_token(t->os, (size_t)self->max_text, NULL))
        return error_field(fault, "os",
                           "os must be 1 to %d characters of letters, digits, '.', '_', '-'",
                           self->max_text);
    if (t->network && *t->network &&
        (strlen(t->network) > LIMIT_NETWORK_NAME_MAX || !policy_is_template_name(t->network)))
        return error_field(fault, "network", "network must be a network's name");
    if (t->n_networks > LIMIT_VM_NETWORKS_MAX)
        return error_field(fault, "networks", "networks may name at most %d networks",
                           LIMIT_VM_NETWORKS_MAX);
    for (size_t i = 0; i < t->n_networks; i++) {
        char field[32];
        snprintf(field, sizeof field, "networks[%zu]", i);
        if (!t->networks[i] || strlen(t->networks[i]) > LIMIT_NETWORK_NAME_MAX ||
            !policy_is_template_name(t->networks[i]))
            return error_field(fault, field, "%s must be a network's name", field);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->networks[i], t->networks[j]) == 0)
                return error_field(fault, field, "%s names network '%s' again", field,
                                   t->networks[i]);
    }
    if (t->n_networks > 0 && t->network && *t->network && strcmp(t->network, t->networks[0]) != 0)
        return error_field(fault, "network", "network must be the first of networks");
    if (t->disk && *t->disk && strcmp(t->disk, "linked") != 0 && strcmp(t->disk, "full") != 0)
        return error_field(fault, "disk", "disk must be linked or full");
    /* The hypervisor its VMs need (the scheduler compares it with the hosts' without case). */
    if (t->hypervisor && *t->hypervisor && !s_token(t->hypervisor, POLICY_HYPERVISOR_MAX, NULL))
        return error_field(fault, "hypervisor",
                           "hypervisor must be 1 to %d characters of letters, digits, '.', '_', "
                           "'-' (a libvirt driver name: qemu, test)",
                           POLICY_HYPERVISOR_MAX);
    return 0;
}

int policy_check_placement(const char *placement, fault_t *fault)
{
    if (placement && *placement && strcmp(placement, "affinity") != 0 &&
        strcmp(placement, "anti-affinity") != 0)
        return error_field(fault, "placement", "placement must be affinity or anti-affinity");
    return 0;
}

int policy_check_template_ref(const char *text, fault_t *fault)
{
    if (!text || !*text)
        return error_field(fault, "template", "template is required");
    size_t len = strlen(text);
    if (len > LIMIT_TEMPLATE_REF_MAX)
        return error_field(fault, "template", "template must be at most %d characters",
                           LIMIT_TEMPLATE_REF_MAX);
    for (size_t i = 0; i < len; i++)
        if (text[i] < 0x21 || text[i] > 0x7e)
            return error_field(fault, "template", "template must be printable ASCII");
    return 0;
}

int policy_check_vm_name(const char *text, fault_t *fault)
{
    size_t len = text ? strlen(text) : 0;
    if (len == 0)
        return error_field(fault, "name", "name is required");
    int ok = len <= POLICY_NAME_MAX && s_lower_alnum(text[0]) && text[len - 1] != '-';
    for (size_t i = 0; ok && i < len; i++)
        ok = s_lower_alnum(text[i]) || text[i] == '-';
    if (!ok)
        return error_field(fault, "name",
                           "name must be a hostname label: 1 to %d of [a-z0-9-], starting with a "
                           "letter or digit, not ending with '-'",
                           POLICY_NAME_MAX);
    return 0;
}

int policy_check_idempotency_key(const char *text, fault_t *fault)
{
    if (!text || !*text)
        return 0;
    size_t len = strlen(text);
    int ok = len <= POLICY_KEY_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = s_alnum(text[i]) || strchr("._-", text[i]);
    if (!ok) {
        error_set(fault, "BAD_REQUEST",
                  "idempotency key must be at most %d characters of [A-Za-z0-9._-]",
                  POLICY_KEY_MAX);
        return error_detail(fault, "header", "Idempotency-Key");
    }
    return 0;
}

/* Valid UTF-8 (shortest forms, no surrogates) without control characters. */
static int s_utf8_text(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        int n;
        unsigned cp;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return 0;
            s++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else
            return 0;
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
            return 0;
        s += n + 1;
    }
    return 1;
}

int policy_check_reason(const policy_t *self, const char *text, fault_t *fault)
{
    if (!text)
        return 0;
    if (strlen(text) > (size_t)self->max_reason)
        return error_field(fault, "reason", "reason must be at most %d bytes", self->max_reason);
    if (!s_utf8_text((const unsigned char *)text))
        return error_field(fault, "reason", "reason must be UTF-8 text without control characters");
    return 0;
}

int policy_count(const policy_t *self, int32_t count, fault_t *fault)
{
    if (count == 0)
        return 1;
    if (count < 0 || count > self->max_count)
        return error_field(fault, "count", "count must be between 1 and %d", self->max_count);
    return count;
}
