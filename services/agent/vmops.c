/*  vmops: the agent's libvirt operations.

    Every command is idempotent and keyed by the VM id, which is also the domain's name and
    UUID and the prefix of every volume the VM owns ("<vm>.qcow2", "<vm>-seed.iso"). A
    command first looks at what exists and only then acts, so running it again after a
    crash, a lost reply or a redelivery finds the work done and answers ok. Disposal is the
    mirror: every part that is already gone counts as removed.

    Disks go through a libvirt storage pool of type dir, so the same code works on the test
    driver (which keeps volumes in memory) and on qemu:///system (where libvirt's storage
    driver runs qemu-img to create the qcow2 overlay on the base image). The seed ISO is
    always a real file in the pool directory, written by the agent and then announced to
    libvirt with a pool refresh. */
#include "vmops.h"
#include "limit.h"
#include "log.h"
#include "tool.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/virterror.h>
#include <sodium.h>

#define ISO_MAGIC_OFFSET 32769 /* "CD001" of the ISO 9660 primary volume descriptor */
#define MAX_COMMAND_ID   128   /* same bound as every id on the bus */

struct _vmops_t {
    char *uri;
    char *host;
    char *pool_name;
    char *qemu_img;               /* makes full copies of base images */
    char *cache_dir;              /* the agent's image cache ("" without one): refs/<vm> */
    char pool_dir[PATH_MAX];      /* absolute <data_dir>/pool */
    char capture_dir[PATH_MAX];   /* <data_dir>/captures: disks being captured */
    vmops_config_t limits;        /* only the numeric limits are used from this copy */
    virConnectPtr conn;           /* NULL while libvirt is unreachable */
    virStoragePoolPtr pool;       /* NULL until the pool is known to run */
    int healthy;                  /* last vmops_connect() outcome: 1 ok, -1 failed, 0 not yet */
    char reason[PATH_MAX + 1024]; /* why the last vmops_connect() failed */
};

/* libvirt prints every error to stderr unless told otherwise; the agent reports errors
   itself, once, where they matter. */
static void s_silent(void *data, virErrorPtr err)
{
    (void)data;
    (void)err;
}

static const char *s_virt_message(void)
{
    const char *msg = virGetLastErrorMessage();
    return msg ? msg : "unknown libvirt error";
}

/* The simulated slow hypervisor of libvirt_delay_ms; runs on a worker thread only. */
static void s_sleep_ms(int64_t ms)
{
    struct timespec left = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

/* mkdir -p */
static int s_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    if (util_strlcpy(buf, path, sizeof buf) != 0)
        return -1;
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Text safe inside an XML attribute or element; caller frees. */
static char *s_xml_escape(const char *text)
{
    size_t len = 0;
    for (const char *p = text; *p; p++)
        len += *p == '&' ? 5 : (*p == '<' || *p == '>') ? 4 : (*p == '\'' || *p == '"') ? 6 : 1;
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = text; *p; p++) {
        const char *rep = *p == '&'    ? "&amp;"
                          : *p == '<'  ? "&lt;"
                          : *p == '>'  ? "&gt;"
                          : *p == '\'' ? "&apos;"
                          : *p == '"'  ? "&quot;"
                                       : NULL;
        if (rep) {
            memcpy(o, rep, strlen(rep));
            o += strlen(rep);
        } else
            *o++ = *p;
    }
    *o = '\0';
    return out;
}

