/*  bench-libvirt: the provisioning baseline. Defines and starts N domains on a libvirt
    driver (test:///default by default, the driver the simulated hosts use), with the same
    shape of domain XML the agent writes, and prints one JSON line: per-domain define+start
    latency (p50, p99, ms) and domains per second. Every domain is destroyed and undefined
    afterwards, outside the timed part.

    bench-libvirt [count] [uri] */
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_pct(const double *sorted, int n, double p)
{
    int i = (int)(p / 100.0 * n + 0.5) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void s_quiet(void *arg, virErrorPtr err)
{
    (void)arg;
    (void)err;
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 1000;
    const char *uri = argc > 2 ? argv[2] : "test:///default";
    if (count < 1 || count > 1000000) {
        fprintf(stderr, "bench-libvirt: count must be 1..1000000\n");
        return 2;
    }
    virSetErrorFunc(NULL, s_quiet);
    virConnectPtr conn = virConnectOpen(uri);
    if (!conn) {
        fprintf(stderr, "bench-libvirt: cannot open %s\n", uri);
        return 1;
    }
    double *lat = calloc((size_t)count, sizeof *lat);
    virDomainPtr *doms = calloc((size_t)count, sizeof *doms);
    if (!lat || !doms)
        return 1;
    char xml[2048];
    double start = s_now_ms();
    for (int i = 0; i < count; i++) {
        char name[64];
        snprintf(name, sizeof name, "bench-%d-%d", (int)getpid(), i);
        snprintf(xml, sizeof xml,
                 "<domain type='test'>\n"
                 "  <name>%s</name>\n"
                 "  <title>%s</title>\n"
                 "  <memory unit='MiB'>1024</memory>\n"
                 "  <vcpu>1</vcpu>\n"
                 "  <os><type>hvm</type><boot dev='hd'/></os>\n"
                 "  <features><acpi/></features>\n"
                 "  <on_poweroff>destroy</on_poweroff>\n"
                 "  <on_reboot>restart</on_reboot>\n"
                 "  <on_crash>destroy</on_crash>\n"
                 "  <devices>\n"
                 "    <disk type='file' device='disk'>\n"
                 "      <driver name='qemu' type='qcow2'/>\n"
                 "      <source file='/var/lib/berth/%s.qcow2'/>\n"
                 "      <target dev='vda' bus='virtio'/>\n"
                 "    </disk>\n"
                 "    <disk type='file' device='cdrom'>\n"
                 "      <driver name='qemu' type='raw'/>\n"
                 "      <source file='/var/lib/berth/%s-seed.iso'/>\n"
                 "      <target dev='hdc' bus='ide'/>\n"
                 "      <readonly/>\n"
                 "    </disk>\n"
                 "  </devices>\n"
                 "</domain>\n",
                 name, name, name, name);
        double t0 = s_now_ms();
        virDomainPtr dom = virDomainDefineXML(conn, xml);
        if (!dom || virDomainCreate(dom) != 0) {
            virErrorPtr err = virGetLastError();
            fprintf(stderr, "bench-libvirt: define+start failed: %s\n",
                    err && err->message ? err->message : "?");
            return 1;
        }
        lat[i] = s_now_ms() - t0;
        doms[i] = dom;
    }
    double elapsed = s_now_ms() - start;
    for (int i = 0; i < count; i++) {
        virDomainDestroy(doms[i]);
        virDomainUndefine(doms[i]);
        virDomainFree(doms[i]);
    }
    virConnectClose(conn);
    qsort(lat, (size_t)count, sizeof *lat, s_cmp);
    printf("{\"count\": %d, \"p50_ms\": %.4f, \"p99_ms\": %.4f, \"per_s\": %.1f}\n", count,
           s_pct(lat, count, 50), s_pct(lat, count, 99), count / (elapsed / 1000.0));
    free(lat);
    free(doms);
    return 0;
}
