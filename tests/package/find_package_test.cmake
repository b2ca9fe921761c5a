# find_package_test.cmake: installs lowbit to a scratch prefix, then configures, builds and runs
# a consumer project that finds it with find_package(lowbit CONFIG REQUIRED).
file(REMOVE_RECURSE ${BINARY_DIR})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR}/lowbit -DLOWBIT_BUILD_TESTS=OFF
    -DLOWBIT_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX=${BINARY_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BINARY_DIR}/lowbit)
run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${BINARY_DIR}/consumer
    -DCMAKE_PREFIX_PATH=${BINARY_DIR}/prefix -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
run(${CMAKE_COMMAND} --build ${BINARY_DIR}/consumer)
run(${BINARY_DIR}/consumer/consumer)