/* No control characters: they are invalid in XML and in a libvirt title. */
static int s_printable(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

/* Safe to echo in an error: printable ASCII only (no half of a multi-byte character). */
static int s_ascii(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            return 0;
    return 1;
}

vmops_t *vmops_new(const vmops_config_t *config)
{
    vmops_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->uri = strdup(config->uri);
    self->host = strdup(config->host);
    self->pool_name = strdup(config->pool);
    self->limits = *config;
    self->qemu_img = strdup(config->qemu_img ? config->qemu_img : "qemu-img");
    self->cache_dir = strdup(config->image_cache_dir ? config->image_cache_dir : "");
    self->limits.uri = self->limits.host = self->limits.data_dir = self->limits.pool = NULL;
    self->limits.qemu_img = NULL;
    self->limits.image_cache_dir = NULL;
    char dir[PATH_MAX];
    int n = snprintf(dir, sizeof dir, "%s/pool", config->data_dir);
    if (!self->uri || !self->host || !self->pool_name || !self->qemu_img || !self->cache_dir ||
        n < 0 || (size_t)n >= sizeof dir || s_mkdirs(dir) != 0 || !realpath(dir, self->pool_dir)) {
        log_error(NULL, "cannot create the pool directory", "{s:s, s:s}", "path", dir, "reason",
                  strerror(errno));
        vmops_destroy(&self);
        return NULL;
    }
    n = snprintf(self->capture_dir, sizeof self->capture_dir, "%s/captures", config->data_dir);
    if (n < 0 || (size_t)n >= sizeof self->capture_dir || s_mkdirs(self->capture_dir) != 0) {
        log_error(NULL, "cannot create the capture directory", "{s:s}", "path", self->capture_dir);
        vmops_destroy(&self);
        return NULL;
    }
    virSetErrorFunc(NULL, s_silent);
    return self;
}

int vmops_capture_path(const char *data_dir, const char *upload_id, char *out, size_t size)
{
    if (!util_is_uuid(upload_id))
        return -1;
    int n = snprintf(out, size, "%s/captures/%s.qcow2", data_dir, upload_id);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static void s_disconnect(vmops_t *self)
{
    if (self->pool)
        virStoragePoolFree(self->pool);
    self->pool = NULL;
    if (self->conn)
        virConnectClose(self->conn);
    self->conn = NULL;
}

void vmops_destroy(vmops_t **self_p)
{
    if (self_p && *self_p) {
        vmops_t *self = *self_p;
        s_disconnect(self);
        free(self->uri);
        free(self->host);
        free(self->pool_name);
        free(self->qemu_img);
        free(self->cache_dir);
        free(self);
        *self_p = NULL;
    }
}

/* The pool exists, is ours and runs. A missing pool is defined (persistent, autostarted so
   it survives a libvirtd restart), built (mkdir where the driver has real directories) and
   started; an inactive one is started. */
static int s_ensure_pool(vmops_t *self)
{
    if (self->pool && virStoragePoolIsActive(self->pool) == 1)
        return 0;
    if (self->pool)
        virStoragePoolFree(self->pool);
    self->pool = NULL;
    char *path = s_xml_escape(self->pool_dir);
    char *want = NULL;
    if (!path || asprintf(&want, "<path>%s</path>", path) < 0) {
        free(path);
        snprintf(self->reason, sizeof self->reason, "out of memory");
        return -1;
    }
    virStoragePoolPtr pool = virStoragePoolLookupByName(self->conn, self->pool_name);
    int rc = 0;
    if (!pool && virGetLastErrorCode() != VIR_ERR_NO_STORAGE_POOL) {
        snprintf(self->reason, sizeof self->reason, "cannot look up storage pool '%s': %s",
                 self->pool_name, s_virt_message());
        rc = -1;
    } else if (!pool) {
        char *xml = NULL;
        if (asprintf(&xml, "<pool type='dir'><name>%s</name><target>%s</target></pool>",
                     self->pool_name, want) < 0)
            xml = NULL;
        pool = xml ? virStoragePoolDefineXML(self->conn, xml, 0) : NULL;
        free(xml);
        if (!pool || virStoragePoolBuild(pool, 0) != 0) {
            snprintf(self->reason, sizeof self->reason,
                     "cannot define storage pool '%s' at '%s': %s", self->pool_name, self->pool_dir,
                     s_virt_message());
            rc = -1;
        } else {
            virStoragePoolSetAutostart(pool, 1);
            log_info(NULL, "storage pool defined", "{s:s, s:s}", "pool", self->pool_name, "path",
                     self->pool_dir);
        }
    } else {
        /* A pool of this name over another directory (another agent's, or one left by an
           earlier data_dir) would put disks there and seeds here: refuse rather than mix. */
        char *desc = virStoragePoolGetXMLDesc(pool, 0);
        if (!desc || !strstr(desc, want)) {
            snprintf(self->reason, sizeof self->reason,
                     "storage pool '%s' exists but is not at '%s' (set `pool` to another name, "
                     "or data_dir to where that pool lives)",
                     self->pool_name, self->pool_dir);
            rc = -1;
        }
        free(desc);
    }
    free(want);
    free(path);
    if (rc == 0 && virStoragePoolIsActive(pool) != 1 && virStoragePoolCreate(pool, 0) != 0) {
        snprintf(self->reason, sizeof self->reason, "cannot start storage pool '%s': %s",
                 self->pool_name, s_virt_message());
        rc = -1;
    }
    if (rc == 0)
        self->pool = pool;
    else if (pool)
        virStoragePoolFree(pool);
    return rc;
}

int vmops_connect(vmops_t *self)
{
    int rc = 0;
    if (!self->conn || virConnectIsAlive(self->conn) != 1) {
        s_disconnect(self);
        self->conn = virConnectOpen(self->uri);
        if (!self->conn) {
            snprintf(self->reason, sizeof self->reason, "cannot connect to libvirt at '%s': %s",
                     self->uri, s_virt_message());
            rc = -1;
        }
    }
    /* The agent's other connections (one per worker thread) may be setting up the same
       pool at this moment: a define or start that lost that race finds the pool in place
       on the next look. */
    for (int attempt = 0; self->conn && attempt < 3; attempt++)
        if ((rc = s_ensure_pool(self)) == 0)
            break;
    int healthy = rc == 0 ? 1 : -1;
    if (healthy != self->healthy) {
        if (rc == 0)
            log_emit(self->limits.quiet ? BERTH_LOG_DEBUG : BERTH_LOG_INFO, NULL, "libvirt ready",
                     "{s:s, s:s, s:s}", "uri", self->uri, "pool", self->pool_name, "path",
                     self->pool_dir);
        else
            log_emit(self->limits.quiet ? BERTH_LOG_DEBUG : BERTH_LOG_ERROR, NULL,
                     "libvirt unavailable", "{s:s, s:s}", "uri", self->uri, "reason", self->reason);
    }
    self->healthy = healthy;
    return rc;
}

virConnectPtr vmops_conn(vmops_t *self)
{
    return self->conn;
}

const char *vmops_hypervisor(vmops_t *self)
{
    return self->conn ? virConnectGetType(self->conn) : NULL;
}

int64_t vmops_pool_capacity_gb(vmops_t *self)
{
    virStoragePoolInfo info;
    if (!self->pool || virStoragePoolGetInfo(self->pool, &info) != 0)
        return -1;
    return (int64_t)(info.capacity >> 30);
}

const char *vmops_pool_dir(vmops_t *self)
{
    return self->pool_dir;
}

const char *vmops_power_state(int state)
{
    switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
        return "RUNNING";
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
        return "SUSPENDED";
    case VIR_DOMAIN_SHUTDOWN:
    case VIR_DOMAIN_SHUTOFF:
        return "STOPPED";
    case VIR_DOMAIN_CRASHED:
        return "CRASHED";
    default:
        return "UNKNOWN";
    }
}

/* Free a string field of a message built here (the empty default is static). */
static void s_free_string(char *text)
{
    if (text != protobuf_c_empty_string)
        free(text);
}

void vmops_inventory(vmops_t *self, Berth__Host *host)
{
    berth__host__init(host);
    Berth__Resources *capacity = malloc(sizeof *capacity);
    if (capacity) {
        berth__resources__init(capacity);
        host->capacity = capacity;
    }
    int up = vmops_connect(self) == 0;
    host->state = strdup(up ? "UP" : "DOWN");
    const char *hv = vmops_hypervisor(self);
    host->hypervisor = strdup(hv ? hv : "");
    if (!self->conn)
        return;
    virNodeInfo info;
    if (capacity && virNodeGetInfo(self->conn, &info) == 0) {
        capacity->vcpus = (int32_t)info.cpus;
        capacity->ram_mb = (int64_t)(info.memory / 1024);
    }
    int64_t disk = vmops_pool_capacity_gb(self);
    if (capacity && disk > 0)
        capacity->disk_gb = disk;
    virDomainPtr *domains = NULL;
    int n = virConnectListAllDomains(self->conn, &domains, 0);
    if (n > 0)
        host->domains = calloc((size_t)n, sizeof *host->domains);
    for (int i = 0; i < n; i++) {
        Berth__Domain *d = host->domains ? malloc(sizeof *d) : NULL;
        if (d)
            berth__domain__init(d);
        const char *name = virDomainGetName(domains[i]);
        int state = VIR_DOMAIN_NOSTATE;
        /* A domain undefined since the listing is simply not reported. */
        if (d && virDomainGetState(domains[i], &state, NULL, 0) == 0) {
            d->name = strdup(name ? name : "");
            d->power_state = strdup(vmops_power_state(state));
            if (d->name && d->power_state) {
                host->domains[host->n_domains++] = d;
                d = NULL;
            }
        }
        if (d) {
            s_free_string(d->name);
            s_free_string(d->power_state);
            free(d);
        }
        virDomainFree(domains[i]);
    }
    free(domains);
}

void vmops_inventory_clear(Berth__Host *host)
{
    if (!host)
        return;
    for (size_t i = 0; i < host->n_domains; i++) {
        s_free_string(host->domains[i]->name);
        s_free_string(host->domains[i]->power_state);
        free(host->domains[i]);
    }
    free(host->domains);
    free(host->capacity);
    s_free_string(host->state);
    s_free_string(host->hypervisor);
    berth__host__init(host);
}

/* ---- results ------------------------------------------------------------------------ */

static char *s_dup(const char *text)
{
    return strdup(text ? text : "");
}

void vmops_result_clear(Berth__AgentResult *result)
{
    if (!result)
        return;
    if (result->command != protobuf_c_empty_string)
        free(result->command);
    if (result->error != protobuf_c_empty_string)
        free(result->error);
    if (result->power_state != protobuf_c_empty_string)
        free(result->power_state);
    if (result->detail != protobuf_c_empty_string)
        free(result->detail);
    if (result->sha256 != protobuf_c_empty_string)
        free(result->sha256);
    berth__agent_result__init(result);
}

int vmops_result_copy(Berth__AgentResult *dst, const Berth__AgentResult *src)
{
    berth__agent_result__init(dst);
    dst->ok = src->ok;
    dst->command = s_dup(src->command);
    dst->error = s_dup(src->error);
    dst->power_state = s_dup(src->power_state);
    dst->detail = s_dup(src->detail);
    dst->sha256 = s_dup(src->sha256);
    dst->size_bytes = src->size_bytes;
    if (!dst->command || !dst->error || !dst->power_state || !dst->detail || !dst->sha256) {
        vmops_result_clear(dst);
        return -1;
    }
    return 0;
}

/* Replace a result's string field with formatted text (fallback when out of memory). */
static void s_vset(char **field, const char *fallback, const char *fmt, va_list args)
{
    char *text = NULL;
    if (vasprintf(&text, fmt, args) < 0)
        text = NULL;
    if (*field != protobuf_c_empty_string)
        free(*field);
    if (!text && fallback)
        text = strdup(fallback);
    *field = text ? text : (char *)protobuf_c_empty_string;
}

/* Record a failure on the result; always -1 so handlers can `return s_fail(...)`. */
static int s_fail(Berth__AgentResult *result, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int s_fail(Berth__AgentResult *result, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    s_vset(&result->error, "out of memory", fmt, args);
    va_end(args);
    result->ok = 0;
    return -1;
}

static void s_detail(Berth__AgentResult *result, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void s_detail(Berth__AgentResult *result, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    s_vset(&result->detail, NULL, fmt, args);
    va_end(args);
}

/* Rescan the pool. On qemu a volume still being written by qemu-img (another worker
   thread's CREATE_DISK) makes libvirt refuse a refresh for a moment: wait for it, briefly,
   rather than fail this VM's command over another VM's disk. */
static int s_refresh(vmops_t *self)
{
    for (int tries = 0;; tries++) {
        if (virStoragePoolRefresh(self->pool, 0) == 0)
            return 0;
        if (tries >= 100 || !strstr(s_virt_message(), "asynchronous jobs"))
            return -1;
        usleep(50 * 1000);
    }
}

/* ---- validation --------------------------------------------------------------------- */

static int s_check_flavor(vmops_t *self, const Berth__AgentCommand *cmd, int disk,
                          Berth__AgentResult *result)
{
    const Berth__Resources *f = cmd->flavor;
    if (!f)
        return s_fail(result, "invalid %s command for VM '%s': no flavor", cmd->op, cmd->vm);
    if (disk) {
        if (f->disk_gb < 1 || f->disk_gb > self->limits.max_disk_gb)
            return s_fail(result, "invalid %s command for VM '%s': disk_gb %lld is outside 1..%lld",
                          cmd->op, cmd->vm, (long long)f->disk_gb,
                          (long long)self->limits.max_disk_gb);
        return 0;
    }
    if (f->vcpus < 1 || f->vcpus > self->limits.max_vcpus)
        return s_fail(result, "invalid %s command for VM '%s': vcpus %d is outside 1..%lld",
                      cmd->op, cmd->vm, f->vcpus, (long long)self->limits.max_vcpus);
    if (f->ram_mb < 1 || f->ram_mb > self->limits.max_ram_mb)
        return s_fail(result, "invalid %s command for VM '%s': ram_mb %lld is outside 1..%lld",
                      cmd->op, cmd->vm, (long long)f->ram_mb, (long long)self->limits.max_ram_mb);
    return 0;
}

/* ---- the operations ----------------------------------------------------------------- */

static int s_seed_path(vmops_t *self, const char *vm, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s-seed.iso", self->pool_dir, vm);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The volume named name in our pool: 1 found (*vol_p set), 0 absent, -1 libvirt failed. */
static int s_find_volume(vmops_t *self, const char *name, virStorageVolPtr *vol_p)
{
    virStorageVolPtr vol = virStorageVolLookupByName(self->pool, name);
    if (vol) {
        *vol_p = vol;
        return 1;
    }
    return virGetLastErrorCode() == VIR_ERR_NO_STORAGE_VOL ? 0 : -1;
}

/* The domain named vm: 1 found (*dom_p set), 0 absent, -1 libvirt failed. */
static int s_find_domain(vmops_t *self, const char *vm, virDomainPtr *dom_p)
{
    virDomainPtr dom = virDomainLookupByName(self->conn, vm);
    if (dom) {
        *dom_p = dom;
        return 1;
    }
    return virGetLastErrorCode() == VIR_ERR_NO_DOMAIN ? 0 : -1;
}

/* A full copy of the base image as <pool_dir>/<vm>.qcow2 of disk_gb (qemu-img convert, then
   resize; through a temporary name, so an interrupted copy is never taken for a disk), then
   known to libvirt: a pool refresh finds the file on a real hypervisor; the test driver,
   whose volumes live in memory, is told of it. 0 with *vol, or -1 with result set. */
static int s_full_copy(vmops_t *self, const Berth__AgentCommand *cmd, const char *name,
                       const char *image, const char *format, virStorageVolPtr *vol,
                       Berth__AgentResult *result)
{
    char path[PATH_MAX + 80], tmp[PATH_MAX + 80], log[PATH_MAX + 80], size[32], why[512];
    snprintf(path, sizeof path, "%s/%.64s", self->pool_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%.64s.copy", self->pool_dir, name);
    snprintf(log, sizeof log, "%s/.%.64s.log", self->pool_dir, name);
    snprintf(size, sizeof size, "%lldG", (long long)cmd->flavor->disk_gb);
    if (access(path, F_OK) != 0) {
        const char *convert[] = { self->qemu_img, "convert", "-f", format, "-O",
                                  "qcow2",        image,     tmp,  NULL };
        const char *resize[] = { self->qemu_img, "resize", "-f", "qcow2", tmp, size, NULL };
        int rc = tool_run(convert, log, (int)self->limits.copy_timeout_ms, why, sizeof why);
        if (rc == 0)
            rc = tool_run(resize, log, (int)self->limits.copy_timeout_ms, why, sizeof why);
        if (rc == 0 && rename(tmp, path) != 0) {
            snprintf(why, sizeof why, "cannot name the copy: %s", strerror(errno));
            rc = -1;
        }
        unlink(log);
        if (rc != 0) {
            unlink(tmp);
            return s_fail(result, "failed to copy base image '%s' for VM '%s' on host '%s': %s",
                          image, cmd->vm, self->host, why);
        }
    }
    if (s_refresh(self) == 0 && s_find_volume(self, name, vol) == 1)
        return 0;
    char *xml = NULL;
    if (asprintf(&xml,
                 "<volume><name>%s</name><capacity unit='GiB'>%lld</capacity>"
                 "<target><format type='qcow2'/></target></volume>",
                 name, (long long)cmd->flavor->disk_gb) < 0)
        xml = NULL;
    *vol = xml ? virStorageVolCreateXML(self->pool, xml, 0) : NULL;
    free(xml);
    if (!*vol)
        return s_fail(result, "failed to create disk '%s' for VM '%s' on host '%s': %s", name,
                      cmd->vm, self->host, s_virt_message());
    return 0;
}

/* Note in the image cache that vm's overlay depends on its base (<cache>/refs/<vm> holds the
   base's digest), so the cache never evicts a base a disk is built on; s_destroy drops it.
   0, or -1 with result set. Nothing to note without a cache or a base named by digest. */
static int s_note_ref(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    if (!*self->cache_dir || !cmd->image_sha256 || strlen(cmd->image_sha256) != 64)
        return 0;
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/refs/%.64s", self->cache_dir, cmd->vm);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int ok = fd >= 0 && write(fd, cmd->image_sha256, 64) == 64;
    if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return s_fail(result, "failed to note the base image of VM '%s' on host '%s': %s", cmd->vm,
                      self->host, strerror(errno));
    }
    return 0;
}

/* A qcow2 overlay "<vm>.qcow2" of flavor.disk_gb on the base image. The base image must be
   readable here: the test driver would accept any path, and a platform that only works on
   the simulator is no use, so the agent checks what libvirt would need on a real host. */
static int s_create_disk(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    if (s_check_flavor(self, cmd, 1, result))
        return -1;
    const char *image = cmd->image_path;
    const char *format = cmd->image_format;
    if (!image || image[0] != '/' || strlen(image) >= PATH_MAX || !s_printable(image))
        return s_fail(
            result, "invalid CREATE_DISK command for VM '%s': image_path must be an absolute path",
            cmd->vm);
    if (!format || (strcmp(format, "qcow2") != 0 && strcmp(format, "raw") != 0))
        return s_fail(result,
                      "invalid CREATE_DISK command for VM '%s': image_format must be qcow2 or raw",
                      cmd->vm);
    char name[64];
    snprintf(name, sizeof name, "%s.qcow2", cmd->vm);
    virStorageVolPtr vol = NULL;
    int found = s_find_volume(self, name, &vol);
    if (found < 0)
        return s_fail(result, "failed to create disk '%s' for VM '%s' on host '%s': %s", name,
                      cmd->vm, self->host, s_virt_message());
    if (!found) {
        if (access(image, R_OK) != 0)
            return s_fail(result,
                          "failed to create disk '%s' for VM '%s' on host '%s': base image '%s' is "
                          "not readable: %s",
                          name, cmd->vm, self->host, image, strerror(errno));
        if (cmd->full_copy) {
            if (s_full_copy(self, cmd, name, image, format, &vol, result) != 0)
                return -1;
            goto made;
        }
        if (s_note_ref(self, cmd, result) != 0)
            return -1;
        char *path = s_xml_escape(image);
        char *xml = NULL;
        if (!path || asprintf(&xml,
                              "<volume><name>%s</name>"
                              "<capacity unit='GiB'>%lld</capacity><allocation>0</allocation>"
                              "<target><format type='qcow2'/></target>"
                              "<backingStore><path>%s</path><format type='%s'/></backingStore>"
                              "</volume>",
                              name, (long long)cmd->flavor->disk_gb, path, format) < 0)
            xml = NULL;
        free(path);
        int built = xml != NULL;
        vol = built ? virStorageVolCreateXML(self->pool, xml, 0) : NULL;
        free(xml);
        if (!vol) {
            char reason[512];
            util_strlcpy(reason, built ? s_virt_message() : "out of memory", sizeof reason);
            /* A file left by an interrupted earlier attempt that libvirt has not listed yet
               is the same disk: rescan and look once more before calling it a failure. */
            if (s_refresh(self) != 0 || s_find_volume(self, name, &vol) != 1)
                return s_fail(result, "failed to create disk '%s' for VM '%s' on host '%s': %s",
                              name, cmd->vm, self->host, reason);
        }
    }
made:;
    char *vpath = virStorageVolGetPath(vol);
    s_detail(result, "%s", vpath ? vpath : name);
    free(vpath);
    virStorageVolFree(vol);
    return 0;
}

/* Write all of data to path through a temporary file and a rename, so a reader (or a
   domain booting from it) never sees half a seed. */
static int s_write_file(const char *path, const uint8_t *data, size_t len)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    int saved = errno;
    if (done < len || fsync(fd) != 0) {
        saved = done < len ? saved : errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

/* 1 when the file at path holds exactly data. */
static int s_same_file(const char *path, const uint8_t *data, size_t len)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != len)
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    uint8_t buf[8192];
    size_t off = 0, n;
    int same = 1;
    while (same && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        same = off + n <= len && memcmp(buf, data + off, n) == 0;
        off += n;
    }
    fclose(f);
    return same && off == len;
}

/* The cloud-init seed as "<vm>-seed.iso" in the pool directory. Rewriting identical bytes
   is skipped so that a redelivered PUT_SEED does not touch a running domain's cdrom. */
static int s_put_seed(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    size_t len = cmd->seed_iso.len;
    const uint8_t *data = cmd->seed_iso.data;
    if (len == 0 || (int64_t)len > self->limits.max_seed_bytes)
        return s_fail(
            result, "invalid PUT_SEED command for VM '%s': seed_iso is %zu bytes, must be 1..%lld",
            cmd->vm, len, (long long)self->limits.max_seed_bytes);
    if (len < ISO_MAGIC_OFFSET + 5 || memcmp(data + ISO_MAGIC_OFFSET, "CD001", 5) != 0)
        return s_fail(result,
                      "invalid PUT_SEED command for VM '%s': seed_iso is not an ISO 9660 image",
                      cmd->vm);
    char path[PATH_MAX];
    if (s_seed_path(self, cmd->vm, path, sizeof path) != 0)
        return s_fail(result, "failed to write seed for VM '%s' on host '%s': path too long",
                      cmd->vm, self->host);
    if (!s_same_file(path, data, len) && s_write_file(path, data, len) != 0)
        return s_fail(result, "failed to write seed '%s' for VM '%s' on host '%s': %s", path,
                      cmd->vm, self->host, strerror(errno));
    /* Where the driver scans directories (qemu), this makes the seed a volume of the pool,
       listed and deleted like the disk. */
    if (s_refresh(self) != 0)
        return s_fail(result, "failed to refresh storage pool '%s' on host '%s': %s",
                      self->pool_name, self->host, s_virt_message());
    s_detail(result, "%s", path);
    return 0;
}

/* The domain type for the connected driver. KVM is not assumed: qemu domains run under
   TCG so that hosts without /dev/kvm (nested, containers) still work. */
static const char *s_domain_type(vmops_t *self)
{
    const char *driver = virConnectGetType(self->conn);
    if (!driver)
        return NULL;
    if (strcasecmp(driver, "QEMU") == 0)
        return "qemu";
    if (strcasecmp(driver, "TEST") == 0)
        return "test";
    return NULL;
}

/* 1 when the driver has an active network named "default" to plug the VM into. */
static int s_has_default_network(vmops_t *self)
{
    virNetworkPtr net = virNetworkLookupByName(self->conn, "default");
    if (!net)
        return 0;
    int active = virNetworkIsActive(net) == 1;
    virNetworkFree(net);
    return active;
}

/* 1 if text is a MAC as aa:bb:cc:dd:ee:ff (what the scheduler hands out). */
static int s_mac_ok(const char *text)
{
    if (!text || strlen(text) != 17)
        return 0;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? text[i] != ':' : !strchr("0123456789abcdef", text[i]))
            return 0;
    return 1;
}

/* 1 if text may go into the XML as a bridge's or network's name: [A-Za-z0-9._-] only
   ("" too: not set). */
static int s_attach_ok(const char *text)
{
    if (!text)
        return 0;
    for (const char *p = text; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
            return 0;
    return strlen(text) <= 64;
}

/* The <os> of the domain: the disk's boot loader, or a direct-boot image's kernel, initrd and
   command line. NULL when out of memory. */
static char *s_os_xml(const Berth__AgentCommand *cmd)
{
    char *out = NULL;
    if (!cmd->kernel_path || !*cmd->kernel_path)
        return strdup("  <os><type>hvm</type><boot dev='hd'/></os>\n");
    char *kernel = s_xml_escape(cmd->kernel_path);
    char *initrd = s_xml_escape(cmd->initrd_path ? cmd->initrd_path : "");
    char *cmdline = s_xml_escape(cmd->cmdline ? cmd->cmdline : "");
    if (kernel && initrd && cmdline &&
        asprintf(&out,
                 "  <os>\n    <type>hvm</type>\n    <kernel>%s</kernel>\n"
                 "    <initrd>%s</initrd>\n    <cmdline>%s</cmdline>\n  </os>\n",
                 kernel, initrd, cmdline) < 0)
        out = NULL;
    free(kernel);
    free(initrd);
    free(cmdline);
    return out;
}

static char *s_domain_xml(vmops_t *self, const Berth__AgentCommand *cmd, const char *type,
                          const char *disk, const char *seed)
{
    char *title = s_xml_escape(cmd->name);
    char *disk_x = s_xml_escape(disk);
    char *seed_x = s_xml_escape(seed);
    char *os = s_os_xml(cmd);
    char *xml = NULL;
    size_t size = 0;
    FILE *f = title && disk_x && seed_x && os ? open_memstream(&xml, &size) : NULL;
    if (f) {
        fprintf(f,
                "<domain type='%s'>\n"
                "  <name>%s</name>\n"
                "  <uuid>%s</uuid>\n"
                "  <title>%s</title>\n"
                "  <description>%s</description>\n"
                "  <memory unit='MiB'>%lld</memory>\n"
                "  <vcpu>%d</vcpu>\n"
                "%s"
                "  <features><acpi/></features>\n"
                "  <on_poweroff>destroy</on_poweroff>\n"
                "  <on_reboot>restart</on_reboot>\n"
                "  <on_crash>destroy</on_crash>\n"
                "  <devices>\n"
                "    <disk type='file' device='disk'>\n"
                "      <driver name='qemu' type='qcow2'/>\n"
                "      <source file='%s'/>\n"
                "      <target dev='vda' bus='virtio'/>\n"
                "    </disk>\n"
                "    <disk type='file' device='cdrom'>\n"
                "      <driver name='qemu' type='raw'/>\n"
                "      <source file='%s'/>\n"
                "      <target dev='hdc' bus='ide'/>\n"
                "      <readonly/>\n"
                "    </disk>\n",
                type, cmd->vm, cmd->vm, title, title, (long long)cmd->flavor->ram_mb,
                cmd->flavor->vcpus, os, disk_x, seed_x);
        /* One interface per network, in order (a command from before several networks names
           its network only). */
        Berth__VmNetwork *one[1] = { cmd->network };
        Berth__VmNetwork *const *nets = cmd->n_networks ? cmd->networks : one;
        size_t n_nets = cmd->n_networks ? cmd->n_networks : 1, plugged = 0;
        for (size_t i = 0; i < n_nets; i++) {
            const Berth__VmNetwork *net = nets[i];
            if (net && s_mac_ok(net->mac) && s_attach_ok(net->bridge) && *net->bridge) {
                /* Its Berth network through a host bridge, with the MAC its address is bound
                   to. */
                fprintf(f,
                        "    <interface type='bridge'>\n"
                        "      <mac address='%s'/>\n"
                        "      <source bridge='%s'/>\n"
                        "      <model type='virtio'/>\n"
                        "    </interface>\n",
                        net->mac, net->bridge);
                plugged++;
            } else if (net && s_mac_ok(net->mac) && s_attach_ok(net->libvirt_network) &&
                       *net->libvirt_network) {
                fprintf(f,
                        "    <interface type='network'>\n"
                        "      <mac address='%s'/>\n"
                        "      <source network='%s'/>\n"
                        "      <model type='virtio'/>\n"
                        "    </interface>\n",
                        net->mac, net->libvirt_network);
                plugged++;
            }
        }
        if (!plugged && s_has_default_network(self))
            fprintf(f, "    <interface type='network'>\n"
                       "      <source network='default'/>\n"
                       "      <model type='virtio'/>\n"
                       "    </interface>\n");
        /* A real hypervisor keeps what the guest's console says in <pool>/<vm>.console.log
           (virtlogd): what booted and what failed can be read after the fact. */
        if (strcmp(type, "test") == 0)
            fprintf(f, "    <serial type='pty'><target port='0'/></serial>\n");
        else
            fprintf(f,
                    "    <serial type='pty'><log file='%s/%s.console.log' append='off'/>"
                    "<target port='0'/></serial>\n",
                    self->pool_dir, cmd->vm);
        fprintf(f, "    <console type='pty'><target type='serial' port='0'/></console>\n"
                   "  </devices>\n"
                   "</domain>\n");
        if (fclose(f) != 0) {
            free(xml);
            xml = NULL;
        }
    }
    free(title);
    free(disk_x);
    free(seed_x);
    free(os);
    return xml;
}

/* A persistent domain named (and with the UUID of) the VM id, booting the overlay, with
   the seed as a read-only cdrom. CREATE_DISK and PUT_SEED must have run before. */
static int s_define(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    if (s_check_flavor(self, cmd, 0, result))
        return -1;
    size_t name_len = cmd->name ? strlen(cmd->name) : 0;
    if (name_len == 0 || (int64_t)name_len > self->limits.max_name_len || !s_printable(cmd->name))
        return s_fail(
            result, "invalid DEFINE command for VM '%s': name must be 1..%lld printable characters",
            cmd->vm, (long long)self->limits.max_name_len);
    const char *kernel = cmd->kernel_path ? cmd->kernel_path : "";
    const char *initrd = cmd->initrd_path ? cmd->initrd_path : "";
    const char *cmdline = cmd->cmdline ? cmd->cmdline : "";
    if (*kernel || *initrd || *cmdline) {
        int ok = kernel[0] == '/' && initrd[0] == '/' && strlen(kernel) < PATH_MAX &&
                 strlen(initrd) < PATH_MAX && strlen(cmdline) <= LIMIT_IMAGE_CMDLINE_MAX &&
                 s_printable(kernel) && s_printable(initrd) && (!*cmdline || s_printable(cmdline));
        if (!ok)
            return s_fail(result,
                          "invalid DEFINE command for VM '%s': a direct boot needs the absolute "
                          "paths of a kernel and an initrd, and a printable command line of at "
                          "most %d bytes",
                          cmd->vm, LIMIT_IMAGE_CMDLINE_MAX);
    }
    virDomainPtr dom = NULL;
    int found = s_find_domain(self, cmd->vm, &dom);
    if (found < 0)
        return s_fail(result, "failed to define domain '%s' on host '%s': %s", cmd->vm, self->host,
                      s_virt_message());
    if (found) {
        virDomainFree(dom);
        s_detail(result, "already defined");
        return 0;
    }
    const char *type = s_domain_type(self);
    if (!type)
        return s_fail(result,
                      "failed to define domain '%s' on host '%s': unsupported hypervisor '%s'",
                      cmd->vm, self->host,
                      virConnectGetType(self->conn) ? virConnectGetType(self->conn) : "?");
    char name[64];
    snprintf(name, sizeof name, "%s.qcow2", cmd->vm);
    virStorageVolPtr vol = NULL;
    found = s_find_volume(self, name, &vol);
    if (found <= 0)
        return s_fail(result, "failed to define domain '%s' on host '%s': %s", cmd->vm, self->host,
                      found < 0 ? s_virt_message()
                                : "its disk volume does not exist (CREATE_DISK first)");
    char *disk = virStorageVolGetPath(vol);
    virStorageVolFree(vol);
    char seed[PATH_MAX];
    struct stat st;
    if (!disk || s_seed_path(self, cmd->vm, seed, sizeof seed) != 0 || stat(seed, &st) != 0) {
        free(disk);
        return s_fail(result, "failed to define domain '%s' on host '%s': %s", cmd->vm, self->host,
                      "its seed ISO does not exist (PUT_SEED first)");
    }
    char *xml = s_domain_xml(self, cmd, type, disk, seed);
    free(disk);
    int built = xml != NULL;
    dom = built ? virDomainDefineXML(self->conn, xml) : NULL;
    free(xml);
    if (!dom)
        return s_fail(result, "failed to define domain '%s' on host '%s': %s", cmd->vm, self->host,
                      built ? s_virt_message() : "out of memory");
    virDomainFree(dom);
    s_detail(result, "defined");
    return 0;
}

static int s_start(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    virDomainPtr dom = NULL;
    int found = s_find_domain(self, cmd->vm, &dom);
    if (found <= 0)
        return s_fail(result, "failed to start domain '%s' on host '%s': %s", cmd->vm, self->host,
                      found < 0 ? s_virt_message() : "domain is not defined");
    int rc = 0;
    if (virDomainIsActive(dom) == 1)
        s_detail(result, "already running");
    else if (virDomainCreate(dom) != 0)
        rc = s_fail(result, "failed to start domain '%s' on host '%s': %s", cmd->vm, self->host,
                    s_virt_message());
    else
        s_detail(result, "started");
    virDomainFree(dom);
    return rc;
}

/* Instant deploy: suspend the running domain to disk (libvirt's managed save): its memory goes
   to a file libvirt keeps beside the domain, which is then shut off and holds no CPU; START
   (virDomainCreate) restores it where it stopped. A domain already saved is fine. */
static int s_managed_save(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    virDomainPtr dom = NULL;
    int found = s_find_domain(self, cmd->vm, &dom);
    if (found <= 0)
        return s_fail(result, "failed to save domain '%s' on host '%s': %s", cmd->vm, self->host,
                      found < 0 ? s_virt_message() : "domain is not defined");
    int rc = 0;
    if (virDomainHasManagedSaveImage(dom, 0) == 1 && virDomainIsActive(dom) != 1)
        s_detail(result, "already saved to disk");
    else if (virDomainManagedSave(dom, 0) != 0)
        rc = s_fail(result, "failed to save domain '%s' on host '%s': %s", cmd->vm, self->host,
                    s_virt_message());
    else
        s_detail(result, "saved to disk");
    virDomainFree(dom);
    return rc;
}

/* Destroy (power off) if running, undefine with whatever metadata libvirt keeps for it,
   then delete every volume whose name is the VM id followed by '.' or '-', and the seed
   file itself (the test driver never sees it as a volume). Parts already gone are fine. */
static int s_destroy(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    virDomainPtr dom = NULL;
    int found = s_find_domain(self, cmd->vm, &dom);
    if (found < 0)
        return s_fail(result, "failed to destroy domain '%s' on host '%s': %s", cmd->vm, self->host,
                      s_virt_message());
    if (found) {
        int rc = 0;
        if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) != 0 &&
            virDomainIsActive(dom) == 1)
            rc = s_fail(result, "failed to destroy domain '%s' on host '%s': %s", cmd->vm,
                        self->host, s_virt_message());
        if (rc == 0 &&
            virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                            VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA) != 0 &&
            virGetLastErrorCode() != VIR_ERR_NO_DOMAIN)
            rc = s_fail(result, "failed to undefine domain '%s' on host '%s': %s", cmd->vm,
                        self->host, s_virt_message());
        virDomainFree(dom);
        if (rc)
            return -1;
    }
    /* Rescan first so that files libvirt has not listed yet are deleted too. */
    if (s_refresh(self) != 0)
        return s_fail(result, "failed to refresh storage pool '%s' on host '%s': %s",
                      self->pool_name, self->host, s_virt_message());
    virStorageVolPtr *vols = NULL;
    int n = virStoragePoolListAllVolumes(self->pool, &vols, 0);
    if (n < 0)
        return s_fail(result, "failed to list volumes of VM '%s' on host '%s': %s", cmd->vm,
                      self->host, s_virt_message());
    size_t idlen = strlen(cmd->vm);
    int rc = 0, deleted = 0;
    for (int i = 0; i < n; i++) {
        const char *name = virStorageVolGetName(vols[i]);
        if (rc == 0 && name && strncmp(name, cmd->vm, idlen) == 0 &&
            (name[idlen] == '.' || name[idlen] == '-')) {
            if (virStorageVolDelete(vols[i], 0) == 0)
                deleted++;
            else if (virGetLastErrorCode() != VIR_ERR_NO_STORAGE_VOL)
                rc = s_fail(result, "failed to delete volume '%s' of VM '%s' on host '%s': %s",
                            name, cmd->vm, self->host, s_virt_message());
        }
        virStorageVolFree(vols[i]);
    }
    free(vols);
    if (rc)
        return -1;
    char seed[PATH_MAX];
    if (s_seed_path(self, cmd->vm, seed, sizeof seed) == 0 && unlink(seed) != 0 && errno != ENOENT)
        return s_fail(result, "failed to delete seed '%s' of VM '%s' on host '%s': %s", seed,
                      cmd->vm, self->host, strerror(errno));
    /* A full copy is a file the agent wrote: on the test driver, whose volumes live in memory,
       deleting the volume leaves it; on a real hypervisor it is gone already. */
    char copy[PATH_MAX + 80];
    snprintf(copy, sizeof copy, "%s/%.64s.qcow2", self->pool_dir, cmd->vm);
    if (unlink(copy) != 0 && errno != ENOENT)
        return s_fail(result, "failed to delete disk '%s' of VM '%s' on host '%s': %s", copy,
                      cmd->vm, self->host, strerror(errno));
    /* The disk is gone: its base image may be evicted from the cache now. */
    if (*self->cache_dir) {
        char ref[PATH_MAX];
        snprintf(ref, sizeof ref, "%s/refs/%.64s", self->cache_dir, cmd->vm);
        if (unlink(ref) != 0 && errno != ENOENT)
            return s_fail(result, "failed to drop the base image note of VM '%s' on host '%s': %s",
                          cmd->vm, self->host, strerror(errno));
    }
    s_detail(result, "%s; %d volumes deleted", found ? "domain removed" : "no domain", deleted);
    return 0;
}

