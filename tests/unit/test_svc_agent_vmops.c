/*  test_svc_agent_vmops: the agent's commands against a real libvirt (test:///default, the
    in-process simulated hypervisor). Each command runs twice and must answer ok both times
    (idempotence by VM id); what it did is checked through a second libvirt connection, the
    way an operator with virsh would: the volume, the domain, its power state, and that
    disposal leaves nothing behind. Bad commands fail with a clear error and change nothing.
    The agent's worker threads each open their own connection: every test:///default
    connection of one process sees the same simulated host, which this file checks too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testenv.h"
#include "util.h"
#include "vmops.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HOST       "host-t"
#define POOL       "berth-unit"
#define SEED_BYTES (64 * 1024)

typedef struct {
    char *dir;   /* scratch: data_dir and the base image */
    char *image; /* a real raw base image file */
    vmops_t *ops;
    Berth__AgentResult result; /* of the last command run */
    virConnectPtr conn;        /* the test's own view of the same test:///default */
    uint8_t seed[SEED_BYTES];
    int serial; /* for unique command ids */
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = testenv_tmpdir();
    assert_non_null(f->dir);
    /* A 1 MiB raw image: the test driver does not read it, but the agent checks that the
       base image the stager named is really there. */
    assert_true(asprintf(&f->image, "%s/base.raw", f->dir) > 0);
    FILE *img = fopen(f->image, "wb");
    assert_non_null(img);
    assert_int_equal(ftruncate(fileno(img), 1 << 20), 0);
    fclose(img);
    vmops_config_t vc = { .uri = "test:///default",
                          .host = HOST,
                          .data_dir = f->dir,
                          .pool = POOL,
                          .max_vcpus = 64,
                          .max_ram_mb = 262144,
                          .max_disk_gb = 2048,
                          .max_seed_bytes = 1 << 20,
                          .max_name_len = 64,
                          .copy_timeout_ms = 60000 };
    f->ops = vmops_new(&vc);
    assert_non_null(f->ops);
    f->conn = virConnectOpen("test:///default");
    assert_non_null(f->conn);
    /* Random bytes with the ISO 9660 signature where a reader looks for it. */
    for (size_t i = 0; i < sizeof f->seed; i++)
        f->seed[i] = (uint8_t)(rand() & 0xff);
    memcpy(f->seed + 32769, "CD001", 5);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    vmops_result_clear(&f->result);
    /* Leave no pool behind for the next test in this process (test:///default is shared). */
    virStoragePoolPtr pool = virStoragePoolLookupByName(f->conn, POOL);
    if (pool) {
        virStoragePoolDestroy(pool);
        virStoragePoolUndefine(pool);
        virStoragePoolFree(pool);
    }
    vmops_destroy(&f->ops);
    virConnectClose(f->conn);
    testenv_rmtree(f->dir);
    free(f->dir);
    free(f->image);
    free(f);
    return 0;
}

/* A command for vm with every field a provisioning task would send. */
static Berth__AgentCommand s_command(fixture_t *f, const char *op, const char *vm, char *id,
                                     Berth__Resources *flavor)
{
    snprintf(id, UTIL_ID_LEN + 16, "cmd-%d", ++f->serial);
    berth__resources__init(flavor);
    flavor->vcpus = 2;
    flavor->ram_mb = 1024;
    flavor->disk_gb = 10;
    Berth__AgentCommand cmd = BERTH__AGENT_COMMAND__INIT;
    cmd.id = id;
    cmd.op = (char *)op;
    cmd.vm = (char *)vm;
    cmd.name = "web-1 <&'\">";
    cmd.flavor = flavor;
    cmd.image = "debian-12";
    cmd.image_path = f->image;
    cmd.image_format = "raw";
    cmd.seed_iso.data = f->seed;
    cmd.seed_iso.len = sizeof f->seed;
    cmd.deadline_ms = util_now_ms() + 60000;
    return cmd;
}

/* Run one command; its result is valid until the next call. */
static const Berth__AgentResult *s_run(fixture_t *f, const Berth__AgentCommand *cmd)
{
    vmops_result_clear(&f->result);
    vmops_execute(f->ops, cmd, &f->result);
    return &f->result;
}

