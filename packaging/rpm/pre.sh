# %pre: the pied user and the pie-admin group exist before the files are laid down
# (the same entries as /usr/lib/sysusers.d/pied.conf, which is not installed yet).
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers --replace=/usr/lib/sysusers.d/pied.conf - <<'SYSUSERS' || :
g pie-admin - -
u pied - "pied LLM inference daemon" /var/lib/pie /usr/sbin/nologin
SYSUSERS
fi
