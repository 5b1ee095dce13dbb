# Tests of `braid convert` (HF Jamba checkpoints to GGUF, and its readers of config.json and safetensors headers) and of the
# perplexity arithmetic. The converter test uses the tokenizer fixture when it exists.
if(NOT TARGET PkgConfig::CMOCKA)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()

add_executable(test_convert test_convert.c)
target_link_libraries(test_convert PRIVATE br_runtime br_tok br_kernels PkgConfig::CMOCKA)
add_test(NAME convert COMMAND test_convert ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tok/test.model)

add_executable(test_perplexity test_perplexity.c)
target_link_libraries(test_perplexity PRIVATE br_runtime PkgConfig::CMOCKA m)
add_test(NAME perplexity_math COMMAND test_perplexity)