/* Run op on vm with a fresh command id; the result must be ok. */
static const Berth__AgentResult *s_run_ok(fixture_t *f, const char *op, const char *vm)
{
    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, op, vm, id, &flavor);
    const Berth__AgentResult *r = s_run(f, &cmd);
    assert_non_null(r);
    if (!r->ok)
        fail_msg("%s of %s failed: %s", op, vm, r->error);
    assert_string_equal(r->command, id);
    assert_string_equal(r->error, "");
    return r;
}

/* Run a command that must fail with an error containing want; returns nothing changed. */
static void s_run_fails(fixture_t *f, Berth__AgentCommand *cmd, const char *want)
{
    const Berth__AgentResult *r = s_run(f, cmd);
    assert_non_null(r);
    if (r->ok || !strstr(r->error, want))
        fail_msg("%s: expected a failure containing \"%s\", got ok=%d error \"%s\"",
                 cmd->op ? cmd->op : "(no op)", want, r->ok, r->error);
}

static int s_volume_exists(fixture_t *f, const char *name)
{
    virStoragePoolPtr pool = virStoragePoolLookupByName(f->conn, POOL);
    assert_non_null(pool);
    virStorageVolPtr vol = virStorageVolLookupByName(pool, name);
    virStoragePoolFree(pool);
    if (vol)
        virStorageVolFree(vol);
    return vol != NULL;
}

/* -1 when the domain does not exist, else whether it is active. */
static int s_domain_active(fixture_t *f, const char *vm)
{
    virDomainPtr dom = virDomainLookupByName(f->conn, vm);
    if (!dom)
        return -1;
    int active = virDomainIsActive(dom);
    virDomainFree(dom);
    return active;
}

static char *s_seed_path(fixture_t *f, const char *vm)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s-seed.iso", vmops_pool_dir(f->ops), vm) > 0);
    return path;
}

/* 1 when the file at path holds exactly the fixture's seed bytes. */
static int s_file_is_seed(fixture_t *f, const char *path)
{
    FILE *in = fopen(path, "rb");
    if (!in)
        return 0;
    uint8_t *buf = malloc(SEED_BYTES + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, SEED_BYTES + 1, in);
    fclose(in);
    int same = n == SEED_BYTES && memcmp(buf, f->seed, SEED_BYTES) == 0;
    free(buf);
    return same;
}

