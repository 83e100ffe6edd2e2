/*  test_svc_stager_seed: the cloud-init NoCloud seed as the VM will see it. The ISO is read
    back with isoinfo (a separate, maintained tool): volume id "cidata", meta-data with the
    VM's UUID as instance-id and its name as local-hostname, the user-data as given (or a
    default #cloud-config, with the SSH keys asked for), the same names through ISO 9660,
    Joliet and Rock Ridge. Staging is idempotent by VM; bad input is refused and leaves no
    file behind; a build that cannot be stored is reported, not hidden. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "files.h"
#include "seed.h"
#include "testenv.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define VM1 "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6b"
#define VM2 "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

typedef struct {
    char *dir;
    seed_t *seeds;
} fixture_t;

static seed_config_t s_config(void)
{
    return (seed_config_t){ .max_user_data = 65536 };
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = testenv_tmpdir()))
        return -1;
    seed_config_t c = s_config();
    f->seeds = seed_new(f->dir, &c);
    if (!f->seeds)
        return -1;
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    seed_destroy(&f->seeds);
    testenv_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Output of a shell command (caller frees); fails the test if it does not exit 0. */
static char *s_capture(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[len] = '\0';
    int status = pclose(p);
    if (status != 0)
        fail_msg("command failed (%d): %s", status, cmd);
    return out;
}

static char *s_volume_id(const char *iso)
{
    char *info = s_capture("isoinfo -d -i '%s'", iso);
    char *line = strstr(info, "Volume id: ");
    assert_non_null(line);
    line += strlen("Volume id: ");
    char *id = strndup(line, strcspn(line, "\n"));
    free(info);
    return id;
}

static char *s_iso_file(const char *iso, const char *name)
{
    return s_capture("isoinfo -R -i '%s' -x '/%s'", iso, name);
}

static int s_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_seed_reads_back(void **state)
{
    fixture_t *f = *state;
    char *path = NULL;
    berth_error_t error = { 0 };
    int rc = seed_stage(f->seeds, VM1, "web-1", "", &path, &error);
    if (rc != 0)
        fail_msg("seed_stage: %d %s", rc, error.message);
    char expected[1024];
    snprintf(expected, sizeof expected, "%s/%s.iso", f->dir, VM1);
    char *real = realpath(expected, NULL);
    assert_non_null(real);
    assert_string_equal(path, real);
    free(real);

    char *volid = s_volume_id(path);
    assert_string_equal(volid, "cidata");
    free(volid);
    char *meta = s_iso_file(path, "meta-data");
    assert_string_equal(meta, "instance-id: " VM1 "\nlocal-hostname: web-1\n");
    free(meta);
    char *user = s_iso_file(path, "user-data");
    assert_string_equal(user, "#cloud-config\nhostname: web-1\n");
    free(user);
    free(path);
}

/* A VM's address: the seed carries a version-2 network-config for it (the interface matched
   by its MAC, the address, the default route, the name servers); the same VM asked for with
   another address is a conflict; a value that is not an address is refused naming the field. */
