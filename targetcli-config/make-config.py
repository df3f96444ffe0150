#!/usr/bin/python3
"""Generate a LIO configuration exporting qlun LUNs (user:qlun backstores)
over iSCSI, either as an rtslib-fb saveconfig.json (for
`targetcli restoreconfig FILE`) or as a targetcli command script.

See targetcli-config/README.md for usage.  The JSON schema follows
rtslib_fb (root.py RTSRoot.restore, tcm.py UserBackedStorageObject,
target.py Target/TPG/LUN/NetworkPortal/NodeACL/MappedLUN .setup()).
"""

import argparse
import json
import os
import re
import subprocess
import sys

LIBISCSI_IQNS = [
    "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
    "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
]
DEFAULT_TARGET = "iqn.2024-01.io.qlun:target"
DEFAULT_INITIATOR = "iqn.2024-01.io.qlun:initiator"
SUBTYPE = "qlun"
CFGSTRING_MAX = 255          # tcmu cfgstring limit, subtype included
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
         "P": 1 << 50}
IQN_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[^ ]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]+)$")


def die(msg):
    sys.stderr.write("make-config: error: %s\n" % msg)
    sys.exit(2)


def parse_size(text):
    m = re.match(r"^\s*(\d+)\s*([KMGTP]?)(i?B)?\s*$", str(text), re.I)
    if not m:
        die("bad size %r (use bytes or a K/M/G/T suffix, binary units)" % text)
    return int(m.group(1)) * UNITS[m.group(2).upper()]


def image_size(path, fmt):
    if not os.path.exists(path):
        return None
    if fmt == "raw":
        st = os.stat(path)
        if os.path.isfile(path):
            return st.st_size
        with open(path, "rb") as f:          # block device
            return f.seek(0, os.SEEK_END)
    try:
        out = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, path],
                             check=True, capture_output=True, text=True).stdout
        return int(json.loads(out)["virtual-size"])
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError) as e:
        die("cannot read virtual size of %s (%s); pass --size" % (path, e))


def parse_lun_spec(spec):
    """image=PATH,size=S,format=F,name=N,opts=a=b;c=d,wwn=W,readonly=1"""
    lun = {}
    for part in spec.split(","):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep:
            die("bad --lun item %r (want key=value)" % part)
        k = k.strip()
        if k not in ("image", "size", "format", "name", "opts", "wwn", "readonly"):
            die("unknown --lun key %r" % k)
        lun[k] = v
    if "image" not in lun:
        die("--lun needs image=PATH")
    return lun


def build_cfgstring(image, fmt, opts, subtype=SUBTYPE):
    for bad in (",", ":", " ", "\t", "\n"):
        if bad in image:
            die("image path %r contains %r: configfs/rtslib split on it" % (image, bad))
    if not image.startswith("/"):
        die("image path must be absolute: %r" % image)
    if subtype == SUBTYPE:
        cfg = "%s/%s;format=%s" % (subtype, image, fmt)
    else:                       # other tcmu-runner handlers, e.g. qcow (rig bring-up)
        cfg = "%s/%s" % (subtype, image)
    for o in opts:
        if not o:
            continue
        if any(c in o for c in ",: \t"):
            die("cfgstring option %r contains ',' ':' or whitespace" % o)
        cfg += ";" + o
    if len(cfg) > CFGSTRING_MAX:
        die("cfgstring too long (%d > %d bytes): %s" % (len(cfg), CFGSTRING_MAX, cfg))
    return cfg


