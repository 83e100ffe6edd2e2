/*  import: open beneath a directory (openat2 RESOLVE_BENEATH), qemu-img info on the open
    file (/proc/<pid>/fd/<n>, so the tool reads exactly what we opened), copy with SHA-256. */
#include "import.h"
#include "files.h"
#include "tool.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define S_INFO_MAX (1024 * 1024) /* qemu-img info's answer is a few hundred bytes */

/* Open rel beneath dir_fd: the kernel resolves every component and refuses one that leaves
   the directory. Kernels without openat2 (< 5.6): the resolved path must still lie beneath
   dir, and the last component may not be a symlink. */
static int s_open_beneath(int dir_fd, const char *dir, const char *rel)
{
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    int fd = (int)syscall(SYS_openat2, dir_fd, rel, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS)
        return fd;
    char full[PATH_MAX], *real;
    if (snprintf(full, sizeof full, "%s/%s", dir, rel) >= (int)sizeof full) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (!(real = realpath(full, NULL)))
        return -1;
    size_t dl = strlen(dir);
    int beneath = strncmp(real, dir, dl) == 0 && real[dl] == '/';
    free(real);
    if (!beneath) {
        errno = EXDEV;
        return -1;
    }
    return open(full, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
}

/* qemu-img info of file into info; a log file in images_dir holds its answer meanwhile. */
static int s_info(const import_config_t *c, const char *file, inspect_info_t *info,
                  berth_error_t *error)
{
    char log_path[PATH_MAX], id[UTIL_ID_LEN], why[512];
    util_uuid(id);
    snprintf(log_path, sizeof log_path, "%s/.inspect-%.8s.json", c->images_dir, id);
    const char *argv[] = { c->qemu_img, "info", "--output=json", file, NULL };
    int rc = tool_run(argv, log_path, c->timeout_ms, why, sizeof why);
    uint8_t *text = NULL;
    size_t len = 0;
    if (rc == 0 && files_read(log_path, S_INFO_MAX, &text, &len) != 0)
        rc = -1;
    unlink(log_path);
    if (rc != 0) {
        free(text);
        error_field(error, "path", "not a disk image qemu-img can read");
        return error_detail(error, "reason", "unreadable");
    }
    rc = inspect_parse((const char *)text, len, info, error);
    free(text);
    return rc;
}

int import_open(const import_config_t *c, const char *requested, int *fd_p, inspect_info_t *info,
                berth_error_t *error)
{
    char rel[PATH_MAX];
    if (inspect_path(c->import_dir, requested, rel, sizeof rel, error) != 0)
        return -1;
    int dir_fd = open(c->import_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return error_set(error, "INTERNAL", "cannot open the import directory %s: %s",
                         c->import_dir, strerror(errno));
    int fd = s_open_beneath(dir_fd, c->import_dir, rel);
    int e = errno;
    close(dir_fd);
    if (fd < 0) {
        if (e == EXDEV || e == ELOOP)
            return error_field(error, "path", "path leads outside the import directory");
        if (e == ENOENT || e == ENOTDIR)
            return error_field(error, "path", "no such file in the import directory: %s", rel);
        return error_field(error, "path", "cannot open %s: %s", rel, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return error_field(error, "path", "%s is not a regular file", rel);
    }
    if (st.st_size > c->rules.max_virtual_size) {
        close(fd);
        error_field(error, "path", "the file is %lld bytes, over the limit of %lld bytes",
                    (long long)st.st_size, (long long)c->rules.max_virtual_size);
        return error_detail(error, "reason", "virtual_size");
    }
    fcntl(fd, F_SETFL, 0); /* blocking reads from here */
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%d/fd/%d", (int)getpid(), fd);
    if (s_info(c, proc, info, error) != 0 || inspect_check(info, &c->rules, error) != 0) {
        close(fd);
        return -1;
    }
    *fd_p = fd;
    return 0;
}

int import_inspect(const import_config_t *c, const char *path, const char *field,
                   inspect_info_t *info, berth_error_t *error)
{
    if (s_info(c, path, info, error) == 0 && inspect_check(info, &c->rules, error) == 0)
        return 0;
    /* The rules name `path` (an import's field): here the file is field. */
    for (size_t i = 0; i < error->n_details; i++)
        if (strcmp(error->details[i].key, "field") == 0)
            util_strlcpy(error->details[i].value, field, sizeof error->details[i].value);
    return -1;
}

int import_open_file(const import_config_t *c, const char *requested, const char *field, int *fd_p,
                     berth_error_t *error)
{
    char rel[PATH_MAX];
    if (inspect_path(c->import_dir, requested, rel, sizeof rel, error) != 0)
        return error_detail(error, "field", "%s", field); /* its rules are path's */
    int dir_fd = open(c->import_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return error_set(error, "INTERNAL", "cannot open the import directory %s: %s",
                         c->import_dir, strerror(errno));
    int fd = s_open_beneath(dir_fd, c->import_dir, rel);
    int e = errno;
    close(dir_fd);
    if (fd < 0) {
        if (e == EXDEV || e == ELOOP)
            return error_field(error, field, "%s leads outside the import directory", field);
        if (e == ENOENT || e == ENOTDIR)
            return error_field(error, field, "no such file in the import directory: %s", rel);
        return error_field(error, field, "cannot open %s: %s", rel, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        return error_field(error, field, "%s is not a regular file with something in it", rel);
    }
    if (st.st_size > c->rules.max_virtual_size) {
        close(fd);
        return error_field(error, field, "%s is %lld bytes, over the limit of %lld bytes", rel,
                           (long long)st.st_size, (long long)c->rules.max_virtual_size);
    }
    fcntl(fd, F_SETFL, 0);
    *fd_p = fd;
    return 0;
}

/* Copy from fd (from its start) to the new file out_fd, hashing. 0 or -1 with errno. */
static int s_copy(int fd, int out_fd, char sha256[65], int64_t *size_p)
{
    crypto_hash_sha256_state state;
    crypto_hash_sha256_init(&state);
    static const size_t S_CHUNK = 1024 * 1024;
    uint8_t *buf = malloc(S_CHUNK);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    int64_t total = 0;
    off_t at = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, S_CHUNK, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return -1;
        }
        if (n == 0)
            break;
        crypto_hash_sha256_update(&state, buf, (unsigned long long)n);
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out_fd, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                if (w == 0)
                    errno = EIO;
                free(buf);
                return -1;
            }
            done += w;
        }
        at += n;
        total += n;
    }
    free(buf);
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&state, digest);
    sodium_bin2hex(sha256, 65, digest, sizeof digest);
    *size_p = total;
    return 0;
}

