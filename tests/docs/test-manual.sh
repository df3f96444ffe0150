#!/bin/sh
# qlun(8) is generated from README.md (scripts/readme-to-man.py).  Checks:
#  - groff renders it with no warning (-ww), man(7) macros only;
#  - every cfgstring option the parser knows (handler/config.c's option
#    table) is documented, in the manual and hence in README's table, and
#    every option the manual documents is one the parser knows.
# usage: test-manual.sh REPO_DIR MANPAGE
set -u
repo=$1 man=$2
fail=0
warnings=$(groff -man -ww -z -K utf8 "$man" 2>&1)
if [ -n "$warnings" ]; then
    echo "FAIL: groff warnings rendering $man:"; echo "$warnings"; fail=1
else
    echo "PASS: $man renders without groff warnings"
fi
# { "name", opt_fn, ... } entries of the option table.
code_opts=$(sed -n 's/^ *{ "\([a-z0-9_]*\)", opt_[a-z0-9_]*,.*$/\1/p' "$repo/handler/config.c" | sort)
[ -n "$code_opts" ] || { echo "FAIL: no option table found in handler/config.c"; exit 1; }
# Tags of the OPTIONS section: ".TP" then the option line.
man_opts=$(awk '/^\.SH /{sec=$0} sec==".SH OPTIONS" && prev==".TP" {print} {prev=$0}' "$man" |
           sed 's/\\f[BRI]//g' | grep -v '^(first field)$' | sort)
missing=$(printf '%s\n' "$code_opts" | grep -vxF "$man_opts")
extra=$(printf '%s\n' "$man_opts" | grep -vxF "$code_opts")
if [ -n "$missing" ]; then echo "FAIL: options the parser knows but the manual lacks: $missing"; fail=1; fi
if [ -n "$extra" ]; then echo "FAIL: options the manual documents but the parser lacks: $extra"; fail=1; fi
[ -z "$missing$extra" ] && echo "PASS: the manual documents exactly the parser's $(printf '%s\n' "$code_opts" | wc -l) options"
[ $fail = 0 ] && echo "2 passed, 0 failed" || echo "failed"
exit $fail