/* ---- day-2 power operations ------------------------------------------------------------
   Each acts on a defined domain and leaves it defined with its disk: a domain that is not
   here is a failure (the task names the wrong host). Each is idempotent: a domain already
   in the state asked for is left alone and the detail says so. */

#define SHUTDOWN_POLL_MS 100 /* how often a shutting-down domain is looked at */

/* The domain of a day-2 command (*dom_p), or -1 with the result failed. */
static int s_day2_domain(vmops_t *self, const Berth__AgentCommand *cmd, const char *what,
                         virDomainPtr *dom_p, Berth__AgentResult *result)
{
    int found = s_find_domain(self, cmd->vm, dom_p);
    if (found > 0)
        return 0;
    return s_fail(result, "failed to %s domain '%s' on host '%s': %s", what, cmd->vm, self->host,
                  found < 0 ? s_virt_message() : "domain is not defined");
}

/* The libvirt state of dom (VIR_DOMAIN_*), or -1 when it cannot be read. */
static int s_dom_state(virDomainPtr dom)
{
    int state = VIR_DOMAIN_NOSTATE;
    return virDomainGetState(dom, &state, NULL, 0) == 0 ? state : -1;
}

/* Destroy (force off) an active domain; 0, or -1 with the result failed. */
static int s_force_off(vmops_t *self, const Berth__AgentCommand *cmd, virDomainPtr dom,
                       Berth__AgentResult *result)
{
    if (virDomainDestroy(dom) != 0 && virDomainIsActive(dom) == 1)
        return s_fail(result, "failed to power off domain '%s' on host '%s': %s", cmd->vm,
                      self->host, s_virt_message());
    return 0;
}