static void test_pool_is_created(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(vmops_connect(f->ops), 0);
    virStoragePoolPtr pool = virStoragePoolLookupByName(f->conn, POOL);
    assert_non_null(pool);
    assert_int_equal(virStoragePoolIsActive(pool), 1);
    char *xml = virStoragePoolGetXMLDesc(pool, 0);
    char *want = NULL;
    assert_true(asprintf(&want, "<path>%s/pool</path>", f->dir) > 0);
    assert_non_null(strstr(xml, want));
    free(want);
    free(xml);
    virStoragePoolFree(pool);
    struct stat st;
    assert_int_equal(stat(vmops_pool_dir(f->ops), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_string_equal(vmops_hypervisor(f->ops), "TEST");
    assert_true(vmops_pool_capacity_gb(f->ops) > 0);
    /* Connecting again finds everything in place; a pool stopped behind the agent's back
       is started again. */
    assert_int_equal(vmops_connect(f->ops), 0);
    pool = virStoragePoolLookupByName(f->conn, POOL);
    assert_int_equal(virStoragePoolDestroy(pool), 0);
    assert_int_equal(virStoragePoolIsActive(pool), 0);
    assert_int_equal(vmops_connect(f->ops), 0);
    assert_int_equal(virStoragePoolIsActive(pool), 1);
    virStoragePoolFree(pool);

    /* A second agent configured with the same pool name but another data_dir refuses to
       mix its files into the first one's pool, and says so in every command it answers. */
    char *other_dir = testenv_tmpdir();
    assert_non_null(other_dir);
    vmops_config_t vc = { .uri = "test:///default",
                          .host = HOST,
                          .data_dir = other_dir,
                          .pool = POOL,
                          .max_vcpus = 4,
                          .max_ram_mb = 4096,
                          .max_disk_gb = 10,
                          .max_seed_bytes = 1024,
                          .max_name_len = 8 };
    vmops_t *other = vmops_new(&vc);
    assert_non_null(other);
    assert_int_equal(vmops_connect(other), -1);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    Berth__AgentCommand cmd = BERTH__AGENT_COMMAND__INIT;
    cmd.id = "cmd-other";
    cmd.op = "DESTROY";
    cmd.vm = vm;
    Berth__AgentResult r;
    vmops_execute(other, &cmd, &r);
    assert_false(r.ok);
    assert_non_null(strstr(r.error, "storage pool 'berth-unit' exists but is not at"));
    vmops_result_clear(&r);
    vmops_destroy(&other);
    vmops_destroy(&other);
    testenv_rmtree(other_dir);
    free(other_dir);
}

static void test_lifecycle_twice_each(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char disk[64];
    snprintf(disk, sizeof disk, "%s.qcow2", vm);
    char *seed = s_seed_path(f, vm);

    for (int i = 0; i < 2; i++) {
        const Berth__AgentResult *r = s_run_ok(f, "CREATE_DISK", vm);
        assert_non_null(strstr(r->detail, disk));
        assert_true(s_volume_exists(f, disk));
        assert_int_equal(s_domain_active(f, vm), -1);
    }
    /* The volume is a qcow2 overlay of the requested size on the base image. */
    virStoragePoolPtr pool = virStoragePoolLookupByName(f->conn, POOL);
    virStorageVolPtr vol = virStorageVolLookupByName(pool, disk);
    assert_non_null(vol);
    virStorageVolInfo info;
    assert_int_equal(virStorageVolGetInfo(vol, &info), 0);
    assert_int_equal(info.capacity, 10ULL << 30);
    char *vxml = virStorageVolGetXMLDesc(vol, 0);
    assert_non_null(strstr(vxml, "<format type='qcow2'/>"));
    assert_non_null(strstr(vxml, "<backingStore>"));
    assert_non_null(strstr(vxml, f->image));
    free(vxml);
    virStorageVolFree(vol);
    virStoragePoolFree(pool);

    for (int i = 0; i < 2; i++) {
        const Berth__AgentResult *r = s_run_ok(f, "PUT_SEED", vm);
        assert_string_equal(r->detail, seed);
        assert_true(s_file_is_seed(f, seed));
    }
    for (int i = 0; i < 2; i++) {
        const Berth__AgentResult *r = s_run_ok(f, "DEFINE", vm);
        assert_string_equal(r->power_state, "STOPPED");
        assert_int_equal(s_domain_active(f, vm), 0);
    }
    /* The definition carries the VM's identity, size and devices. */
    virDomainPtr dom = virDomainLookupByName(f->conn, vm);
    assert_non_null(dom);
    char uuid[VIR_UUID_STRING_BUFLEN];
    assert_int_equal(virDomainGetUUIDString(dom, uuid), 0);
    assert_string_equal(uuid, vm);
    char *title = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_TITLE, NULL, 0);
    assert_string_equal(title, "web-1 <&'\">");
    free(title);
    virDomainInfo dinfo;
    assert_int_equal(virDomainGetInfo(dom, &dinfo), 0);
    assert_int_equal(dinfo.nrVirtCpu, 2);
    assert_int_equal(dinfo.maxMem, 1024 * 1024);
    char *dxml = virDomainGetXMLDesc(dom, 0);
    assert_non_null(strstr(dxml, "<domain type='test'"));
    assert_non_null(strstr(dxml, disk));
    assert_non_null(strstr(dxml, seed));
    assert_non_null(strstr(dxml, "device='cdrom'"));
    assert_non_null(strstr(dxml, "<readonly/>"));
    assert_non_null(strstr(dxml, "bus='virtio'"));
    assert_non_null(strstr(dxml, "<serial type='pty'>"));
    /* test:///default has an active "default" network, so the VM is plugged into it. */
    assert_non_null(strstr(dxml, "<source network='default'"));
    free(dxml);
    virDomainFree(dom);

    for (int i = 0; i < 2; i++) {
        const Berth__AgentResult *r = s_run_ok(f, "START", vm);
        assert_string_equal(r->power_state, "RUNNING");
        assert_int_equal(s_domain_active(f, vm), 1);
    }
    for (int i = 0; i < 2; i++) {
        const Berth__AgentResult *r = s_run_ok(f, "DESTROY", vm);
        assert_string_equal(r->power_state, "");
        assert_int_equal(s_domain_active(f, vm), -1);
        assert_false(s_volume_exists(f, disk));
        assert_int_equal(access(seed, F_OK), -1);
    }
    free(seed);
}

/* A VM on a Berth network: DEFINE plugs it into the network's bridge (or libvirt network)
   with the MAC its address is bound to; a MAC or bridge name that is not one is not put into
   the XML (the default network is used as without a network). */
static void test_define_with_network(void **state)
{
    fixture_t *f = *state;
    const char *cases[][4] = {
        /* mac, bridge, libvirt network, what the domain XML must hold */
        { "02:11:22:33:44:55", "br-lab", "", "<source bridge='br-lab'/>" },
        { "02:11:22:33:44:66", "", "default", "<mac address='02:11:22:33:44:66'/>" },
        { "02:11:22:33:44:77'/><x", "br0", "", "<source network='default'/>" },
        { "02:11:22:33:44:88", "br0'/><x", "", "<source network='default'/>" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char vm[UTIL_ID_LEN];
        util_uuid(vm);
        s_run_ok(f, "CREATE_DISK", vm);
        s_run_ok(f, "PUT_SEED", vm);
        char id[UTIL_ID_LEN + 16];
        Berth__Resources flavor;
        Berth__AgentCommand cmd = s_command(f, "DEFINE", vm, id, &flavor);
        Berth__VmNetwork net = BERTH__VM_NETWORK__INIT;
        net.name = "lab";
        net.ip = "10.0.0.2";
        net.prefix = 24;
        net.mac = (char *)cases[i][0];
        net.bridge = (char *)cases[i][1];
        net.libvirt_network = (char *)cases[i][2];
        cmd.network = &net;
        const Berth__AgentResult *r = s_run(f, &cmd);
        if (!r->ok)
            fail_msg("DEFINE with network %zu failed: %s", i, r->error);
        virDomainPtr dom = virDomainLookupByName(f->conn, vm);
        assert_non_null(dom);
        char *dxml = virDomainGetXMLDesc(dom, 0);
        if (!strstr(dxml, cases[i][3]))
            fail_msg("case %zu: no %s in %s", i, cases[i][3], dxml);
        if (i == 0) {
            assert_non_null(strstr(dxml, "<interface type='bridge'>"));
            assert_non_null(strstr(dxml, "<mac address='02:11:22:33:44:55'/>"));
        }
        if (i >= 2)
            assert_null(strstr(dxml, "<x"));
        free(dxml);
        virDomainFree(dom);
        s_run_ok(f, "DESTROY", vm);
    }
}

/* A VM on two networks: DEFINE gives it one interface per network, in order, each with its
   MAC. */
static void test_define_with_two_networks(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    s_run_ok(f, "CREATE_DISK", vm);
    s_run_ok(f, "PUT_SEED", vm);
    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "DEFINE", vm, id, &flavor);
    Berth__VmNetwork a = BERTH__VM_NETWORK__INIT, b = BERTH__VM_NETWORK__INIT;
    a.ip = "10.0.0.2";
    a.mac = "02:11:22:33:44:01";
    a.bridge = "br-a";
    b.ip = "10.1.0.2";
    b.mac = "02:11:22:33:44:02";
    b.libvirt_network = "default";
    Berth__VmNetwork *both[] = { &a, &b };
    cmd.network = &a;
    cmd.networks = both;
    cmd.n_networks = 2;
    const Berth__AgentResult *r = s_run(f, &cmd);
    if (!r->ok)
        fail_msg("DEFINE with two networks failed: %s", r->error);
    virDomainPtr dom = virDomainLookupByName(f->conn, vm);
    assert_non_null(dom);
    char *dxml = virDomainGetXMLDesc(dom, 0);
    char *first = strstr(dxml, "<mac address='02:11:22:33:44:01'/>");
    char *second = strstr(dxml, "<mac address='02:11:22:33:44:02'/>");
    if (!first || !second || first > second)
        fail_msg("not two interfaces in order in %s", dxml);
    assert_non_null(strstr(dxml, "<source bridge='br-a'/>"));
    free(dxml);
    virDomainFree(dom);
    s_run_ok(f, "DESTROY", vm);
}

/* Disposal of a VM that was only partly built (disk, no domain) removes what exists. */
static void test_destroy_partial_build(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char disk[64];
    snprintf(disk, sizeof disk, "%s.qcow2", vm);
    char *seed = s_seed_path(f, vm);
    s_run_ok(f, "CREATE_DISK", vm);
    s_run_ok(f, "PUT_SEED", vm);
    assert_true(s_volume_exists(f, disk));
    const Berth__AgentResult *r = s_run_ok(f, "DESTROY", vm);
    assert_non_null(strstr(r->detail, "no domain"));
    assert_false(s_volume_exists(f, disk));
    assert_int_equal(access(seed, F_OK), -1);
    /* And a VM the host never heard of disposes cleanly too. */
    util_uuid(vm);
    s_run_ok(f, "DESTROY", vm);
    free(seed);
}

static void test_bad_commands_fail_cleanly(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand cmd;

    cmd = s_command(f, "REFORMAT", vm, id, &flavor);
    s_run_fails(f, &cmd, "unknown op 'REFORMAT'");
    cmd = s_command(f, "", vm, id, &flavor);
    s_run_fails(f, &cmd, "unknown op ''");
    cmd = s_command(f, "DEFINE", "web-1", id, &flavor);
    s_run_fails(f, &cmd, "vm id 'web-1' is not a UUID");
    cmd = s_command(f, "DESTROY", "../../etc/passwd-aaaaaaaaaaaaaaaaaaaaa", id, &flavor);
    s_run_fails(f, &cmd, "is not a UUID");
    cmd = s_command(f, "START", "\xff\xfe-not-utf8", id, &flavor);
    s_run_fails(f, &cmd, "vm id '?' is not a UUID");
    char long_id[300];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    cmd = s_command(f, "START", vm, id, &flavor);
    cmd.id = long_id;
    s_run_fails(f, &cmd, "id must be 1..128 printable ASCII characters");
    cmd = s_command(f, "START", vm, id, &flavor);
    cmd.id = "";
    s_run_fails(f, &cmd, "id must be 1..128 printable ASCII characters");
    cmd = s_command(f, "CREATE_DISK", vm, id, &flavor);
    cmd.flavor = NULL;
    s_run_fails(f, &cmd, "no flavor");
    cmd = s_command(f, "CREATE_DISK", vm, id, &flavor);
    flavor.disk_gb = 0;
    s_run_fails(f, &cmd, "disk_gb 0 is outside 1..2048");
    cmd = s_command(f, "CREATE_DISK", vm, id, &flavor);
    flavor.disk_gb = 1LL << 40;
    s_run_fails(f, &cmd, "is outside 1..2048");
    cmd = s_command(f, "CREATE_DISK", vm, id, &flavor);
    cmd.image_path = "base.raw";
    s_run_fails(f, &cmd, "image_path must be an absolute path");
    cmd = s_command(f, "CREATE_DISK", vm, id, &flavor);
    cmd.image_format = "vmdk";
    s_run_fails(f, &cmd, "image_format must be qcow2 or raw");
    cmd = s_command(f, "CREATE_DISK", vm, id, &flavor);
    cmd.image_path = "/nonexistent/base.qcow2";
    s_run_fails(f, &cmd, "base image '/nonexistent/base.qcow2' is not readable");
    cmd = s_command(f, "PUT_SEED", vm, id, &flavor);
    cmd.seed_iso.len = 0;
    s_run_fails(f, &cmd, "seed_iso is 0 bytes");
    cmd = s_command(f, "PUT_SEED", vm, id, &flavor);
    cmd.seed_iso.len = 32768;
    s_run_fails(f, &cmd, "not an ISO 9660 image");
    uint8_t *big = calloc(1, (1 << 20) + 1);
    assert_non_null(big);
    cmd = s_command(f, "PUT_SEED", vm, id, &flavor);
    cmd.seed_iso.data = big;
    cmd.seed_iso.len = (1 << 20) + 1;
    s_run_fails(f, &cmd, "must be 1..1048576");
    free(big);
    cmd = s_command(f, "DEFINE", vm, id, &flavor);
    flavor.vcpus = 65;
    s_run_fails(f, &cmd, "vcpus 65 is outside 1..64");
    cmd = s_command(f, "DEFINE", vm, id, &flavor);
    flavor.ram_mb = -1;
    s_run_fails(f, &cmd, "ram_mb -1 is outside 1..262144");
    cmd = s_command(f, "DEFINE", vm, id, &flavor);
    cmd.name = "two\nlines";
    s_run_fails(f, &cmd, "name must be 1..64 printable characters");
    cmd = s_command(f, "START", vm, id, &flavor);
    cmd.deadline_ms = util_now_ms() - 1000;
    s_run_fails(f, &cmd, "its deadline passed");

    /* Out of order: the failure names the domain and the host. */
    char want[256];
    cmd = s_command(f, "DEFINE", vm, id, &flavor);
    snprintf(want, sizeof want, "failed to define domain '%s' on host '%s': its disk volume", vm,
             HOST);
    s_run_fails(f, &cmd, want);
    cmd = s_command(f, "START", vm, id, &flavor);
    snprintf(want, sizeof want, "failed to start domain '%s' on host '%s'", vm, HOST);
    s_run_fails(f, &cmd, want);

    /* None of that left anything behind. */
    char disk[64];
    snprintf(disk, sizeof disk, "%s.qcow2", vm);
    assert_int_equal(s_domain_active(f, vm), -1);
    assert_false(s_volume_exists(f, disk));
    char *seed = s_seed_path(f, vm);
    assert_int_equal(access(seed, F_OK), -1);
    free(seed);
}

/* When libvirt itself refuses, its own message reaches the result. Here another domain
   already holds the VM's UUID. */
static void test_libvirt_message_passed_on(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char *xml = NULL;
    assert_true(asprintf(&xml,
                         "<domain type='test'><name>squatter</name><uuid>%s</uuid>"
                         "<memory>65536</memory><os><type>hvm</type></os></domain>",
                         vm) > 0);
    virDomainPtr other = virDomainDefineXML(f->conn, xml);
    free(xml);
    assert_non_null(other);
    s_run_ok(f, "CREATE_DISK", vm);
    s_run_ok(f, "PUT_SEED", vm);
    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "DEFINE", vm, id, &flavor);
    char want[256];
    snprintf(want, sizeof want, "failed to define domain '%s' on host '%s': ", vm, HOST);
    s_run_fails(f, &cmd, want);
    assert_non_null(strstr(f->result.error, "squatter"));
    assert_int_equal(virDomainUndefine(other), 0);
    virDomainFree(other);
    s_run_ok(f, "DESTROY", vm);
}

