# The braid program end to end: good runs, and one-line errors with the right exit code for bad input.
add_test(NAME cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli_test.sh $<TARGET_FILE:braid>)
