#!/bin/sh
# Generate a targetcli/rtslib configuration for qlun LUNs. See README.md.
# Uses the system python (rtslib-fb's), never a pyenv/venv shim.
# Follows a symlink (the package links /usr/bin/qlun-make-config here).
here=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" "$here/make-config.py" "$@"
