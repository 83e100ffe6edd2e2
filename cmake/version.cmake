# Writes OUT (berth_version.h) with BERTH_VERSION: the project version, and `git describe`
# when SRC_DIR is a git checkout. Run at every build; the file is rewritten only when the
# text changes, so an unchanged version rebuilds nothing.
set(version "${VERSION}")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${SRC_DIR}/.git")
    execute_process(COMMAND ${GIT_EXECUTABLE} describe --always --dirty --tags
                    WORKING_DIRECTORY ${SRC_DIR} OUTPUT_VARIABLE described
                    RESULT_VARIABLE failed OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(NOT failed AND described)
        set(version "${VERSION} (${described})")
    endif()
endif()
set(text "#define BERTH_VERSION \"${version}\"\n")
if(EXISTS "${OUT}")
    file(READ "${OUT}" old)
endif()
if(NOT "${old}" STREQUAL "${text}")
    file(WRITE "${OUT}" "${text}")
endif()
