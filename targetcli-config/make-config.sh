#!/bin/sh
# Generate a targetcli/rtslib configuration for qlun LUNs. See README.md.
# Uses the system python (rtslib-fb's), never a pyenv/venv shim.
here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" "$here/make-config.py" "$@"