int import_copy_file(const import_config_t *c, int fd, const char *id, const char *suffix,
                     char *path, size_t path_size, char *fault, size_t fault_size)
{
    char tmp[PATH_MAX], sha256[65];
    snprintf(tmp, sizeof tmp, "%s/.import-%s-%s.tmp", c->images_dir, id, suffix);
    if (snprintf(path, path_size, "%s/%s.%s", c->images_dir, id, suffix) >= (int)path_size) {
        snprintf(fault, fault_size, "the %s's path is too long", suffix);
        return -1;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (out < 0) {
        snprintf(fault, fault_size, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    int64_t size = 0;
    if (s_copy(fd, out, sha256, &size) != 0 || fsync(out) != 0 || close(out) != 0 ||
        rename(tmp, path) != 0) {
        snprintf(fault, fault_size, "cannot copy the %s into the store: %s", suffix,
                 strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int import_copy(const import_config_t *c, int fd, const char *id, const char *format, char *path,
                size_t path_size, int64_t *size_p, char sha256[65], char *fault, size_t fault_size)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.import-%s.tmp", c->images_dir, id);
    if (snprintf(path, path_size, "%s/%s.%s", c->images_dir, id, format) >= (int)path_size) {
        snprintf(fault, fault_size, "the image's path is too long");
        return -1;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (out < 0) {
        snprintf(fault, fault_size, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    int64_t size = 0;
    if (s_copy(fd, out, sha256, &size) != 0 || fsync(out) != 0) {
        snprintf(fault, fault_size, "cannot copy the image into the store: %s", strerror(errno));
        close(out);
        unlink(tmp);
        return -1;
    }
    close(out);
    /* The copy is ours alone: what it is now is what the store keeps. */
    inspect_info_t info;
    berth_error_t error = { 0 };
    if (s_info(c, tmp, &info, &error) != 0 || inspect_check(&info, &c->rules, &error) != 0 ||
        (strcmp(info.format, format) != 0 &&
         error_field(&error, "path", "the file changed while it was copied (now %s)",
                     info.format))) {
        snprintf(fault, fault_size, "the copy was refused: %s", error.message);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(fault, fault_size, "cannot name the copy %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    *size_p = size;
    return 0;
}