static void test_seed_network_config(void **state)
{
    fixture_t *f = *state;
    Berth__VmNetwork net = BERTH__VM_NETWORK__INIT;
    char *dns[] = { "10.0.0.2", "9.9.9.9" };
    net.name = "lab";
    net.ip = "10.0.0.7";
    net.prefix = 24;
    net.mac = "02:aa:bb:cc:dd:ee";
    net.gateway = "10.0.0.1";
    net.dns = dns;
    net.n_dns = 2;
    berth_error_t error = { 0 };
    char *config = seed_network_config(&net, &error);
    assert_non_null(config);
    assert_string_equal(config, "version: 2\n"
                                "ethernets:\n"
                                "  eth0:\n"
                                "    match:\n"
                                "      macaddress: \"02:aa:bb:cc:dd:ee\"\n"
                                "    set-name: eth0\n"
                                "    addresses:\n"
                                "      - 10.0.0.7/24\n"
                                "    routes:\n"
                                "      - to: 0.0.0.0/0\n"
                                "        via: 10.0.0.1\n"
                                "    nameservers:\n"
                                "      addresses:\n"
                                "        - 10.0.0.2\n"
                                "        - 9.9.9.9\n");
    char *path = NULL;
    int rc = seed_stage_network(f->seeds, VM1, "web-1", "", config, 0, &path, NULL, &error);
    if (rc != 0)
        fail_msg("seed_stage_network: %d %s", rc, error.message);
    char *read = s_iso_file(path, "network-config");
    assert_string_equal(read, config);
    free(read);
    free(path);
    path = NULL;
    /* The same again: the same seed; another address for the same VM: a conflict. */
    assert_int_equal(seed_stage_network(f->seeds, VM1, "web-1", "", config, 0, &path, NULL, &error),
                     0);
    free(path);
    path = NULL;
    free(config);
    net.ip = "10.0.0.8";
    config = seed_network_config(&net, &error);
    assert_int_equal(seed_stage_network(f->seeds, VM1, "web-1", "", config, 0, &path, NULL, &error),
                     SEED_CONFLICT);
    free(config);
    /* Nothing unchecked reaches the YAML. */
    const char *bad_ips[] = { "10.0.0.7\nx: y", "10.0.0", "300.0.0.1", NULL };
    for (const char **b = bad_ips; *b; b++) {
        net.ip = (char *)*b;
        error = (berth_error_t){ 0 };
        assert_null(seed_network_config(&net, &error));
        assert_string_equal(error.code, "BAD_REQUEST");
    }
    net.ip = "10.0.0.7";
    net.mac = "02:aa:bb:cc:dd:ee\"";
    assert_null(seed_network_config(&net, &error));
    net.mac = "02:aa:bb:cc:dd:ee";
    dns[1] = "9.9.9.9 # x";
    assert_null(seed_network_config(&net, &error));
    dns[1] = "9.9.9.9";

    /* Two networks: one ethernet each, matched by MAC; only the first gets the default route;
       each its name servers. A bad second one is refused naming it. */
    Berth__VmNetwork second = BERTH__VM_NETWORK__INIT;
    char *dns2[] = { "10.5.0.2" };
    second.ip = "10.5.0.9";
    second.prefix = 16;
    second.mac = "02:aa:bb:cc:dd:01";
    second.gateway = "10.5.0.1";
    second.dns = dns2;
    second.n_dns = 1;
    Berth__VmNetwork *both[] = { &net, &second };
    config = seed_networks_config(both, 2, &error);
    assert_non_null(config);
    assert_string_equal(config, "version: 2\n"
                                "ethernets:\n"
                                "  eth0:\n"
                                "    match:\n"
                                "      macaddress: \"02:aa:bb:cc:dd:ee\"\n"
                                "    set-name: eth0\n"
                                "    addresses:\n"
                                "      - 10.0.0.7/24\n"
                                "    routes:\n"
                                "      - to: 0.0.0.0/0\n"
                                "        via: 10.0.0.1\n"
                                "    nameservers:\n"
                                "      addresses:\n"
                                "        - 10.0.0.2\n"
                                "        - 9.9.9.9\n"
                                "  eth1:\n"
                                "    match:\n"
                                "      macaddress: \"02:aa:bb:cc:dd:01\"\n"
                                "    set-name: eth1\n"
                                "    addresses:\n"
                                "      - 10.5.0.9/16\n"
                                "    nameservers:\n"
                                "      addresses:\n"
                                "        - 10.5.0.2\n");
    free(config);
    second.mac = "02:aa:bb:cc:dd";
    error = (berth_error_t){ 0 };
    assert_null(seed_networks_config(both, 2, &error));
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_non_null(strstr(error.message, "networks[1]"));
}

