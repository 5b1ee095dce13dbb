# Unit tests of the kernels (against double-precision loops and the CPU's F16C) and of the sampler.
# Included from tests/CMakeLists.txt; also usable on its own once br_kernels and br_runtime exist.
find_package(PkgConfig REQUIRED)
if(NOT TARGET PkgConfig::CMOCKA)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()

add_executable(test_kernels test_kernels.c)
# The reference half conversions use F16C intrinsics; the test skips them at run time on CPUs without
# F16C. Only this file gets the flag, the library decides its own ISA at run time.
set_source_files_properties(test_kernels.c PROPERTIES COMPILE_OPTIONS "-mf16c")
target_link_libraries(test_kernels PRIVATE br_kernels PkgConfig::CMOCKA m)
add_test(NAME kernels COMMAND test_kernels)

add_executable(test_sample test_sample.c)
target_link_libraries(test_sample PRIVATE br_runtime PkgConfig::CMOCKA m)
add_test(NAME sample COMMAND test_sample)

add_executable(test_quant test_quant.c)
target_link_libraries(test_quant PRIVATE br_kernels PkgConfig::CMOCKA m)
add_test(NAME quant COMMAND test_quant)