/* POWER_OFF: off at once (virDomainDestroy), as pulling the plug. */
static int s_power_off(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    virDomainPtr dom = NULL;
    if (s_day2_domain(self, cmd, "power off", &dom, result))
        return -1;
    int rc = 0;
    if (virDomainIsActive(dom) != 1)
        s_detail(result, "already off");
    else if ((rc = s_force_off(self, cmd, dom, result)) == 0)
        s_detail(result, "powered off");
    virDomainFree(dom);
    return rc;
}

/* SHUTDOWN: ask the guest to shut down (ACPI) and give it timeout_s seconds; a guest still
   running then, one that refuses the request, or a paused one (it cannot answer) is
   powered off. The detail says which happened. */
static int s_shutdown(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    if (cmd->timeout_s < 0 || cmd->timeout_s > LIMIT_STOP_TIMEOUT_MAX_S)
        return s_fail(result, "invalid SHUTDOWN command for VM '%s': timeout_s %d is outside 0..%d",
                      cmd->vm, cmd->timeout_s, LIMIT_STOP_TIMEOUT_MAX_S);
    virDomainPtr dom = NULL;
    if (s_day2_domain(self, cmd, "shut down", &dom, result))
        return -1;
    int rc = 0;
    if (virDomainIsActive(dom) != 1) {
        s_detail(result, "already off");
        virDomainFree(dom);
        return 0;
    }
    const char *how = "shut down";
    char why[256] = "";
    if (s_dom_state(dom) == VIR_DOMAIN_PAUSED)
        how = "was paused: powered off";
    else if (virDomainShutdown(dom) != 0) {
        snprintf(why, sizeof why, "shutdown refused (%s): powered off", s_virt_message());
        how = why;
    } else {
        int64_t deadline = util_mono_ms() + (int64_t)cmd->timeout_s * 1000;
        while (virDomainIsActive(dom) == 1 && util_mono_ms() < deadline)
            s_sleep_ms(SHUTDOWN_POLL_MS);
        if (virDomainIsActive(dom) == 1) {
            snprintf(why, sizeof why, "did not shut down within %d s: powered off", cmd->timeout_s);
            how = why;
        }
    }
    if (virDomainIsActive(dom) == 1)
        rc = s_force_off(self, cmd, dom, result);
    if (rc == 0)
        s_detail(result, "%s", how);
    virDomainFree(dom);
    return rc;
}