/* Each worker thread opens its own connection: on test:///default every connection of the
   process must see the same host, or a DEFINE on one thread would not find the disk that a
   CREATE_DISK on another made. */
static void test_connections_share_one_host(void **state)
{
    fixture_t *f = *state;
    vmops_config_t vc = { .uri = "test:///default",
                          .host = HOST,
                          .data_dir = f->dir,
                          .pool = POOL,
                          .max_vcpus = 64,
                          .max_ram_mb = 262144,
                          .max_disk_gb = 2048,
                          .max_seed_bytes = 1 << 20,
                          .max_name_len = 64 };
    vmops_t *other = vmops_new(&vc);
    assert_non_null(other);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    s_run_ok(f, "CREATE_DISK", vm);
    s_run_ok(f, "PUT_SEED", vm);
    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "DEFINE", vm, id, &flavor);
    Berth__AgentResult r;
    vmops_execute(other, &cmd, &r);
    if (!r.ok)
        fail_msg("DEFINE on a second connection failed: %s", r.error);
    vmops_result_clear(&r);
    assert_ptr_not_equal(vmops_conn(other), vmops_conn(f->ops));
    assert_int_equal(s_domain_active(f, vm), 0);
    s_run_ok(f, "START", vm); /* back on the first connection */
    assert_int_equal(s_domain_active(f, vm), 1);
    vmops_destroy(&other);
    s_run_ok(f, "DESTROY", vm);
}

