# braid serve over real sockets on 127.0.0.1 (tests/serve_test.py, Python's standard library): greedy parity with
# braid generate, the prompt cache, disconnects, hostile requests, 32 concurrent clients, the npm openai client, and
# the chat page in headless Chromium (playwright-core from npm; each npm part is skipped with a message offline).
find_program(BR_PYTHON3 python3)
set(BUNDLED_SERVE ${PROJECT_SOURCE_DIR}/models/tiny-jamba.gguf)
if(BR_PYTHON3 AND EXISTS ${BUNDLED_SERVE})
  set(serve_args)
  if(BRAID_SANITIZE)
    set(serve_args --quick) # a smaller load and a 1.8k-token conversation: the sanitizers make decoding slow
  endif()
  add_test(NAME serve COMMAND ${BR_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/serve_test.py --braid $<TARGET_FILE:braid>
           --model ${BUNDLED_SERVE} --work ${CMAKE_BINARY_DIR}/serve_test ${serve_args})
  set_tests_properties(serve PROPERTIES TIMEOUT 1500 RUN_SERIAL TRUE)
endif()
# docs/deploy/nginx.conf with two servers behind Debian's nginx (skipped without nginx).
if(EXISTS ${BUNDLED_SERVE})
  add_test(NAME deploy COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/deploy_test.sh $<TARGET_FILE:braid> ${BUNDLED_SERVE}
           ${CMAKE_BINARY_DIR}/deploy_test)
  set_tests_properties(deploy PROPERTIES TIMEOUT 600)
endif()
