# Tokenizer: ids against SentencePiece's own (tests/fixtures/tok, made by scripts/make_tok_fixtures.sh),
# GGUF vocabularies, the streaming detokenizer, and bad or hostile tokenizer files.
if(NOT TARGET PkgConfig::CMOCKA)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()

add_executable(test_tok test_tok.c)
target_link_libraries(test_tok PRIVATE br_tok br_runtime br_kernels PkgConfig::CMOCKA)
add_test(NAME tokenizer COMMAND test_tok ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tok)
