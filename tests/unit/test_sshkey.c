/*  test_sshkey: OpenSSH public key lines. Keys ssh-keygen made are accepted with the
    fingerprint ssh-keygen -l printed for them; a line that only looks like a key (a type the
    blob does not hold, a short key, bytes left over, bad base64, two lines, an unknown type)
    is refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sshkey.h"
#include "testenv.h"

#include <string.h>

/* Made with ssh-keygen -t TYPE -C ann@laptop; fingerprints from ssh-keygen -lf. */
static const struct {
    const char *line, *type, *fingerprint;
} s_good[] = {
    { "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8ASS8xh/TLWQiuwnuHZI679ehIVEcoupFQO1qD2F+U "
      "ann@laptop",
      "ssh-ed25519", "SHA256:rAayeiFDPMXJLjf4uOQBGMtZHMFB5UrwWjOx1RoCRBI" },
    { "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCWyJ7sglHXYxhXBgqn5adOzCa+WyAsq5jngYXgG3Swz6rNXJ6Qdv"
      "Kvq6eCCxnkj6MZGDVjRotGb/eiA/ezyKyomYG+KgcNibY+9W5vum+bUb9uaw/fubjENDtRUTMNBoMwpletqSgyxJ"
      "O9hY7bYt0V0arY8SqNWXSC5U24kue83Q== ann@laptop",
      "ssh-rsa", "SHA256:XoBztV+LpaUwHWAMGbYgj69hK6thEWsAmnNxsz6tzbk" },
    { "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIt0TMOmoINZ8nOJ"
      "f6/OGPSMexg97vPWagB12nMz38q7F3+IAaiH+dyg+LRj4ftVTVMFfxREP19v0V3ZaRTNYrE= ann@laptop",
      "ecdsa-sha2-nistp256", "SHA256:zJjNRaojf/MdX6P38msnkYp8WM81Oq7l13vPzSoOjnQ" },
    { "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBErH/aNe8DowAnaz"
      "uZFRZvRQHwLaiQ0VwulsOpMR+3b/7+LfrKzM6PO/GoWFFDIBEGFtY45iipyqY3xKXhkaFEw6GkHKNnC2Z7s1DvIg"
      "ei6tBzyLub9czvlREGZpH+DNcg== ann@laptop",
      "ecdsa-sha2-nistp384", "SHA256:UHp/AvMvFutcJT6d5r+jC64hsjPwdTWlpHhfx+gJPdI" },
    { "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAEoMeDc7pA9JA7A"
      "9XAPJ54+z7dwLVIEjmlbm7vfFECISkhbxA/RjRj4/drdkt2oGKSI6IS2I0UiO2vnLvgB/dCsIQAOU2k8/dSyhAN2"
      "y9EaKXjtufce9FzpElnAo7uTWXuwymkGImDi5+S9AYM+TnloUIC9L7AkACqFJ2NSHuk3qJtk1w== ann@laptop",
      "ecdsa-sha2-nistp521", "SHA256:4HILqF7xuk1recE9ZJt3oXflzeuXG4aQzBRpjKBeDK4" },
};

#define ED25519_BLOB "AAAAC3NzaC1lZDI1NTE5AAAAIG8ASS8xh/TLWQiuwnuHZI679ehIVEcoupFQO1qD2F+U"

static void test_keys_of_every_type_fingerprint_as_ssh_keygen(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_good / sizeof *s_good; i++) {
        sshkey_t key;
        size_t start = 99;
        const char *why = NULL;
        assert_int_equal(sshkey_parse(s_good[i].line, 8192, &key, &start, &why), 0);
        assert_string_equal(key.type, s_good[i].type);
        assert_string_equal(key.fingerprint, s_good[i].fingerprint);
        assert_int_equal(start, 0);
        assert_int_equal(key.line_len, strlen(s_good[i].line));
        assert_string_equal(s_good[i].line + key.comment_at, "ann@laptop");
        assert_true(sshkey_line_ok(s_good[i].line, 8192));
    }
}

static void test_blanks_around_and_no_comment(void **state)
{
    (void)state;
    const char *text = "  ssh-ed25519 " ED25519_BLOB "\r\n";
    sshkey_t key;
    size_t start;
    const char *why;
    assert_int_equal(sshkey_parse(text, 8192, &key, &start, &why), 0);
    assert_int_equal(start, 2);
    assert_int_equal(key.line_len, strlen("ssh-ed25519 " ED25519_BLOB));
    assert_int_equal(key.comment_at, key.line_len);
    /* Not a line a seed takes as it is: the blanks must go first. */
    assert_false(sshkey_line_ok(text, 8192));
    assert_true(sshkey_line_ok("ssh-ed25519 " ED25519_BLOB, 8192));
}

static void test_what_only_looks_like_a_key_is_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "hello",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP== ann",
        "ssh-ed25519",
        "ssh-ed25519   ",
        "ssh-ed25519 not*base64",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8ASS8xh", /* cut short */
        /* an RSA blob written as ssh-ed25519 */
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAAgQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
        /* 31 bytes of Ed25519 key */
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAH0FBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
        /* a byte after the key */
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBeA==",
        /* a 768-bit RSA key */
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAYQDDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PD"
        "w8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8M=",
        /* the nistp256 key written as nistp384 */
        "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIt0TMOmoINZ8nOJ"
        "f6/OGPSMexg97vPWagB12nMz38q7F3+IAaiH+dyg+LRj4ftVTVMFfxREP19v0V3ZaRTNYrE=",
        /* two keys, two lines */
        "ssh-ed25519 " ED25519_BLOB " a\nssh-ed25519 " ED25519_BLOB " b",
        /* a control character in the comment */
        "ssh-ed25519 " ED25519_BLOB " ann\x1b[2J",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sshkey_t key;
        size_t start;
        const char *why = NULL;
        assert_int_equal(sshkey_parse(bad[i], 8192, &key, &start, &why), -1);
        assert_non_null(why);
        assert_false(sshkey_line_ok(bad[i], 8192));
    }
    /* Longer than the limit. */
    sshkey_t key;
    size_t start;
    const char *why = NULL;
    assert_int_equal(sshkey_parse(s_good[0].line, 40, &key, &start, &why), -1);
    assert_string_equal(why, "public_key is longer than the limit");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_of_every_type_fingerprint_as_ssh_keygen),
        cmocka_unit_test(test_blanks_around_and_no_comment),
        cmocka_unit_test(test_what_only_looks_like_a_key_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
