/* `braid quantize IN.gguf OUT.gguf TYPE`: writes a model with its weight matrices quantized to Q8_0, Q4_0,
 * Q4_K_M, Q5_K_M or Q6_K (llama.cpp's mixes for the _M types), so test models of each type are made here. */
#include <stdio.h>
#include <unistd.h>

#include "cli.h"
#include "quantize.h"

static const cli_use uses[] = {{CLI_THREADS, NULL, NULL}, {CLI_END, NULL, NULL}};
static const cli_cmd quantize_cmd = {
    "quantize", "IN.gguf OUT.gguf TYPE",
    "TYPE is Q8_0, Q4_0, Q4_K_M, Q5_K_M or Q6_K. Matrices are quantized (output and some attn_v /\n"
    "ffn_down layers get Q6_K in the _M mixes, as llama.cpp does); vectors, norms, the Mamba conv, A, D\n"
    "and the MoE router are copied. Rows that are not whole blocks fall back to Q5_0 / Q5_1 / Q8_0,\n"
    "or keep their type when they are not whole 32-blocks either.",
    uses, 3,
};

int cmd_quantize(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&quantize_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    if (a.n_pos != 3) return cli_usage_error("quantize", "want IN.gguf OUT.gguf TYPE");
    br_qftype t;
    if (!br_qftype_parse(a.pos[2], &t))
        return cli_usage_error("quantize", "unknown type '%s' (Q8_0, Q4_0, Q4_K_M, Q5_K_M or Q6_K)", a.pos[2]);
    long nt = a.given[CLI_THREADS] ? cli_threads("quantize", &a) : sysconf(_SC_NPROCESSORS_ONLN);
    if (nt < 1) nt = 1;
    br_quant_report rep;
    br_err err = {0};
    double t0 = cli_now();
    if (br_quantize_file(a.pos[0], a.pos[1], t, (int)nt, &rep, &err)) return cli_fail("quantize", "%s", err.msg);
    fprintf(stderr,
            "braid quantize: wrote %s (%s): %llu tensors quantized (%llu with a fallback type), %llu kept; "
            "%.1f MiB -> %.1f MiB in %.1f s\n",
            a.pos[1], br_qftype_name(t), (unsigned long long)rep.n_quantized, (unsigned long long)rep.n_fallback,
            (unsigned long long)rep.n_kept, (double)rep.bytes_in / 1048576, (double)rep.bytes_out / 1048576,
            cli_now() - t0);
    return 0;
}