/* The file names isoinfo lists in the root, sorted, one per line; mode is "" (ISO 9660),
   "-J" (Joliet) or "-R" (Rock Ridge). With modes, each name is preceded by its mode bits. */
static char *s_listing(const char *iso, const char *mode, int with_modes)
{
    char *out = s_capture("isoinfo %s -l -i '%s'", mode, iso);
    char *names = calloc(1, strlen(out) + 1);
    assert_non_null(names);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char *name = strstr(line, "]  ");
        if (!name || (line[0] != '-' && line[0] != 'd'))
            continue;
        name += 3;
        size_t len = strlen(name);
        while (len > 0 && name[len - 1] == ' ')
            name[--len] = '\0';
        if (len == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (with_modes)
            strncat(names, line, 11);
        strcat(names, name);
        strcat(names, "\n");
    }
    free(out);
    return names;
}

/* What a reader sees through each of the three name spaces the seed carries: ISO 9660 level
   1 names, Joliet and Rock Ridge with the real names (cloud-init mounts the volume and opens
   "meta-data"; the kernel reads Rock Ridge first, then Joliet), the volume label, and the same
   bytes through every one of them. */
static void test_seed_iso_as_read(void **state)
{
    fixture_t *f = *state;
    char *path = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &path, &error), 0);
    char *info = s_capture("isoinfo -d -i '%s'", path);
    assert_non_null(strstr(info, "Volume id: cidata\n"));
    assert_non_null(strstr(info, "Joliet with UCS level 3 found"));
    assert_non_null(strstr(info, "Rock Ridge signatures version 1 found"));
    free(info);

    char *plain = s_listing(path, "", 0);
    assert_string_equal(plain, "META_DAT.;1\nUSER_DAT.;1\n");
    free(plain);
    char *joliet = s_listing(path, "-J", 0);
    assert_string_equal(joliet, "meta-data\nuser-data\n");
    free(joliet);
    char *rock = s_listing(path, "-R", 1);
    assert_string_equal(rock, "-rw-r--r-- meta-data\n-rw-r--r-- user-data\n");
    free(rock);

    const char *meta = "instance-id: " VM1 "\nlocal-hostname: web-1\n";
    char *by_plain = s_capture("isoinfo -i '%s' -x '/META_DAT.;1'", path);
    char *by_joliet = s_capture("isoinfo -J -i '%s' -x /meta-data", path);
    char *by_rock = s_iso_file(path, "meta-data");
    assert_string_equal(by_plain, meta);
    assert_string_equal(by_joliet, meta);
    assert_string_equal(by_rock, meta);
    free(by_plain);
    free(by_joliet);
    free(by_rock);
    char *user = s_capture("isoinfo -J -i '%s' -x /user-data", path);
    assert_string_equal(user, "#cloud-config\nhostname: web-1\n");
    free(user);
    free(path);
}

/* seed_iso alone, with the optional network-config. */
static void test_seed_iso_network_config(void **state)
{
    fixture_t *f = *state;
    uint8_t *iso = NULL;
    size_t size = 0;
    char error[256] = "";
    const char *net = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";
    assert_int_equal(
        seed_iso("instance-id: a\n", "#cloud-config\n", net, &iso, &size, error, sizeof error), 0);
    assert_true(size > 0 && size % 2048 == 0);
    char *path = testenv_write_file(f->dir, "net.iso", "");
    assert_non_null(path);
    assert_int_equal(files_write(path, iso, size), 0);
    char *joliet = s_listing(path, "-J", 0);
    assert_string_equal(joliet, "meta-data\nnetwork-config\nuser-data\n");
    free(joliet);
    char *rock = s_listing(path, "-R", 0);
    assert_string_equal(rock, "meta-data\nnetwork-config\nuser-data\n");
    free(rock);
    char *got = s_iso_file(path, "network-config");
    assert_string_equal(got, net);
    free(got);
    free(path);
    free(iso);
}

