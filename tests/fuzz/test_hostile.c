/* Hostile files outside what the parsers see: a tokenizer.model that makes SentencePiece throw (run
 * under LeakSanitizer in the ASan build), FIFOs and devices given as inputs, and outputs that are not
 * regular files. Each must fail at once with a one-line message naming the file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "br_tok.h"
#include "convert.h"
#include "gguf.h"
#include "model.h"

static const char *g_regressions;
static char g_tmp[] = "/tmp/braid-hostile-XXXXXX";

static char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", g_tmp, name);
    return p;
}

/* A call that blocks on a FIFO would hang ctest; the alarm turns a hang into a failure. */
static void on_alarm(int sig) {
    (void)sig;
    static const char m[] = "test_hostile: a call blocked (FIFO opened without O_NONBLOCK?)\n";
    ssize_t r = write(2, m, sizeof m - 1);
    (void)r;
    _exit(1);
}

static void assert_one_line(const br_err *err, const char *want1, const char *want2) {
    assert_non_null(strstr(err->msg, want1));
    if (want2) assert_non_null(strstr(err->msg, want2));
    assert_null(strchr(err->msg, '\n'));
}

/* SentencePiece throws on a piece that starts with NUL; the decoded pieces must not leak (LeakSanitizer
 * fails the ASan build's run otherwise) and the message must name the file. */
static void test_tok_exception_no_leak(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/leak-nul-piece.model", g_regressions);
    br_tok *t = NULL;
    br_err err = {0};
    assert_int_not_equal(br_tok_load_file(&t, path, &err), BR_OK);
    assert_null(t);
    assert_one_line(&err, path, "zero-length key");
    /* the same bytes from memory */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    memset(&err, 0, sizeof err);
    assert_int_not_equal(br_tok_load_bytes(&t, buf, n, "bytes.model", &err), BR_OK);
    assert_one_line(&err, "bytes.model", "zero-length key");
}

static void test_fifo_inputs(void **state) {
    (void)state;
    char *fifo = tmp_path("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);
    br_err err = {0};
    br_gguf g;
    assert_int_equal(br_gguf_open(&g, fifo, &err), BR_EIO);
    assert_one_line(&err, fifo, "not a regular file");
    br_model m;
    memset(&err, 0, sizeof err);
    assert_int_not_equal(br_model_load(&m, fifo, &err), BR_OK);
    assert_one_line(&err, fifo, "not a regular file");
    br_tok *t = NULL;
    memset(&err, 0, sizeof err);
    assert_int_equal(br_tok_load_file(&t, fifo, &err), BR_EIO);
    assert_one_line(&err, fifo, "not a regular file");
    br_st_file sf;
    memset(&err, 0, sizeof err);
    assert_int_not_equal(br_st_open(&sf, fifo, &err), BR_OK);
    assert_one_line(&err, fifo, "not a regular file");
    alarm(0);
}

/* /dev/zero never ends; a file too large to be a tokenizer is refused before it is read. */
static void test_unbounded_tokenizer(void **state) {
    (void)state;
    alarm(20);
    br_tok *t = NULL;
    br_err err = {0};
    assert_int_equal(br_tok_load_file(&t, "/dev/zero", &err), BR_EIO);
    assert_one_line(&err, "/dev/zero", "not a regular file");
    char *big = tmp_path("big.model");
    int fd = open(big, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)300 << 20), 0); /* sparse: no disk used */
    close(fd);
    memset(&err, 0, sizeof err);
    assert_int_equal(br_tok_load_file(&t, big, &err), BR_EFORMAT);
    assert_one_line(&err, big, "too large");
    unlink(big);
    alarm(0);
}

static br_status convert_to(const char *hf, const char *out, br_err *err) {
    br_convert_params p = {.hf_dir = hf, .out_path = out, .type = BR_DT_F32};
    memset(err, 0, sizeof *err);
    return br_convert_hf(&p, NULL, err);
}

static bool exists(const char *p) {
    struct stat sb;
    return lstat(p, &sb) == 0;
}

/* convert writes OUT.part and renames it over OUT: whatever OUT is would be replaced. Only nothing or a
 * regular file may be; anything else is refused before any work, so no OUT.part appears. */
static void test_convert_output_not_regular(void **state) {
    const char *hf = *state;
    br_err err;
    char *target = tmp_path("target"), *link = tmp_path("link.gguf");
    FILE *f = fopen(target, "w");
    assert_non_null(f);
    fputs("keep me", f);
    fclose(f);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(convert_to(hf, link, &err), BR_EINVAL);
    assert_one_line(&err, link, "symbolic link");
    char buf[16] = {0};
    f = fopen(target, "r");
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "keep me");
    char part[600];
    snprintf(part, sizeof part, "%s.part", link);
    assert_false(exists(part));

    char *dir = tmp_path("dir.gguf");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(convert_to(hf, dir, &err), BR_EINVAL);
    assert_one_line(&err, dir, "directory");

    char *fifo = tmp_path("fifo.gguf");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);
    assert_int_equal(convert_to(hf, fifo, &err), BR_EINVAL);
    alarm(0);
    assert_one_line(&err, fifo, "FIFO");

    /* a device node of our own (never the real /dev/null): root only */
    char *dev = tmp_path("null.gguf");
    if (mknod(dev, S_IFCHR | 0600, makedev(1, 3)) == 0) {
        assert_int_equal(convert_to(hf, dev, &err), BR_EINVAL);
        assert_one_line(&err, dev, "device");
        struct stat sb;
        assert_int_equal(lstat(dev, &sb), 0);
        assert_true(S_ISCHR(sb.st_mode));
        unlink(dev);
    }

    /* OUT.part as a symlink would be written through */
    char *out = tmp_path("ok.gguf"), *out_part = tmp_path("ok.gguf.part");
    assert_int_equal(symlink(target, out_part), 0);
    assert_int_equal(convert_to(hf, out, &err), BR_EINVAL);
    assert_one_line(&err, out_part, "symbolic link");
    unlink(out_part);

    /* and a regular file is still replaced */
    f = fopen(out, "w");
    fclose(f);
    assert_int_equal(convert_to(hf, out, &err), BR_OK);
    br_gguf g;
    assert_int_equal(br_gguf_open(&g, out, &err), BR_OK);
    br_gguf_free(&g);
}

static int rm_tmp(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_hostile TOK_REGRESSIONS_DIR HF_TINY_DIR\n");
        return 2;
    }
    g_regressions = argv[1];
    if (!mkdtemp(g_tmp)) return 1;
    signal(SIGALRM, on_alarm);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tok_exception_no_leak),
        cmocka_unit_test(test_fifo_inputs),
        cmocka_unit_test(test_unbounded_tokenizer),
        cmocka_unit_test_prestate(test_convert_output_not_regular, argv[2]),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    return rc | rm_tmp();
}
