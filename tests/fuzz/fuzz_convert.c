/* Fuzz harness: the converter's readers of untrusted checkpoint files. An input starting with '{'
 * is a config.json (JSON parser, then JambaConfig's checks); anything else is a safetensors file
 * (header length, JSON header, every dtype, shape and offset). */
#include <stdint.h>

#include "convert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    br_err err = {0};
    if (size && data[0] == '{') {
        br_jamba_config c;
        if (!br_jamba_config_parse(&c, (const char *)data, size, &err)) {
            uint32_t n_attn = 0, n_moe = 0;
            for (uint32_t l = 0; l < c.n_layer; l++) {
                n_attn += br_jamba_is_attn(&c, l);
                n_moe += br_jamba_is_moe(&c, l);
            }
            (void)n_attn;
            (void)n_moe;
        }
        return 0;
    }
    br_st_file f;
    if (br_st_parse_mem(&f, "model.safetensors", data, size, &err)) return 0;
    br_st_free(&f);
    return 0;
}