static void test_seed_custom_user_data(void **state)
{
    fixture_t *f = *state;
    const char *ud =
        "#cloud-config\npackages:\n  - nginx\nruncmd:\n  - [systemctl, start, nginx]\n";
    char *path = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(seed_stage(f->seeds, VM2, "db", ud, &path, &error), 0);
    char *user = s_iso_file(path, "user-data");
    assert_string_equal(user, ud);
    free(user);
    char *meta = s_iso_file(path, "meta-data");
    assert_non_null(strstr(meta, "instance-id: " VM2 "\n"));
    assert_non_null(strstr(meta, "local-hostname: db\n"));
    free(meta);
    free(path);
}

#define KEY_ANN                                                                                    \
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8ASS8xh/TLWQiuwnuHZI679ehIVEcoupFQO1qD2F+U ann@laptop"
#define KEY_QUOTED                                                                                 \
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIt0TMOmoINZ8nOJf6/"  \
    "OGPSMexg97vPWagB12nMz38q7F3+IAaiH+dyg+LRj4ftVTVMFfxREP19v0V3ZaRTNYrE= ann's key: #2"

/* SSH keys asked for: the default user-data sets the hostname and installs each key line,
   single-quoted (a comment with ": " or "#" stays a string); what is not a key is refused
   naming ssh_authorized_keys. */
static void test_seed_ssh_keys_in_user_data(void **state)
{
    fixture_t *f = *state;
    char *keys[] = { KEY_ANN, KEY_QUOTED };
    berth_error_t error = { 0 };
    char *ud = seed_default_user_data("web-1", keys, 2, &error);
    assert_non_null(ud);
    assert_string_equal(ud, "#cloud-config\nhostname: web-1\nssh_authorized_keys:\n"
                            "  - '" KEY_ANN "'\n"
                            "  - 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAy"
                            "NTYAAABBBIt0TMOmoINZ8nOJf6/OGPSMexg97vPWagB12nMz38q7F3+IAaiH+dyg+LRj4"
                            "ftVTVMFfxREP19v0V3ZaRTNYrE= ann''s key: #2'\n");
    char *path = NULL;
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", ud, &path, &error), 0);
    char *user = s_iso_file(path, "user-data");
    assert_string_equal(user, ud);
    free(user);
    char *meta = s_iso_file(path, "meta-data");
    assert_non_null(strstr(meta, "local-hostname: web-1\n"));
    free(meta);
    free(path);
    free(ud);
    /* No keys: the default user-data every seed without one had. */
    ud = seed_default_user_data("db", NULL, 0, &error);
    assert_string_equal(ud, "#cloud-config\nhostname: db\n");
    free(ud);
    /* Not a key line, or a key with a second line smuggled in: refused. */
    char *bad[][1] = { { "ssh-ed25519 AAAA" }, { KEY_ANN "\nruncmd: [reboot]" } };
    for (size_t i = 0; i < 2; i++) {
        memset(&error, 0, sizeof error);
        assert_null(seed_default_user_data("web-1", bad[i], 1, &error));
        assert_string_equal(error.code, "BAD_REQUEST");
        assert_string_equal(error_detail_get(&error, "field"), "ssh_authorized_keys");
    }
}

/* Applications installed at first boot: listed under `packages:` after the keys; a name that
   is not a package name (YAML or shell would read more into it) is refused naming packages. */
