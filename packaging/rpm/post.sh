# %post: $1 = 1 on install, 2 on upgrade.
systemd-sysusers pied.conf >/dev/null 2>&1 || :
systemd-tmpfiles --create pied.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # Enabling pied.service enables pied.socket (Also=): pied starts on the first
    # connection to /run/pied.sock.
    systemctl enable pied.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start pied.socket >/dev/null 2>&1 || :
    fi
fi