/* The inventory a heartbeat carries: the host is up, its capacity, and every domain with
   its power state, including the test driver's own "test" domain. */
static void test_inventory(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    s_run_ok(f, "CREATE_DISK", vm);
    s_run_ok(f, "PUT_SEED", vm);
    s_run_ok(f, "DEFINE", vm);
    Berth__Host host;
    vmops_inventory(f->ops, &host);
    assert_string_equal(host.state, "UP");
    assert_string_equal(host.hypervisor, "TEST");
    assert_non_null(host.capacity);
    assert_true(host.capacity->vcpus > 0);
    assert_true(host.capacity->ram_mb > 0);
    assert_true(host.capacity->disk_gb > 0);
    int seen_vm = 0, seen_test = 0;
    for (size_t i = 0; i < host.n_domains; i++) {
        if (strcmp(host.domains[i]->name, vm) == 0) {
            assert_string_equal(host.domains[i]->power_state, "STOPPED");
            seen_vm++;
        }
        if (strcmp(host.domains[i]->name, "test") == 0) {
            assert_string_equal(host.domains[i]->power_state, "RUNNING");
            seen_test++;
        }
    }
    assert_int_equal(seen_vm, 1);
    assert_int_equal(seen_test, 1);
    vmops_inventory_clear(&host);
    vmops_inventory_clear(&host);

    /* libvirt unreachable: the host is DOWN with nothing listed, and nothing crashes. */
    vmops_config_t vc = { .uri = "test:///nonexistent/file.xml",
                          .host = HOST,
                          .data_dir = f->dir,
                          .pool = POOL,
                          .max_vcpus = 1,
                          .max_ram_mb = 1,
                          .max_disk_gb = 1,
                          .max_seed_bytes = 1,
                          .max_name_len = 1 };
    vmops_t *down = vmops_new(&vc);
    assert_non_null(down);
    vmops_inventory(down, &host);
    assert_string_equal(host.state, "DOWN");
    assert_int_equal(host.n_domains, 0);
    vmops_inventory_clear(&host);
    vmops_destroy(&down);
    s_run_ok(f, "DESTROY", vm);
}

