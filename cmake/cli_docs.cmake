# The CLI's bash completion and man page, from its command table: BERTH (the berth just
# built) writes them into OUT_DIR.
file(MAKE_DIRECTORY "${OUT_DIR}")
execute_process(COMMAND "${BERTH}" completion bash OUTPUT_FILE "${OUT_DIR}/berth.bash"
                RESULT_VARIABLE failed)
if(failed)
    message(FATAL_ERROR "berth completion bash failed: ${failed}")
endif()
execute_process(COMMAND "${BERTH}" manpage OUTPUT_FILE "${OUT_DIR}/berth.1"
                RESULT_VARIABLE failed)
if(failed)
    message(FATAL_ERROR "berth manpage failed: ${failed}")
endif()
