# Install step (cmake --install, make install): what carries the installed paths, written
# now that the prefix is known (--prefix may differ from the configured one). The gateway's
# config points web_root at the installed portal; the systemd units (deploy/systemd/*.in)
# get @BINDIR@ and @SYSCONFDIR@. The other configs are installed here too, beside
# gateway.conf. file(INSTALL) adds DESTDIR and records the files.
set(prefix "${CMAKE_INSTALL_PREFIX}")
# The configs: /etc for a /usr install (as GNUInstallDirs has it), PREFIX/etc otherwise.
if(prefix STREQUAL "/usr")
    set(sysconfdir "/etc")
else()
    set(sysconfdir "${prefix}/etc")
endif()
set(out "${BERTH_BUILD_DIR}/install-generated")
file(REMOVE_RECURSE "${out}")
file(MAKE_DIRECTORY "${out}/etc" "${out}/units")

file(READ "${BERTH_SRC_DIR}/deploy/configs/gateway.conf" conf)
string(REGEX REPLACE "\n#[ ]*web_root = [^\n]*" "\nweb_root = ${prefix}/share/berth/web" conf "${conf}")
if(NOT conf MATCHES "\nweb_root = ${prefix}/share/berth/web")
    message(FATAL_ERROR "deploy/configs/gateway.conf has no web_root line to set")
endif()
file(WRITE "${out}/etc/gateway.conf" "${conf}")
file(GLOB configs "${BERTH_SRC_DIR}/deploy/configs/*.conf")
list(FILTER configs EXCLUDE REGEX "/gateway\\.conf$")
file(INSTALL DESTINATION "${sysconfdir}/berth" TYPE FILE FILES ${configs} "${out}/etc/gateway.conf")

file(GLOB units "${BERTH_SRC_DIR}/deploy/systemd/*.service.in")
set(generated "")
foreach(unit ${units})
    get_filename_component(name "${unit}" NAME)
    string(REGEX REPLACE "\\.in$" "" name "${name}")
    file(READ "${unit}" text)
    string(REPLACE "@BINDIR@" "${prefix}/bin" text "${text}")
    string(REPLACE "@SYSCONFDIR@" "${sysconfdir}" text "${text}")
    file(WRITE "${out}/units/${name}" "${text}")
    list(APPEND generated "${out}/units/${name}")
endforeach()
file(INSTALL DESTINATION "${prefix}/lib/systemd/system" TYPE FILE FILES ${generated})
file(INSTALL DESTINATION "${prefix}/lib/sysusers.d" TYPE FILE
     FILES "${BERTH_SRC_DIR}/deploy/systemd/berth.sysusers" RENAME berth.conf)
