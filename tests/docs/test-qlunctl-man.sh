#!/bin/sh
# qlunctl(8) (tools/qlunctl.8) against qlunctl --help.  Checks:
#  - groff renders it with no warning (-ww);
#  - the COMMANDS section documents exactly the commands --help lists;
#  - every option --help names (--socket, --json, --force, ...) is in it.
# usage: test-qlunctl-man.sh QLUNCTL MANPAGE
set -u
qlunctl=$1 man=$2
fail=0 passed=0
warnings=$(groff -man -ww -z -K utf8 "$man" 2>&1)
if [ -n "$warnings" ]; then
    echo "FAIL: groff warnings rendering $man:"; echo "$warnings"; fail=$((fail + 1))
else
    echo "PASS: $man renders without groff warnings"; passed=$((passed + 1))
fi
help=$("$qlunctl" --help) || { echo "FAIL: qlunctl --help failed"; exit 1; }
# "  cmd ..." lines between "Commands:" and the next blank line.
help_cmds=$(printf '%s\n' "$help" | awk '/^Commands:/{on=1; next} /^$/{on=0} on && /^  [a-z]/{print $1}' | sort -u)
[ -n "$help_cmds" ] || { echo "FAIL: no commands in qlunctl --help"; exit 1; }
# The first word of each tag (".TP" then the tag line) in COMMANDS.
man_cmds=$(awk '/^\.SH /{sec=$0} sec==".SH COMMANDS" && prev==".TP" {print} {prev=$0}' "$man" |
           sed 's/\\f[BRI]//g; s/\\-/-/g' | awk '{print $1}' | sort -u)
missing=$(printf '%s\n' "$help_cmds" | grep -vxF "$man_cmds")
extra=$(printf '%s\n' "$man_cmds" | grep -vxF "$help_cmds")
if [ -n "$missing$extra" ]; then
    [ -n "$missing" ] && echo "FAIL: commands of qlunctl --help the manual lacks: $missing"
    [ -n "$extra" ] && echo "FAIL: commands the manual documents but qlunctl lacks: $extra"
    fail=$((fail + 1))
else
    echo "PASS: the manual documents exactly the $(printf '%s\n' "$help_cmds" | wc -l) commands of qlunctl --help"
    passed=$((passed + 1))
fi
text=$(sed 's/\\f[BRI]//g; s/\\-/-/g' "$man")
for o in $(printf '%s\n' "$help" | grep -o -- '--[a-z-]*' | sort -u); do
    if printf '%s\n' "$text" | grep -qF -- "$o"; then passed=$((passed + 1))
    else echo "FAIL: option $o of qlunctl --help is not in the manual"; fail=$((fail + 1)); fi
done
echo "$passed passed, $fail failed"
[ $fail = 0 ]