static void test_seed_packages_in_user_data(void **state)
{
    (void)state;
    char *keys[] = { KEY_ANN };
    char *packages[] = { "nginx", "libpq5", "g++" };
    berth_error_t error = { 0 };
    char *ud = seed_user_data_packages("web-1", keys, 1, packages, 3, &error);
    assert_non_null(ud);
    assert_string_equal(ud, "#cloud-config\nhostname: web-1\nssh_authorized_keys:\n"
                            "  - '" KEY_ANN "'\npackages:\n  - nginx\n  - libpq5\n  - g++\n");
    free(ud);
    ud = seed_user_data_packages("db", NULL, 0, packages, 1, &error);
    assert_string_equal(ud, "#cloud-config\nhostname: db\npackages:\n  - nginx\n");
    free(ud);
    char *bad[][1] = { { "nginx\nruncmd: [reboot]" }, { "-rf" }, { "" }, { "a b" } };
    for (size_t i = 0; i < 4; i++) {
        memset(&error, 0, sizeof error);
        assert_null(seed_user_data_packages("web-1", NULL, 0, bad[i], 1, &error));
        assert_string_equal(error_detail_get(&error, "field"), "packages");
    }
}

/* What staging hands back, and what GetSeed reads, is the ISO on disk with its SHA-256. */
static void test_seed_bytes_and_read(void **state)
{
    fixture_t *f = *state;
    char *path = NULL;
    berth_error_t error = { 0 };
    seed_bytes_t built, again, read;
    assert_int_equal(seed_stage_bytes(f->seeds, VM1, "web-1", "", 4 << 20, &path, &built, &error),
                     0);
    uint8_t *disk = NULL;
    size_t size = 0;
    char hex[65];
    assert_int_equal(files_read(path, 4 << 20, &disk, &size), 0);
    files_sha256_hex(disk, size, hex);
    assert_int_equal(built.size, size);
    assert_memory_equal(built.iso, disk, size);
    assert_string_equal(built.sha256, hex);
    free(path);
    path = NULL;
    /* Asked again: the seed already built, checked and handed back as it is. */
    assert_int_equal(seed_stage_bytes(f->seeds, VM1, "web-1", "", 4 << 20, &path, &again, &error),
                     0);
    assert_int_equal(again.size, size);
    assert_memory_equal(again.iso, disk, size);
    assert_string_equal(again.sha256, hex);
    /* Read by VM (GetSeed): the same bytes and digest. */
    assert_int_equal(seed_read(f->seeds, VM1, 4 << 20, &read), 0);
    assert_int_equal(read.size, size);
    assert_memory_equal(read.iso, disk, size);
    assert_string_equal(read.sha256, hex);
    seed_bytes_clear(&read);
    /* Larger than asked for, or never staged: refused with errno saying which. */
    assert_int_equal(seed_read(f->seeds, VM1, 1024, &read), -1);
    assert_int_equal(errno, EFBIG);
    assert_int_equal(seed_read(f->seeds, VM2, 4 << 20, &read), -1);
    assert_int_equal(errno, ENOENT);
    assert_null(read.iso);
    seed_bytes_clear(&built);
    seed_bytes_clear(&again);
    free(disk);
    free(path);
}

/* Instant deploy: seed_forget_other keeps a seed built from the same identity and removes one
   built from another, so the next stage builds the new identity instead of refusing it. */
static void test_seed_forget_other(void **state)
{
    fixture_t *f = *state;
    char *path = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(seed_stage(f->seeds, VM1, "pool-1", "", &path, &error), 0);
    free(path);
    path = NULL;
    char *ud = seed_default_user_data("pool-1", NULL, 0, &error);
    assert_non_null(ud);
    /* The same identity: kept (a retry of the hand-out). */
    assert_int_equal(seed_forget_other(f->seeds, VM1, "pool-1", ud, ""), 0);
    assert_int_equal(s_entries(f->dir), 2);
    free(ud);
    /* Another one: removed, and built for the new name at once. */
    ud = seed_default_user_data("web-1", NULL, 0, &error);
    assert_int_equal(seed_forget_other(f->seeds, VM1, "web-1", ud, ""), 0);
    assert_int_equal(s_entries(f->dir), 0);
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", ud, &path, &error), 0);
    char *meta = s_iso_file(path, "meta-data");
    assert_string_equal(meta, "instance-id: " VM1 "\nlocal-hostname: web-1\n");
    free(meta);
    free(path);
    free(ud);
    /* Nothing there, or not a VM id: nothing to do. */
    assert_int_equal(seed_forget_other(f->seeds, VM2, "web-1", "", ""), 0);
    assert_int_equal(seed_forget_other(f->seeds, "../x", "web-1", "", ""), 0);
}

