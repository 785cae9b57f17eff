# %postun: $1 = 0 after removal, 1 after an upgrade (restart on the new binaries).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart pied.service >/dev/null 2>&1 || :
    fi
fi
