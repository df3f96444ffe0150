#!/bin/sh
# qlunctl against a management socket over real LUNs (ctl_serve): every
# subcommand, human output and --json (parsed back), exit statuses
# (0 done, 1 error reply, 2 usage), events.
# usage: test-qlunctl.sh QLUNCTL CTL_SERVE
set -u
qlunctl=$1 serve=$2
dir=$(mktemp -d /tmp/qlun-test-qlunctl-XXXXXX)
pass=0 fail=0
serve_pid= events_pid=
cleanup() {
    [ -n "$events_pid" ] && kill "$events_pid" 2>/dev/null
    exec 3>&- 2>/dev/null
    [ -n "$serve_pid" ] && wait "$serve_pid"
    rm -rf "$dir"
}
trap cleanup EXIT
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect STATUS CMD...: run qlunctl, output in $dir/out and $dir/err
expect() {
    want=$1; shift
    "$qlunctl" "$@" >"$dir/out" 2>"$dir/err"; got=$?
    if [ "$got" = "$want" ]; then ok; else
        bad "qlunctl $* exited $got, not $want"; cat "$dir/out" "$dir/err"; fi
}
has()    { if grep -qF -- "$2" "$dir/$1"; then ok; else bad "$1 lacks '$2'"; cat "$dir/$1"; fi; }
py()     { if python3 -c "import json,sys; r=json.load(open('$dir/out')); $1" 2>"$dir/pyerr"
           then ok; else bad "--json check: $1"; cat "$dir/out" "$dir/pyerr"; fi; }

sock=$dir/ctl.sock raw=$dir/a.img qcow=$dir/b.qcow2
truncate -s 8M "$raw"
qemu-img create -q -f qcow2 "$qcow" 16M || { echo "qemu-img failed"; exit 1; }
mkfifo "$dir/in"
"$serve" "$sock" rawlun "qlun/$raw;format=raw;serial=rawser;stats=off" 16384 \
         qlun1 "qlun/$qcow;stats=off" 32768 <"$dir/in" >"$dir/serve.out" &
serve_pid=$!
exec 3>"$dir/in"
for _ in $(seq 50); do grep -q ready "$dir/serve.out" && break; sleep 0.1; done
grep -q ready "$dir/serve.out" || { echo "ctl_serve did not start"; exit 1; }

# list
expect 0 --socket "$sock" list
has out NAME; has out rawlun; has out rawser; has out "$raw"; has out "$qcow"
has out "8.0 MiB"; has out "16.0 MiB"; has out qcow2
expect 0 --socket "$sock" --json list
py "assert len(r) == 2 and {l['name'] for l in r} == {'rawlun', 'qlun1'}"
py "assert [l['size'] for l in r if l['name'] == 'rawlun'] == [8 << 20]"
# info, by name and by serial, QLUN_CTL_SOCKET instead of --socket
export QLUN_CTL_SOCKET=$sock
expect 0 info rawlun
has out "LUN rawlun (serial rawser)"; has out "graph:"; has out "raw $raw"
has out "8.0 MiB (8388608 bytes), 512-byte blocks, read-write"
expect 0 info --json rawser
py "assert r[0]['graph']['driver'] == 'raw' and r[0]['graph']['filename'] == '$raw'"
expect 0 info qlun1
has out "qcow2 $qcow (virtual size 16.0 MiB"
# stats: ctl_serve wrote 3 and read 2 blocks on each LUN
expect 0 stats qlun1
has out "bytes_written    1536"; has out "bytes_read       1024"; has out "WRITE (10)"
expect 0 stats rawlun
has out "soft_threshold   0 (none)"; has out "allocated"
expect 0 --json stats rawlun
py "s = r[0]['stats']; assert s['bytes_written'] == 1536 and s['commands']['READ (10)'] == 2"
# resize, snapshots: the operations, and refusals printed
expect 0 resize rawlun 16M
expect 0 --json info rawlun;     py "assert r[0]['size'] == 16 << 20"
expect 1 resize rawlun 1M;       has err "qlunctl: shrinking the LUN"
expect 2 resize rawlun 16Q;      has err "'16Q' is not a size"
expect 2 resize rawlun;          has err "usage: qlunctl resize LUN SIZE"
expect 2 list --force;           has err "takes no --force"
expect 1 snapshot qlun1 --overlay "$dir/ov.qcow2" --cluster-size 1000
has err "qlunctl: snapshot-create: 'cluster-size' must be a power of two"
expect 0 snapshot qlun1 --overlay "$dir/ov.qcow2" --cluster-size 64K
has out "writes now go to $dir/ov.qcow2 (the LUN's commands were held"
expect 0 --json info qlun1
py "g = r[0]['graph']; assert g['filename'] == '$dir/ov.qcow2' and g['children']['backing']['filename'] == '$qcow'"
expect 0 info qlun1;             has out "backing: qcow2 $qcow"
expect 1 snapshot qlun1 --overlay "$dir/ov.qcow2"; has err "File exists"
expect 1 snapshot qlun1 --overlay /tmp/qlunctl-escape.qcow2; has err "outside the allowed backing root"
expect 2 snapshot qlun1;         has err "needs --overlay"
expect 0 snapshot-internal qlun1 create s1
expect 0 snapshot-internal qlun1 list; has out "s1"
expect 0 snapshot-internal qlun1 delete s1
expect 1 snapshot-internal qlun1 delete s1; has err "no snapshot has that id or name"
expect 2 snapshot-internal qlun1 frob s1
expect 2 snapshot-internal qlun1 create
# throttle: the limits and group show in info's graph; none = off
expect 0 throttle rawlun --iops-read 300 --bps-write 2M --group g1
expect 0 --json info rawlun
py "t = r[0]['graph']['throttle']; assert t['iops-read'] == 300 and t['bps-write'] == 2 << 20 and t['group'] == 'g1' and t['iops-total'] == 0, t"
py "assert 'iops_rd=300' in r[0]['cfgstring'] and 'throttle_group=g1' in r[0]['cfgstring']"
expect 0 throttle qlun1 --group g1
expect 0 --json info qlun1
py "assert r[0]['graph']['throttle']['iops-read'] == 300"
expect 0 throttle rawlun --iops 1000 --iops-max 2000 --burst-seconds 3
expect 0 --json info rawlun
py "t = r[0]['graph']['throttle']; assert t['iops-total'] == 1000 and t['iops-total-max'] == 2000 and t['burst-seconds'] == 3 and t['group'] is None, t"
expect 1 throttle rawlun --iops 10 --iops-read 5; has err "cannot be combined"
expect 1 throttle rawlun --group 'a b'; has err "bad throttle group name"
expect 2 throttle rawlun --iops 5k; has err "'5k' is not a whole number"
expect 2 throttle rawlun --bps 5X; has err "is not a rate in bytes/s"
expect 2 resize rawlun 16M --iops 5; has err "takes no throttle options"
expect 0 throttle rawlun
expect 0 throttle qlun1
expect 0 --json info rawlun
py "assert 'throttle' not in r[0]['graph'] and r[0]['graph']['driver'] != 'throttle'"
# errors
expect 1 info nosuch;            has err "qlunctl: no LUN 'nosuch'"
expect 1 resize nosuch 1G;       has err "qlunctl: no LUN 'nosuch'"
expect 2 frobnicate;             has err "unknown command 'frobnicate'"
expect 2;                        has err "no command given"
expect 2 --bogus list
expect 1 --socket "$dir/none.sock" list; has err "qlunctl: cannot connect to $dir/none.sock"
expect 0 --help
for c in list info stats resize snapshot snapshot-internal throttle events; do has out "  $c "; done