static void test_seed_idempotent(void **state)
{
    fixture_t *f = *state;
    char *first = NULL, *second = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &first, &error), 0);
    struct stat a, b;
    assert_int_equal(stat(first, &a), 0);
    uint8_t *data1 = NULL, *data2 = NULL;
    size_t size1 = 0, size2 = 0;
    assert_int_equal(files_read(first, 4 << 20, &data1, &size1), 0);

    /* The same request again: the same file, not rebuilt (same inode and bytes). */
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &second, &error), 0);
    assert_string_equal(first, second);
    assert_int_equal(stat(second, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    assert_int_equal(files_read(second, 4 << 20, &data2, &size2), 0);
    assert_int_equal(size1, size2);
    assert_memory_equal(data1, data2, size1);
    free(second);
    second = NULL;

    /* Another identity for the same VM is refused and the seed is left as it was. */
    assert_int_equal(seed_stage(f->seeds, VM1, "web-2", "", &second, &error), SEED_CONFLICT);
    assert_null(second);
    assert_string_equal(error.code, "CONFLICT");
    assert_non_null(strstr(error.message, VM1));
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "#cloud-config\n", &second, &error),
                     SEED_CONFLICT);
    char *meta = s_iso_file(first, "meta-data");
    assert_non_null(strstr(meta, "local-hostname: web-1\n"));
    free(meta);

    /* A damaged seed (a power loss after a write that was not synced) is built again, not
       handed out. */
    assert_int_equal(truncate(first, 2048), 0);
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &second, &error), 0);
    free(data2);
    assert_int_equal(files_read(second, 4 << 20, &data2, &size2), 0);
    assert_int_equal(size2, size1);
    char *rebuilt = s_iso_file(second, "meta-data");
    assert_string_equal(rebuilt, "instance-id: " VM1 "\nlocal-hostname: web-1\n");
    free(rebuilt);
    free(second);
    second = NULL;

    /* A seed removed behind our back (sweep, disk cleanup) is simply built again. */
    assert_int_equal(unlink(first), 0);
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &second, &error), 0);
    char *volid = s_volume_id(second);
    assert_string_equal(volid, "cidata");
    free(volid);
    free(second);
    free(first);
    free(data1);
    free(data2);
    /* Only the ISO and its sum: no build leftovers. */
    assert_int_equal(s_entries(f->dir), 2);
}

