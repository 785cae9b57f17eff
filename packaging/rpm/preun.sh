# %preun: $1 = 0 on removal, 1 on upgrade. Only a removal stops and disables pied.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop pied.service pied.socket >/dev/null 2>&1 || :
    fi
    systemctl disable pied.service pied.socket >/dev/null 2>&1 || :
fi
