# Embeds src/eval/default_haystack.txt into kvp_eval as a byte array (default_haystack.inc),
# so the binary needs no file at run time. Re-generated when the text changes.
set(kvp_haystack_src ${CMAKE_SOURCE_DIR}/src/eval/default_haystack.txt)
set(kvp_haystack_dir ${CMAKE_BINARY_DIR}/generated/eval)
file(READ ${kvp_haystack_src} kvp_haystack_hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," kvp_haystack_bytes "${kvp_haystack_hex}")
file(CONFIGURE OUTPUT ${kvp_haystack_dir}/default_haystack.inc CONTENT "${kvp_haystack_bytes}\n" @ONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${kvp_haystack_src})
target_include_directories(kvp_eval PRIVATE ${kvp_haystack_dir})