/* REBOOT: ask the guest to reboot. RESET: a hard reset (virDomainReset, or off and on
   again where the driver has no reset). Both need a running domain. */
static int s_reboot_or_reset(vmops_t *self, const Berth__AgentCommand *cmd, int hard,
                             Berth__AgentResult *result)
{
    const char *what = hard ? "reset" : "reboot";
    virDomainPtr dom = NULL;
    if (s_day2_domain(self, cmd, what, &dom, result))
        return -1;
    int rc = 0;
    if (s_dom_state(dom) != VIR_DOMAIN_RUNNING)
        rc = s_fail(result, "failed to %s domain '%s' on host '%s': it is not running", what,
                    cmd->vm, self->host);
    else if (!hard && virDomainReboot(dom, 0) != 0)
        rc = s_fail(result, "failed to reboot domain '%s' on host '%s': %s", cmd->vm, self->host,
                    s_virt_message());
    else if (hard && virDomainReset(dom, 0) != 0) {
        if (virGetLastErrorCode() != VIR_ERR_NO_SUPPORT)
            rc = s_fail(result, "failed to reset domain '%s' on host '%s': %s", cmd->vm, self->host,
                        s_virt_message());
        else if (s_force_off(self, cmd, dom, result) != 0)
            rc = -1;
        else if (virDomainCreate(dom) != 0)
            rc = s_fail(result, "failed to start domain '%s' again on host '%s': %s", cmd->vm,
                        self->host, s_virt_message());
    }
    if (rc == 0)
        s_detail(result, hard ? "reset" : "reboot asked");
    virDomainFree(dom);
    return rc;
}

