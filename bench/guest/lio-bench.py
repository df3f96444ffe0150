#!/usr/bin/python3
"""LIO set-up for bench/guest/stack-bench.sh (runs in the rig VM, as root).

  lio-bench.py up IQN LUN_SPEC...   create an iSCSI target on 127.0.0.1:3260
                                    with one LUN per spec, in LUN index order
  lio-bench.py down IQN             delete the target and its backstores

LUN_SPEC is KIND:NAME:PATH:SIZE[:CONFIG]
  user   a TCMU backstore; CONFIG is the whole cfgstring (qlun/<path>;...
         or qcow/<path>); PATH is unused
  fileio LIO fileio on the file PATH, buffered (write_back), with thin
         provisioning advertised (emulate_tpu=1, emulate_tpws=1)
  block  LIO iblock on the block device PATH (SIZE unused)

Written against rtslib-fb directly rather than targetcli-config/make-config:
that one makes user: backstores only, and the comparison needs fileio and
block backstores in the same target.  One python start-up per set-up matters
under TCG (targetcli costs seconds per command there).

The target runs in demo mode (generated ACLs, no CHAP): the benchmark
measures the data path; authentication is the e2e tests' business.
"""
import sys

import rtslib_fb as rts

# Same TCMU limits as targetcli-config/make-config.sh's defaults: the kernel's
# 128-sector default would split every 1 MiB request into eight.
USER_CONTROL = "max_data_area_mb=128,hw_block_size=512"
HW_MAX_SECTORS = 1024


def make_storage(kind, name, path, size, config):
    if kind == "user":
        return rts.UserBackedStorageObject(name, config=config, size=size,
                                           hw_max_sectors=HW_MAX_SECTORS,
                                           control=USER_CONTROL)
    if kind == "fileio":
        so = rts.FileIOStorageObject(name, dev=path, size=size, write_back=True)
    elif kind == "block":
        so = rts.BlockStorageObject(name, dev=path)
    else:
        raise SystemExit("lio-bench.py: unknown backstore kind %r" % kind)
    so.set_attribute("emulate_tpu", "1")
    so.set_attribute("emulate_tpws", "1")
    return so


def parse_spec(spec):
    parts = spec.split(":", 4)
    if len(parts) < 4:
        raise SystemExit("lio-bench.py: bad LUN spec %r" % spec)
    kind, name, path, size = parts[:4]
    return kind, name, path, int(size), (parts[4] if len(parts) > 4 else None)


def up(iqn, specs):
    fabric = rts.FabricModule("iscsi")
    target = rts.Target(fabric, iqn, mode="create")
    tpg = rts.TPG(target, 1, mode="create")
    tpg.set_attribute("authentication", "0")
    tpg.set_attribute("generate_node_acls", "1")
    tpg.set_attribute("cache_dynamic_acls", "1")
    tpg.set_attribute("demo_mode_write_protect", "0")
    # the initiator's queue (iodepth 64) must not be cut by the CmdSN window
    tpg.set_attribute("default_cmdsn_depth", "128")
    rts.NetworkPortal(tpg, "127.0.0.1", 3260, mode="create")
    for idx, spec in enumerate(specs):
        kind, name, path, size, config = parse_spec(spec)
        so = make_storage(kind, name, path, size, config)
        rts.LUN(tpg, lun=idx, storage_object=so)
    tpg.enable = True


def down(iqn):
    root = rts.RTSRoot()
    objects = []
    for target in root.targets:
        if target.wwn != iqn:
            continue
        for tpg in target.tpgs:
            objects += [lun.storage_object for lun in tpg.luns]
        target.delete()
    for so in objects:
        so.delete()


def main(argv):
    if len(argv) >= 3 and argv[1] == "up":
        up(argv[2], argv[3:])
    elif len(argv) == 3 and argv[1] == "down":
        down(argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