/* A built, running VM: CREATE_DISK, PUT_SEED, DEFINE, START. */
static void s_build_running(fixture_t *f, const char *vm)
{
    s_run_ok(f, "CREATE_DISK", vm);
    s_run_ok(f, "PUT_SEED", vm);
    s_run_ok(f, "DEFINE", vm);
    assert_string_equal(s_run_ok(f, "START", vm)->power_state, "RUNNING");
}

/* The day-2 power operations: each changes the domain's state as asked, twice in a row is
   fine (the detail says nothing was to do), the disk and definition stay, and one that
   makes no sense in the domain's state fails with the reason. */
static void test_day2_power_ops(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN], disk[64], id[UTIL_ID_LEN + 16];
    util_uuid(vm);
    snprintf(disk, sizeof disk, "%s.qcow2", vm);
    s_build_running(f, vm);

    /* suspend / resume */
    assert_string_equal(s_run_ok(f, "SUSPEND", vm)->power_state, "SUSPENDED");
    const Berth__AgentResult *r = s_run_ok(f, "SUSPEND", vm);
    assert_string_equal(r->power_state, "SUSPENDED");
    assert_string_equal(r->detail, "already suspended");
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "REBOOT", vm, id, &flavor);
    s_run_fails(f, &cmd, "it is not running");
    assert_string_equal(s_run_ok(f, "RESUME", vm)->power_state, "RUNNING");
    assert_string_equal(s_run_ok(f, "RESUME", vm)->detail, "already running");

    /* reboot and reset keep it running */
    r = s_run_ok(f, "REBOOT", vm);
    assert_string_equal(r->power_state, "RUNNING");
    assert_string_equal(r->detail, "reboot asked");
    r = s_run_ok(f, "RESET", vm);
    assert_string_equal(r->power_state, "RUNNING");
    assert_int_equal(s_domain_active(f, vm), 1);

    /* graceful shutdown: the test driver's guest obeys at once */
    cmd = s_command(f, "SHUTDOWN", vm, id, &flavor);
    cmd.timeout_s = 5;
    r = s_run(f, &cmd);
    assert_true(r->ok);
    assert_string_equal(r->power_state, "STOPPED");
    assert_string_equal(r->detail, "shut down");
    assert_int_equal(s_domain_active(f, vm), 0);
    assert_true(s_volume_exists(f, disk));
    r = s_run(f, &cmd);
    assert_true(r->ok);
    assert_string_equal(r->detail, "already off");
    cmd = s_command(f, "SUSPEND", vm, id, &flavor);
    s_run_fails(f, &cmd, "not running");
    cmd = s_command(f, "RESUME", vm, id, &flavor);
    s_run_fails(f, &cmd, "not running");
    cmd = s_command(f, "SHUTDOWN", vm, id, &flavor);
    cmd.timeout_s = 100000;
    s_run_fails(f, &cmd, "timeout_s 100000 is outside 0..3600");

    /* a paused guest cannot answer a shutdown: it is powered off */
    s_run_ok(f, "START", vm);
    s_run_ok(f, "SUSPEND", vm);
    cmd = s_command(f, "SHUTDOWN", vm, id, &flavor);
    r = s_run(f, &cmd);
    assert_true(r->ok);
    assert_string_equal(r->detail, "was paused: powered off");
    assert_string_equal(r->power_state, "STOPPED");

    /* power off at once */
    s_run_ok(f, "START", vm);
    r = s_run_ok(f, "POWER_OFF", vm);
    assert_string_equal(r->detail, "powered off");
    assert_string_equal(r->power_state, "STOPPED");
    assert_string_equal(s_run_ok(f, "POWER_OFF", vm)->detail, "already off");
    assert_true(s_volume_exists(f, disk));

    /* a domain that is not here: the task named the wrong host */
    s_run_ok(f, "DESTROY", vm);
    const char *ops[] = { "SHUTDOWN", "POWER_OFF", "REBOOT", "RESET", "SUSPEND", "RESUME" };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        cmd = s_command(f, ops[i], vm, id, &flavor);
        s_run_fails(f, &cmd, "domain is not defined");
    }
}