static int s_reboot(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    return s_reboot_or_reset(self, cmd, 0, result);
}

static int s_reset(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    return s_reboot_or_reset(self, cmd, 1, result);
}

/* SUSPEND: pause a running domain (its memory stays on the host). RESUME: run a paused one
   again. */
static int s_pause_or_resume(vmops_t *self, const Berth__AgentCommand *cmd, int pause,
                             Berth__AgentResult *result)
{
    const char *what = pause ? "suspend" : "resume";
    virDomainPtr dom = NULL;
    if (s_day2_domain(self, cmd, what, &dom, result))
        return -1;
    int rc = 0, state = s_dom_state(dom);
    if (state == (pause ? VIR_DOMAIN_PAUSED : VIR_DOMAIN_RUNNING))
        s_detail(result, pause ? "already suspended" : "already running");
    else if (state != (pause ? VIR_DOMAIN_RUNNING : VIR_DOMAIN_PAUSED))
        rc = s_fail(result, "failed to %s domain '%s' on host '%s': it is %s", what, cmd->vm,
                    self->host, state < 0 ? "in an unknown state" : "not running");
    else if ((pause ? virDomainSuspend(dom) : virDomainResume(dom)) != 0)
        rc = s_fail(result, "failed to %s domain '%s' on host '%s': %s", what, cmd->vm, self->host,
                    s_virt_message());
    else
        s_detail(result, pause ? "suspended" : "resumed");
    virDomainFree(dom);
    return rc;
}