# events: a corrupt image shows up, human-readable and as JSON
"$qlunctl" events >"$dir/ev.out" 2>&1 & events_pid=$!
"$qlunctl" --json events >"$dir/evj.out" 2>&1 & events2_pid=$!
sleep 0.5
echo "corrupt qlun1" >&3
for _ in $(seq 50); do grep -q LUN_CORRUPT "$dir/evj.out" && grep -q LUN_CORRUPT "$dir/ev.out" && break; sleep 0.1; done
kill "$events_pid" "$events2_pid"; wait "$events_pid" "$events2_pid" 2>/dev/null; events_pid=
has ev.out "LUN_CORRUPT lun="; has ev.out "name=qlun1"
cp "$dir/evj.out" "$dir/out"
py "assert r['event'] == 'LUN_CORRUPT' and r['data']['name'] == 'qlun1' and r['timestamp']['seconds'] > 0"
expect 0 --json info qlun1
py "assert r[0]['graph']['state']['corrupt'] is True"

# snapshot-internal list's table with fixed dates (a stand-in server
# answers it), with an event arriving before the reply
cat >"$dir/fake.py" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); f = c.makefile("rw")
f.write('{"qlun": {"version": "0"}}\n'); f.flush()
req = json.loads(f.readline())
assert req == {"execute": "snapshot-internal-list", "arguments": {"lun": "d1"}}, req
f.write('{"event": "X", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}\n')
snaps = [{"id": "1", "name": "before-upgrade", "date-sec": 1700000000, "date-nsec": 0,
          "vm-clock-nsec": 3723500000000, "vm-state-size": 0, "disk-size": 0},
         {"id": "2", "name": "second", "date-sec": 1700003600, "date-nsec": 0,
          "vm-clock-nsec": 0, "vm-state-size": 1048576, "disk-size": 0}]
f.write(json.dumps({"return": snaps}) + "\n"); f.flush()
PY
python3 "$dir/fake.py" "$dir/fake.sock" >"$dir/fake.out" &
fake_pid=$!
for _ in $(seq 50); do grep -q ready "$dir/fake.out" && break; sleep 0.1; done
TZ=UTC expect 0 --socket "$dir/fake.sock" snapshot-internal d1 list
wait "$fake_pid" || bad "the stand-in server saw a wrong request"
has out "Snapshot list:"; has out "ID   TAG"
has out "1    before-upgrade"; has out "2023-11-14 22:13:20"; has out "0001:02:03.500"
has out "1.0 MiB"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
