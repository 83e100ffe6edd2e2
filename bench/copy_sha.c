/*  bench-copy: the baseline of the image transfer row. Copies a file with a plain read/write
    loop, hashing it with SHA-256 on the way (libsodium, as the agent does), into another file
    on the same disk: what fetching an image costs at the least, without the bus. Prints one
    JSON line: {"bytes": N, "ms": T, "mb_per_s": R, "sha256": "..."}.
    Usage: bench-copy SRC DST [CHUNK_BYTES] */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 3 || sodium_init() < 0) {
        fprintf(stderr, "usage: bench-copy SRC DST [CHUNK_BYTES]\n");
        return 2;
    }
    size_t chunk = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 1048576;
    uint8_t *buf = malloc(chunk ? chunk : 1);
    int in = open(argv[1], O_RDONLY);
    int out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0640);
    if (!buf || !chunk || in < 0 || out < 0) {
        perror("bench-copy");
        return 1;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    double t = s_now_ms();
    long long total = 0;
    for (;;) {
        ssize_t n = read(in, buf, chunk);
        if (n < 0) {
            perror("read");
            return 1;
        }
        if (n == 0)
            break;
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
        if (write(out, buf, (size_t)n) != n) {
            perror("write");
            return 1;
        }
        total += n;
    }
    uint8_t digest[crypto_hash_sha256_BYTES];
    char hex[65];
    crypto_hash_sha256_final(&st, digest);
    double ms = s_now_ms() - t;
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    printf("{\"bytes\": %lld, \"ms\": %.3f, \"mb_per_s\": %.1f, \"sha256\": \"%s\"}\n", total, ms,
           (double)total / 1048576.0 / (ms / 1000.0), hex);
    close(in);
    close(out);
    free(buf);
    return 0;
}