static int s_suspend(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    return s_pause_or_resume(self, cmd, 1, result);
}

static int s_resume(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    return s_pause_or_resume(self, cmd, 0, result);
}

/* The capture file of cmd's upload: 0, or -1 with result failed. */
static int s_capture_file(vmops_t *self, const Berth__AgentCommand *cmd, char *path, size_t size,
                          Berth__AgentResult *result)
{
    int n = snprintf(path, size, "%s/%s.qcow2", self->capture_dir, cmd->upload_id);
    if (!util_is_uuid(cmd->upload_id) || n < 0 || (size_t)n >= size)
        return s_fail(result, "invalid %s command for VM '%s': upload_id must be a UUID", cmd->op,
                      cmd->vm);
    return 0;
}

/* SHA-256 (hex) and size of the file at path: 0, or -1 with errno. */
static int s_file_sha256(const char *path, char hex[65], int64_t *size_p)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    crypto_hash_sha256_state state;
    crypto_hash_sha256_init(&state);
    uint8_t buffer[1 << 16];
    int64_t size = 0;
    ssize_t n;
    while ((n = read(fd, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) {
            crypto_hash_sha256_update(&state, buffer, (size_t)n);
            size += n;
        }
    int saved = errno;
    close(fd);
    if (n < 0) {
        errno = saved;
        return -1;
    }
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&state, digest);
    sodium_bin2hex(hex, 65, digest, sizeof digest);
    *size_p = size;
    return 0;
}

/* The path of vol's backing store (its base image), or NULL without one (caller frees). */
static char *s_backing_path(virStorageVolPtr vol)
{
    char *xml = virStorageVolGetXMLDesc(vol, 0);
    const char *store = xml ? strstr(xml, "<backingStore>") : NULL;
    const char *open = store ? strstr(store, "<path>") : NULL;
    const char *close = open ? strstr(open, "</path>") : NULL;
    char *path = close ? strndup(open + 6, (size_t)(close - open - 6)) : NULL;
    free(xml);
    return path;
}