def main():
    ap = argparse.ArgumentParser(
        prog="make-config.sh",
        description="Generate a targetcli/rtslib configuration exporting qlun "
                    "(user:qlun) LUNs over iSCSI with explicit CHAP node ACLs.")
    ap.add_argument("--image", help="backing image path of LUN 0 (absolute)")
    ap.add_argument("--size", help="LUN size (bytes or K/M/G/T); default: the image's (virtual) size")
    ap.add_argument("--format", default="raw", choices=("raw", "qcow2"),
                    help="image format, goes into the cfgstring (default raw)")
    ap.add_argument("--name", default="qlun0", help="backstore name of LUN 0 (default qlun0)")
    ap.add_argument("--opt", action="append", default=[], metavar="K=V",
                    help="extra ';'-separated cfgstring option for LUN 0 (repeatable)")
    ap.add_argument("--wwn", help="unit serial of LUN 0: LIO's wwn, and qlun's serial= (default: LIO generates one; qlun derives its serial from the image path)")
    ap.add_argument("--lun", action="append", default=[], metavar="SPEC",
                    help="additional LUN: image=PATH[,size=S][,format=F][,name=N]"
                         "[,opts=K=V;K=V][,wwn=W] (repeatable)")
    ap.add_argument("--target-iqn", default=DEFAULT_TARGET, help="target IQN (default %(default)s)")
    ap.add_argument("--initiator-iqn", action="append", default=[], metavar="IQN",
                    help="initiator allowed by an explicit node ACL (repeatable; default %s)"
                         % DEFAULT_INITIATOR)
    ap.add_argument("--libiscsi-acls", action="store_true",
                    help="also add ACLs for libiscsi's iscsi-test-cu initiator names")
    ap.add_argument("--chap-user", default="qlun", help="CHAP userid on every ACL (default qlun)")
    ap.add_argument("--chap-password", default="qlun-chap-secret",
                    help="CHAP password on every ACL (default qlun-chap-secret)")
    ap.add_argument("--no-chap", action="store_true",
                    help="authentication=0 (ACLs still explicit, no CHAP)")
    ap.add_argument("--portal-ip", default="127.0.0.1", help="portal address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=3260, help="portal TCP port (default 3260)")
    ap.add_argument("--hw-max-sectors", type=int, default=1024,
                    help="hw_max_sectors of each backstore (default 1024)")
    ap.add_argument("--block-size", type=int, default=512, choices=(512, 1024, 2048, 4096),
                    help="hw_block_size (default 512)")
    ap.add_argument("--max-data-area-mb", type=int, default=128,
                    help="TCMU data area per device in MiB (default 128; 0 = kernel default)")
    ap.add_argument("--cmdsn-depth", type=int, default=128,
                    help="commands an initiator may have in flight (the TPG's default_cmdsn_depth, "
                         "which each ACL inherits; default 128, LIO's own default is 64)")
    ap.add_argument("--tpg-tag", type=int, default=1)
    ap.add_argument("--subtype", default=SUBTYPE,
                    help="tcmu-runner handler subtype (default qlun; e.g. qcow to compare "
                         "with tcmu-runner's own qcow handler: cfgstring qcow/<path>, no options)")
    ap.add_argument("--output", default="json", choices=("json", "targetcli"),
                    help="json: saveconfig.json for 'targetcli restoreconfig FILE' (default); "
                         "targetcli: a command script for 'targetcli < FILE' "
                         "(user:qlun needs tcmu-runner on D-Bus)")
    ap.add_argument("-o", "--out", help="write here instead of stdout")
    a = ap.parse_args()

    luns = []
    if a.image:
        luns.append({"image": a.image, "size": a.size, "format": a.format, "name": a.name,
                     "opts": a.opt, "wwn": a.wwn})
    for i, spec in enumerate(a.lun):
        d = parse_lun_spec(spec)
        luns.append({"image": d["image"], "size": d.get("size"),
                     "format": d.get("format", a.format),
                     "name": d.get("name", "qlun%d" % (len(luns))),
                     "opts": [o for o in d.get("opts", "").split(";") if o],
                     "wwn": d.get("wwn"),
                     "readonly": d.get("readonly", "0") in ("1", "true", "yes")})
    if not 1 <= a.cmdsn_depth <= 512:
        die("--cmdsn-depth must be 1..512 (LIO's range), not %d" % a.cmdsn_depth)
    if not luns:
        die("no LUN: pass --image PATH (and/or --lun image=PATH,...)")
    names = [l["name"] for l in luns]
    if len(set(names)) != len(names):
        die("backstore names must be unique: %s" % names)
    if not IQN_RE.match(a.target_iqn):
        die("bad target IQN %r" % a.target_iqn)
    initiators = a.initiator_iqn or [DEFAULT_INITIATOR]
    if a.libiscsi_acls:
        initiators += [i for i in LIBISCSI_IQNS if i not in initiators]
    for i in initiators:
        if not IQN_RE.match(i):
            die("bad initiator IQN %r" % i)
    if not a.no_chap:
        if not a.chap_user or not a.chap_password:
            die("CHAP user and password must be non-empty (or pass --no-chap)")
        if len(a.chap_user) > 255 or len(a.chap_password) > 255:
            die("CHAP user/password longer than 255")

    so_list, tpg_luns = [], []
    control = []
    if a.max_data_area_mb:
        control.append("max_data_area_mb=%d" % a.max_data_area_mb)
    control.append("hw_block_size=%d" % a.block_size)
    for idx, l in enumerate(luns):
        fmt = l["format"]
        if fmt not in ("raw", "qcow2"):
            die("format must be raw or qcow2, not %r" % fmt)
        opts = list(l["opts"])
        # qlun cannot read LIO's unit serial when it opens the image (rtslib
        # writes it after enabling the backstore), so the identity the
        # initiator sees is passed in the cfgstring.
        if l.get("wwn") and not any(o.startswith("serial=") for o in opts):
            serial = re.sub(r"[^0-9A-Za-z._-]", "", l["wwn"])[:40]
            if serial:
                opts.append("serial=" + serial)
        cfg = build_cfgstring(l["image"], fmt, opts, a.subtype)
        size = parse_size(l["size"]) if l["size"] else image_size(l["image"], fmt)
        if size is None:
            die("%s does not exist (yet): pass its LUN size" % l["image"])
        if size <= 0 or size % a.block_size:
            die("LUN size %d is not a positive multiple of the block size %d" % (size, a.block_size))
        so = {"plugin": "user", "name": l["name"], "config": cfg, "size": size,
              "hw_max_sectors": a.hw_max_sectors, "control": ",".join(control)}
        if l.get("wwn"):
            so["wwn"] = l["wwn"]
        so_list.append(so)
        tpg_luns.append({"index": idx, "storage_object": "/backstores/user/%s" % l["name"]})

    acls = []
    for iqn in initiators:
        acl = {"node_wwn": iqn,
               "mapped_luns": [{"index": idx, "tpg_lun": idx,
                                "write_protect": bool(luns[idx].get("readonly"))}
                               for idx in range(len(luns))]}
        if not a.no_chap:
            acl["chap_userid"] = a.chap_user
            acl["chap_password"] = a.chap_password
        acls.append(acl)

    tpg = {
        "tag": a.tpg_tag,
        "enable": True,
        "attributes": {
            "authentication": 0 if a.no_chap else 1,
            "generate_node_acls": 0,
            "cache_dynamic_acls": 0,
            "demo_mode_write_protect": 1,
            "default_cmdsn_depth": a.cmdsn_depth,
        },
        "parameters": {"AuthMethod": "None" if a.no_chap else "CHAP"},
        "luns": tpg_luns,
        "portals": [{"ip_address": a.portal_ip, "port": a.port, "iser": False, "offload": False}],
        "node_acls": acls,
    }
    cfg = {"fabric_modules": [], "storage_objects": so_list,
           "targets": [{"fabric": "iscsi", "wwn": a.target_iqn, "tpgs": [tpg]}]}

    if a.output == "json":
        text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    else:
        out = ["# targetcli script generated by targetcli-config/make-config.sh",
               "# run: targetcli < THIS_FILE   (needs tcmu-runner on the D-Bus system bus)",
               "set global auto_cd_after_create=false"]
        for so in so_list:
            sub, _, rest = so["config"].partition("/")
            out.append("/backstores/user:%s create name=%s size=%db cfgstring=%s hw_max_sectors=%d "
                       "control=%s" % (sub, so["name"], so["size"], rest, so["hw_max_sectors"],
                                       so["control"]) + (" wwn=%s" % so["wwn"] if "wwn" in so else ""))
        t = "/iscsi/%s" % a.target_iqn
        tp = "%s/tpg%d" % (t, a.tpg_tag)
        out.append("/iscsi create %s" % a.target_iqn)
        out.append("%s/portals delete 0.0.0.0 3260" % tp)
        out.append("%s/portals create %s %d" % (tp, a.portal_ip, a.port))
        for so, l in zip(so_list, tpg_luns):
            out.append("%s/luns create /backstores/user:%s/%s lun=%d add_mapped_luns=false"
                       % (tp, so["config"].split("/")[0], so["name"], l["index"]))
        out.append("%s set attribute authentication=%d generate_node_acls=0 cache_dynamic_acls=0 "
                   "demo_mode_write_protect=1 default_cmdsn_depth=%d"
                   % (tp, tpg["attributes"]["authentication"], a.cmdsn_depth))
        for acl in acls:
            out.append("%s/acls create %s add_mapped_luns=false" % (tp, acl["node_wwn"]))
            for m in acl["mapped_luns"]:
                out.append("%s/acls/%s create mapped_lun=%d tpg_lun_or_backstore=%d write_protect=%s"
                           % (tp, acl["node_wwn"], m["index"], m["tpg_lun"],
                              "true" if m["write_protect"] else "false"))
            if not a.no_chap:
                out.append("%s/acls/%s set auth userid=%s password=%s"
                           % (tp, acl["node_wwn"], acl["chap_userid"], acl["chap_password"]))
        text = "\n".join(out) + "\n"

    if a.out:
        fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
