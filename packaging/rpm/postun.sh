# %postun: $1 = 0 after removal, 1 after an upgrade (restart on the new binaries).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart pied.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ]; then
    # cargo-generate-rpm 0.21 cannot list directories in the package (its `dir = true`
    # assets fail), so rpm does not remove them with the files: do it here when empty.
    rmdir /usr/share/pie/examples /usr/share/pie/systemd /usr/share/pie /usr/libexec/pie \
        /usr/share/doc/pied /etc/pie 2>/dev/null || :
fi