/* MANAGED_SAVE (instant deploy) suspends a running domain to disk: shut off, with libvirt's
   managed save image, asked again it is already saved; START restores it (running, the image
   consumed); DESTROY removes a saved domain with its image; an undefined domain is refused. */
static void test_managed_save(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN], id[UTIL_ID_LEN + 16];
    util_uuid(vm);
    s_build_running(f, vm);
    const Berth__AgentResult *r = s_run_ok(f, "MANAGED_SAVE", vm);
    assert_string_equal(r->power_state, "STOPPED");
    assert_string_equal(r->detail, "saved to disk");
    assert_int_equal(s_domain_active(f, vm), 0);
    virDomainPtr dom = virDomainLookupByName(f->conn, vm);
    assert_non_null(dom);
    assert_int_equal(virDomainHasManagedSaveImage(dom, 0), 1);
    assert_string_equal(s_run_ok(f, "MANAGED_SAVE", vm)->detail, "already saved to disk");
    assert_string_equal(s_run_ok(f, "START", vm)->power_state, "RUNNING");
    assert_int_equal(virDomainHasManagedSaveImage(dom, 0), 0);
    s_run_ok(f, "MANAGED_SAVE", vm);
    virDomainFree(dom);
    s_run_ok(f, "DESTROY", vm);
    assert_int_equal(s_domain_active(f, vm), -1);
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "MANAGED_SAVE", vm, id, &flavor);
    s_run_fails(f, &cmd, "domain is not defined");
}