/* CAPTURE_SNAPSHOT: the stopped VM's disk as one qcow2 file (an overlay flattened onto its
   base) at <data_dir>/captures/<upload_id>.qcow2, made through a temporary name by qemu-img
   convert; answered with its SHA-256 and size. Done already: the file is only hashed. */
static int s_capture_snapshot(vmops_t *self, const Berth__AgentCommand *cmd,
                              Berth__AgentResult *result)
{
    char path[PATH_MAX + 80], tmp[PATH_MAX + 88], log[PATH_MAX + 88], why[512], hex[65];
    if (s_capture_file(self, cmd, path, sizeof path, result) != 0)
        return -1;
    if (access(path, F_OK) != 0) {
        virDomainPtr dom = NULL;
        if (s_find_domain(self, cmd->vm, &dom) == 1) {
            int state = s_dom_state(dom);
            virDomainFree(dom);
            if (state != VIR_DOMAIN_SHUTOFF)
                return s_fail(result,
                              "cannot capture VM '%s' on host '%s': its domain is not shut off",
                              cmd->vm, self->host);
        }
        char name[64];
        snprintf(name, sizeof name, "%s.qcow2", cmd->vm);
        virStorageVolPtr vol = NULL;
        if (s_find_volume(self, name, &vol) != 1)
            return s_fail(result, "cannot capture VM '%s' on host '%s': it has no disk", cmd->vm,
                          self->host);
        char *disk = virStorageVolGetPath(vol);
        if (disk && access(disk, F_OK) != 0) {
            /* A driver that keeps volumes in memory (the test driver) has no file for an
               overlay nothing was written to: flattened, it is its base. */
            char *base = s_backing_path(vol);
            if (base) {
                free(disk);
                disk = base;
            }
        }
        virStorageVolFree(vol);
        if (!disk || access(disk, R_OK) != 0) {
            s_fail(result, "cannot capture VM '%s' on host '%s': its disk '%s' is not readable",
                   cmd->vm, self->host, disk ? disk : name);
            free(disk);
            return -1;
        }
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        snprintf(log, sizeof log, "%s.log", path);
        const char *convert[] = { self->qemu_img, "convert", "-O", "qcow2", disk, tmp, NULL };
        int rc = tool_run(convert, log, (int)self->limits.copy_timeout_ms, why, sizeof why);
        free(disk);
        if (rc == 0 && rename(tmp, path) != 0) {
            snprintf(why, sizeof why, "cannot name the capture: %s", strerror(errno));
            rc = -1;
        }
        unlink(log);
        if (rc != 0) {
            unlink(tmp);
            return s_fail(result, "failed to capture VM '%s' on host '%s': %s", cmd->vm, self->host,
                          why);
        }
    }
    int64_t size = 0;
    if (s_file_sha256(path, hex, &size) != 0)
        return s_fail(result, "cannot read the capture of VM '%s' on host '%s': %s", cmd->vm,
                      self->host, strerror(errno));
    if (result->sha256 != protobuf_c_empty_string)
        free(result->sha256);
    result->sha256 = s_dup(hex);
    if (!result->sha256)
        result->sha256 = (char *)protobuf_c_empty_string;
    result->size_bytes = size;
    s_detail(result, "captured %lld bytes, SHA-256 %s", (long long)size, hex);
    return 0;
}

/* CAPTURE_CLEANUP: the capture file (and a half-made one) removed; gone counts as removed. */
static int s_capture_cleanup(vmops_t *self, const Berth__AgentCommand *cmd,
                             Berth__AgentResult *result)
{
    char path[PATH_MAX + 80], tmp[PATH_MAX + 88];
    if (s_capture_file(self, cmd, path, sizeof path, result) != 0)
        return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    if (unlink(path) != 0 && errno != ENOENT)
        return s_fail(result, "cannot remove the capture of VM '%s' on host '%s': %s", cmd->vm,
                      self->host, strerror(errno));
    s_detail(result, "capture file removed");
    return 0;
}

typedef int(s_op_fn)(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result);

static const struct {
    const char *op;
    s_op_fn *fn;
} s_ops[] = {
    { "CREATE_DISK", s_create_disk },
    { "PUT_SEED", s_put_seed },
    { "DEFINE", s_define },
    { "START", s_start },
    { "DESTROY", s_destroy },
    { "MANAGED_SAVE", s_managed_save }, /* instant deploy: a pooled VM waits on disk */
    /* day-2 actions */
    { "SHUTDOWN", s_shutdown },
    { "POWER_OFF", s_power_off },
    { "REBOOT", s_reboot },
    { "RESET", s_reset },
    { "SUSPEND", s_suspend },
    { "RESUME", s_resume },
    /* capture: the upload between these runs on the agent's loop (upload.c) */
    { "CAPTURE_SNAPSHOT", s_capture_snapshot },
    { "CAPTURE_CLEANUP", s_capture_cleanup },
};

void vmops_execute(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result)
{
    berth__agent_result__init(result);
    result->command = s_dup(cmd->id);
    result->ok = 0;
    const char *id = cmd->id ? cmd->id : "";
    const char *op = cmd->op ? cmd->op : "";
    s_op_fn *fn = NULL;
    for (size_t i = 0; i < sizeof s_ops / sizeof s_ops[0]; i++)
        if (strcmp(op, s_ops[i].op) == 0)
            fn = s_ops[i].fn;
    if (!result->command) {
        result->command = (char *)protobuf_c_empty_string;
        s_fail(result, "out of memory");
        return;
    }
    if (!*id || strlen(id) > MAX_COMMAND_ID || !s_ascii(id)) {
        s_fail(result, "invalid command: id must be 1..%d printable ASCII characters",
               MAX_COMMAND_ID);
        return;
    }
    if (!fn) {
        s_fail(result, "invalid command '%s': unknown op '%.64s'", id, s_ascii(op) ? op : "?");
        return;
    }
    if (!util_is_uuid(cmd->vm)) {
        s_fail(result, "invalid %s command '%s': vm id '%.64s' is not a UUID", op, id,
               cmd->vm && s_ascii(cmd->vm) ? cmd->vm : "?");
        return;
    }
    /* Whoever sent it has stopped waiting: doing it now could undo a later decision (a
       rollback already under way), so an expired command is refused, not run late. */
    if (cmd->deadline_ms > 0 && util_now_ms() > cmd->deadline_ms) {
        s_fail(result, "%s of VM '%s' on host '%s' not run: its deadline passed", op, cmd->vm,
               self->host);
        return;
    }
    if (self->limits.delay_ms > 0)
        s_sleep_ms(self->limits.delay_ms);
    if (vmops_connect(self) != 0) {
        s_fail(result, "%s of VM '%s' on host '%s' not run: %s", op, cmd->vm, self->host,
               self->reason);
        return;
    }
    if (fn(self, cmd, result) != 0)
        return;
    result->ok = 1;
    virDomainPtr dom = NULL;
    if (s_find_domain(self, cmd->vm, &dom) == 1) {
        int state = VIR_DOMAIN_NOSTATE;
        if (virDomainGetState(dom, &state, NULL, 0) == 0)
            result->power_state = s_dup(vmops_power_state(state));
        virDomainFree(dom);
        if (!result->power_state)
            result->power_state = (char *)protobuf_c_empty_string;
    }
}