static void test_seed_bad_input_refused(void **state)
{
    fixture_t *f = *state;
    static const char *names[] = {
        "",     "Web",
        "-a",   "a-",
        "a_b",  "a.b",
        "../x", "a b",
        "ä",    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        NULL
    };
    char *path = NULL;
    berth_error_t error = { 0 };
    for (const char **n = names; *n; n++) {
        error = (berth_error_t){ 0 };
        assert_int_equal(seed_stage(f->seeds, VM1, *n, "", &path, &error), SEED_BAD_REQUEST);
        assert_string_equal(error.code, "BAD_REQUEST");
        assert_string_equal(error_detail_get(&error, "field"), "name");
        assert_non_null(strstr(error.message, "name"));
    }
    /* 63 characters is the longest label allowed. */
    assert_true(
        seed_valid_hostname("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    static const char *vms[] = { "",
                                 "not-a-uuid",
                                 "3F2B8C1E-6A4D-4F0E-9B7A-1C2D3E4F5A6B",
                                 "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6",
                                 "../../etc/passwd",
                                 "3f2b8c1e+6a4d-4f0e-9b7a-1c2d3e4f5a6b",
                                 NULL };
    for (const char **v = vms; *v; v++) {
        assert_int_equal(seed_stage(f->seeds, *v, "web", "", &path, &error), SEED_BAD_REQUEST);
        assert_string_equal(error_detail_get(&error, "field"), "vm");
    }
    assert_int_equal(seed_stage(f->seeds, VM1, "web", "hello", &path, &error), SEED_BAD_REQUEST);
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&error, "field"), "user_data");
    assert_int_equal(seed_stage(f->seeds, VM1, "web", "#cloud-config\n\x01", &path, &error),
                     SEED_BAD_REQUEST);
    size_t big = 65536 + 1;
    char *large = malloc(big + 1);
    assert_non_null(large);
    memset(large, 'x', big);
    memcpy(large, "#cloud-config\n#", 15);
    large[big] = '\0';
    assert_int_equal(seed_stage(f->seeds, VM1, "web", large, &path, &error), SEED_BAD_REQUEST);
    assert_non_null(strstr(error.message, "limit"));
    assert_string_equal(error_detail_get(&error, "field"), "user_data");
    large[big - 1] = '\0'; /* exactly the limit is fine */
    assert_int_equal(seed_stage(f->seeds, VM1, "web", large, &path, &error), 0);
    char *user = s_iso_file(path, "user-data");
    assert_int_equal(strlen(user), 65536);
    free(user);
    free(path);
    free(large);
}

static void test_seed_refused_leaves_nothing(void **state)
{
    fixture_t *f = *state;
    char *path = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(seed_stage(f->seeds, VM1, "Bad_Name", "", &path, &error), SEED_BAD_REQUEST);
    assert_int_equal(s_entries(f->dir), 0);
}

static void test_seed_store_failure_reported(void **state)
{
    fixture_t *f = *state;
    char *path = NULL;
    berth_error_t error = { 0 };
    /* The seeds directory vanishes under the store (disk cleanup, unmounted volume). */
    char gone[1024];
    snprintf(gone, sizeof gone, "%s/gone", f->dir);
    seed_config_t c = s_config();
    seed_t *broken = seed_new(gone, &c);
    assert_non_null(broken);
    assert_int_equal(rmdir(gone), 0);
    assert_int_equal(seed_stage(broken, VM1, "web", "", &path, &error), -1);
    assert_null(path);
    assert_string_equal(error.code, "INTERNAL");
    assert_non_null(strstr(error.message, VM1));
    assert_non_null(strstr(error.message, gone));
    seed_destroy(&broken);
    assert_int_equal(s_entries(f->dir), 0); /* no half-written seed */
}

static void test_seed_sweep(void **state)
{
    fixture_t *f = *state;
    char *a = NULL, *b = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(seed_stage(f->seeds, VM1, "old", "", &a, &error), 0);
    assert_int_equal(seed_stage(f->seeds, VM2, "new", "", &b, &error), 0);
    /* Age VM1's files by two hours. */
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= 7200;
    tv[1] = tv[0];
    char sum[1024];
    snprintf(sum, sizeof sum, "%s/%s.sum", f->dir, VM1);
    assert_int_equal(utimes(a, tv), 0);
    assert_int_equal(utimes(sum, tv), 0);
    assert_int_equal(seed_sweep(f->seeds, 3600 * 1000), 2);
    assert_false(files_exists(a));
    assert_true(files_exists(b));
    assert_int_equal(seed_sweep(f->seeds, 3600 * 1000), 0);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seed_reads_back, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_network_config, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_iso_as_read, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_iso_network_config, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_custom_user_data, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_ssh_keys_in_user_data, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_idempotent, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_forget_other, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_bytes_and_read, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_bad_input_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_refused_leaves_nothing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_store_failure_reported, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_sweep, s_setup, s_teardown),
        cmocka_unit_test(test_seed_packages_in_user_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