/* CAPTURE_SNAPSHOT flattens a shut-off VM's disk (on the test driver an overlay without a
   file: its base) into <data_dir>/captures/<upload>.qcow2 and answers its SHA-256 and size,
   the same again when asked again; refused while the domain runs or without a valid upload
   id. CAPTURE_CLEANUP removes the file, and counts a file already gone as removed. */
static void test_capture_ops(void **state)
{
    fixture_t *f = *state;
    char vm[UTIL_ID_LEN], upload[UTIL_ID_LEN], id[UTIL_ID_LEN + 16], path[1024];
    util_uuid(vm);
    util_uuid(upload);
    snprintf(path, sizeof path, "%s/captures/%s.qcow2", f->dir, upload);
    s_build_running(f, vm);
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "CAPTURE_SNAPSHOT", vm, id, &flavor);
    cmd.upload_id = upload;
    s_run_fails(f, &cmd, "its domain is not shut off");
    assert_int_equal(access(path, F_OK), -1);
    s_run_ok(f, "POWER_OFF", vm);
    cmd = s_command(f, "CAPTURE_SNAPSHOT", vm, id, &flavor);
    cmd.upload_id = upload;
    const Berth__AgentResult *r = s_run(f, &cmd);
    assert_true(r->ok);
    assert_int_equal(strlen(r->sha256), 64);
    char sha[65];
    snprintf(sha, sizeof sha, "%s", r->sha256);
    int64_t size = r->size_bytes;
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((int64_t)st.st_size, size);
    cmd = s_command(f, "CAPTURE_SNAPSHOT", vm, id, &flavor);
    cmd.upload_id = upload;
    r = s_run(f, &cmd);
    assert_true(r->ok);
    assert_string_equal(r->sha256, sha);
    assert_int_equal(r->size_bytes, size);
    cmd = s_command(f, "CAPTURE_SNAPSHOT", vm, id, &flavor);
    cmd.upload_id = "../../etc";
    s_run_fails(f, &cmd, "upload_id must be a UUID");
    for (int i = 0; i < 2; i++) {
        cmd = s_command(f, "CAPTURE_CLEANUP", vm, id, &flavor);
        cmd.upload_id = upload;
        r = s_run(f, &cmd);
        assert_true(r->ok);
        assert_int_equal(access(path, F_OK), -1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_is_created, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_define_with_network, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_define_with_two_networks, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle_twice_each, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_partial_build, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_commands_fail_cleanly, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_libvirt_message_passed_on, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_connections_share_one_host, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_inventory, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_day2_power_ops, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_capture_ops, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_managed_save, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
