#!/usr/bin/env python3
"""Make the seed corpora of the fuzz targets that are not committed.

    make-seeds.py scsi  OUTDIR   real CDBs (and parameter lists), in the
                                 input format of fuzz_scsi.c
    make-seeds.py qcow2 OUTDIR   small images made by qemu-img/qemu-io (v2,
                                 v3, extended L2, compressed zlib/zstd,
                                 snapshots, backing file, lazy refcounts,
                                 dirty, bitmaps, 512-byte and 4 KiB
                                 clusters, refcount widths), each followed
                                 by an operation trailer (fuzz_qcow2.c)

OUTDIR is emptied first.  qcow2 seeds need qemu-img and qemu-io.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def be16(v): return struct.pack('>H', v)
def be32(v): return struct.pack('>I', v)
def be64(v): return struct.pack('>Q', v)


# --- fuzz_scsi ------------------------------------------------------------

def cmd(cdb, data=b'', buflen=None, flags=0):
    """One command record: cdb_len, CDB, buffer length, flags, data-out."""
    cdb = bytes(cdb)
    if buflen is None:
        buflen = len(data)
    if buflen < 0x2000:
        enc = buflen
    else:
        assert buflen % 16 == 0 and buflen // 16 <= 0xfff
        enc = 0xf000 + buflen // 16
    return bytes([len(cdb)]) + cdb + be16(enc) + bytes([flags]) + data


def cdb6(op, lba=0, n=0, b1=0):
    return bytes([op, b1 | (lba >> 16) & 0x1f, (lba >> 8) & 0xff, lba & 0xff,
                  n, 0])


def cdb10(op, lba=0, n=0, b1=0, b6=0):
    return bytes([op, b1]) + be32(lba) + bytes([b6]) + be16(n) + b'\0'


def cdb12(op, lba=0, n=0, b1=0):
    return bytes([op, b1]) + be32(lba) + be32(n) + b'\0\0'


def cdb16(op, lba=0, n=0, b1=0, b14=0):
    return bytes([op, b1]) + be64(lba) + be32(n) + bytes([b14, 0])


def caching_page(wce):
    return bytes([0x08, 0x12, 0x04 if wce else 0]) + bytes(17)


def scsi_seeds():
    s = {}
    s['discovery'] = bytes([0x00]) + b''.join([
        cmd(cdb6(0x00)),                                   # TEST UNIT READY
        cmd(bytes([0x12, 0, 0, 0, 96, 0]), buflen=96),     # INQUIRY
        cmd(bytes([0x12, 1, 0x00, 0, 255, 0]), buflen=255),
        cmd(bytes([0x12, 1, 0x80, 0, 255, 0]), buflen=255),
        cmd(bytes([0x12, 1, 0x83, 0, 255, 0]), buflen=255),
        cmd(bytes([0x12, 1, 0xb0, 0, 64, 0]), buflen=64),
        cmd(bytes([0x12, 1, 0xb1, 0, 64, 0]), buflen=64),
        cmd(bytes([0x12, 1, 0xb2, 0, 8, 0]), buflen=8),
        cmd(cdb10(0x25), buflen=8),                        # READ CAPACITY 10
        cmd(cdb16(0x9e, 0, 32, b1=0x10), buflen=32),       # READ CAPACITY 16
        cmd(bytes([0x03, 0, 0, 0, 18, 0]), buflen=18),     # REQUEST SENSE
        cmd(bytes([0x03, 1, 0, 0, 252, 0]), buflen=252),
    ])
    s['mode'] = bytes([0x0b]) + b''.join([
        cmd(bytes([0x1a, 0, 0x3f, 0, 255, 0]), buflen=255),  # MODE SENSE 6
        cmd(bytes([0x1a, 8, 0x08, 0, 255, 0]), buflen=255),
        cmd(bytes([0x5a, 0, 0x3f, 0, 0, 0, 0, 1, 0, 0]), buflen=256),
        cmd(bytes([0x5a, 0, 0x4a, 0, 0, 0, 0, 1, 0, 0]), buflen=256),
        # MODE SELECT 6, PF: header, one block descriptor, caching page
        cmd(bytes([0x15, 0x10, 0, 0, 4 + 8 + 20, 0]),
            bytes([0, 0, 0, 8]) + be32(0) + be32(512) + caching_page(False)),
        # MODE SELECT 10, PF, caching page back on
        cmd(bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, 8 + 20, 0]),
            bytes(8) + caching_page(True)),
        # the control page
        cmd(bytes([0x15, 0x10, 0, 0, 4 + 12, 0]),
            bytes(4) + bytes([0x0a, 0x0a]) + bytes(10)),
    ])
    rw = []
    for op, mk, n in ((0x0a, cdb6, 1), (0x08, cdb6, 1), (0x2a, cdb10, 2),
                      (0x28, cdb10, 2), (0xaa, cdb12, 1), (0xa8, cdb12, 1),
                      (0x8a, cdb16, 3), (0x88, cdb16, 3)):
        data = bytes((i * 7 + op) & 0xff for i in range(512 * n)) \
            if op in (0x0a, 0x2a, 0xaa, 0x8a) else b''
        rw.append(cmd(mk(op, 16 * n, n), data, buflen=512 * n))
    rw.append(cmd(cdb10(0x2a, 30, 1, b1=0x08), bytes([0x5a]) * 512))  # FUA
    rw.append(cmd(cdb10(0x35, 0, 0)))                  # SYNCHRONIZE CACHE 10
    rw.append(cmd(cdb16(0x91, 0, 64)))
    rw.append(cmd(cdb10(0x34, 0, 8)))                  # PRE-FETCH 10
    rw.append(cmd(cdb16(0x90, 8, 8)))
    rw.append(cmd(cdb6(0x1b, 0, 1)))                   # START STOP UNIT
    rw.append(cmd(cdb10(0x28, 511, 2), buflen=1024))   # past the end
    s['read-write-512'] = bytes([0x08]) + b''.join(rw)
    s['read-write-4k'] = bytes([0x29]) + b''.join(rw)
    s['read-only'] = bytes([0x06]) + b''.join(rw)

    blk = bytes([0x33]) * 512
    s['thin'] = bytes([0x1a]) + b''.join([
        cmd(cdb10(0x2a, 0, 8), blk * 8),
        cmd(cdb10(0x41, 0, 8), bytes(512)),                # WRITE SAME 10
        cmd(cdb10(0x41, 8, 8, b1=0x08), bytes(512)),       # with UNMAP
        cmd(cdb16(0x93, 16, 128, b1=0x08), bytes(512)),    # WRITE SAME 16
        cmd(cdb16(0x93, 256, 4, b1=0x01)),                 # NDOB
        cmd(cdb16(0x93, 300, 3), blk),                     # non-zero block
        # UNMAP: header + two block descriptors
        cmd(bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0]),
            be16(38) + be16(32) + bytes(4) +
            be64(0) + be32(128) + bytes(4) + be64(384) + be32(64) + bytes(4)),
        cmd(cdb16(0x9e, 0, 64, b1=0x12), buflen=64),       # GET LBA STATUS
        cmd(cdb16(0x9e, 200, 64, b1=0x12), buflen=64),
    ])
    s['verify'] = bytes([0x08]) + b''.join([
        cmd(cdb10(0x2a, 4, 1), blk),
        cmd(cdb10(0x2f, 4, 1, b1=0x02), blk),              # VERIFY BYTCHK=1
        cmd(cdb10(0x2f, 4, 1, b1=0x06), blk[:512]),        # BYTCHK=3
        cmd(cdb16(0x8f, 0, 8)),                            # BYTCHK=0
        cmd(cdb12(0xaf, 4, 1, b1=0x02), bytes(512)),       # miscompare
        cmd(cdb10(0x2e, 8, 1, b1=0x02), blk),              # WRITE AND VERIFY
        cmd(cdb16(0x8e, 9, 1, b1=0x02), blk),
        cmd(cdb12(0xae, 10, 1, b1=0x02), blk),
        # COMPARE AND WRITE: verify data then write data
        cmd(cdb16(0x89, 4, 0) [:13] + bytes([1, 0, 0]), blk + bytes(512)),
        cmd(cdb16(0x89, 4, 0) [:13] + bytes([1, 0, 0]), blk + bytes(512)),
        cmd(cdb16(0x8b, 4, 1), bytes([0x0f]) * 512),       # ORWRITE
    ])
    s['opcodes'] = bytes([0x80]) + b''.join([
        # REPORT SUPPORTED OPERATION CODES: all, all with timeouts, one
        cmd(bytes([0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]),
            buflen=4096),
        cmd(bytes([0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]),
            buflen=4096),
        cmd(bytes([0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 0, 64, 0, 0]),
            buflen=64),
        cmd(bytes([0xa3, 0x0c, 0x02, 0x9e, 0, 0x10, 0, 0, 0, 64, 0, 0]),
            buflen=64),
        cmd(bytes([0xa3, 0x0c, 0x03, 0x9e, 0, 0x12, 0, 0, 0, 64, 0, 0]),
            buflen=64),
        cmd(bytes([0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]), buflen=16),
        cmd(bytes([0x4d, 0, 0, 0, 0, 0, 0, 0, 0, 0])),     # unimplemented
    ])
    s['errors'] = bytes([0x12]) + b''.join([
        cmd(cdb10(0x2a, 0, 1), blk, flags=1),              # EIO
        cmd(cdb10(0x2a, 0, 1), blk, flags=2),              # ENOSPC
        cmd(cdb10(0x28, 0, 1), buflen=512, flags=4),       # EUCLEAN
        cmd(cdb10(0x41, 0, 8, b1=0x08), bytes(512), flags=5),  # ENOMEM
        cmd(cdb10(0x35), flags=6),                         # EBUSY
        cmd(cdb10(0x28, 0, 1), buflen=512, flags=7 | 0x80),  # EINVAL, split
    ])
    return s


# --- fuzz_qcow2 -----------------------------------------------------------

def op(kind, off512=0, len512=0, flags=0, pattern=0, shift=0):
    """One 8-byte operation record (offset and length in 512-byte units
    unless flags bit 0; shift picks the offset unit, see fuzz_qcow2.c)."""
    return bytes([kind | shift << 4]) + struct.pack('>I', off512)[1:] + \
        be16(len512) + bytes([flags, pattern])


def trailer(ops):
    assert len(ops) < 16
    return b''.join(ops) + bytes([len(ops)])


DEFAULT_OPS = [
    op(0, 0, 128),              # read 64 KiB at 0
    op(4),                      # block status walk from 0
    op(1, 8, 9, pattern=0x41),  # write 4.5 KiB at 4 KiB
    op(1, 77, 1000, flags=1, pattern=0x42),  # unaligned write
    op(2, 256, 128, flags=2),   # zero, may unmap
    op(3, 1024, 256),           # discard 128 KiB
    op(6, 2000, 8, pattern=0x43),  # FUA write
    op(5),                      # flush
    op(0, 0, 4096),             # read 2 MiB (clipped to 256 KiB)
    op(7, flags=2),             # reopen read-only
    op(4, 0, 0),
    op(0, 1, 3000, flags=1),
]

# Internal snapshots on the live image (op 5 with flags bit 3).
SNAPSHOT_OPS = [
    op(1, 8, 9, pattern=0x51),
    op(5, flags=8 | 16, pattern=1),   # create s1
    op(1, 0, 128, pattern=0x52),      # copy on write
    op(5, flags=8 | 16, pattern=2),   # create s2
    op(5, flags=8, pattern=4 | 1),    # delete s1 by name
    op(1, 4, 8, pattern=0x53),
    op(5, flags=8, pattern=0),        # delete id 1 (a qemu-made one?)
    op(7),                            # reopen read-write
    op(0, 0, 256),
]


def qcow2_seeds(out):
    for tool in ('qemu-img', 'qemu-io'):
        if not shutil.which(tool):
            sys.exit('make-seeds.py: %s is needed for the qcow2 seeds' % tool)
    work = tempfile.mkdtemp(prefix='qlun-seeds.')
    try:
        def run(*args, check=True):
            r = subprocess.run(list(args), cwd=work, capture_output=True,
                               text=True)
            if check and r.returncode != 0:
                sys.exit('make-seeds.py: %s failed: %s' % (
                    ' '.join(args), r.stderr.strip()))
            return r

        def io(img, *cmds, fmt='qcow2', check=True):
            args = ['qemu-io', '-f', fmt]
            for c in cmds:
                args += ['-c', c]
            return run(*(args + [img]), check=check)

        # base.raw: the name fuzz_qcow2 provides next to its image.
        run('qemu-img', 'create', '-q', '-f', 'raw', 'base.raw', '1M')
        io('base.raw', 'write -P 0x5b 0 512k', fmt='raw')

        std_writes = ['write -P 0x11 0 8k', 'write -P 0x12 100k 3k',
                      'write -z 200k 64k', 'write -P 0x13 1M 4k']
        variants = [
            # name, create options, size, qemu-io commands
            ('v3-4k', 'cluster_size=4096', '2M', std_writes),
            ('v2-4k', 'compat=0.10,cluster_size=4096', '2M', std_writes),
            ('v3-512', 'cluster_size=512', '1M', std_writes[:3]),
            ('v2-512', 'compat=0.10,cluster_size=512', '1M', std_writes[:3]),
            ('v3-64k', 'cluster_size=65536', '2M',
             ['write -P 0x21 0 64k', 'write -c -P 0x22 1M 64k']),
            ('extl2-16k', 'extended_l2=on,cluster_size=16384', '2M',
             ['write -P 0x31 0 2k', 'write -P 0x32 20k 1k',
              'write -z 40k 4k', 'write -P 0x33 512k 16k']),
            ('compressed-zlib', 'cluster_size=4096', '1M',
             ['write -c -P 0x41 0 4k', 'write -c -P 0x42 8k 4k',
              'write -P 0x43 16k 4k']),
            ('compressed-zstd', 'cluster_size=4096,compression_type=zstd',
             '1M', ['write -c -P 0x51 0 4k', 'write -c -P 0x52 8k 4k']),
            ('lazy', 'cluster_size=4096,lazy_refcounts=on', '1M',
             std_writes[:3]),
            ('refcount1', 'cluster_size=4096,refcount_bits=1', '1M',
             std_writes[:3]),
            ('refcount64', 'cluster_size=4096,refcount_bits=64', '1M',
             std_writes[:3]),
            ('refcount8-2M', 'cluster_size=4096,refcount_bits=8', '4M',
             ['write -P 0x61 0 4k', 'write -P 0x62 3M 4k']),
        ]
        made = {}
        for name, opts, size, cmds in variants:
            img = name + '.qcow2'
            run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', opts, img,
                size)
            if cmds:
                io(img, *cmds)
            made[name] = img

        # A backing file (relative name, raw format extension), COW on top.
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
            'cluster_size=4096', '-b', 'base.raw', '-F', 'raw', 'overlay.qcow2',
            '2M')
        io('overlay.qcow2', 'write -P 0x71 4k 1k', 'write -z 64k 8k',
           'discard 128k 4k')
        made['overlay'] = 'overlay.qcow2'
        # The same without the backing format extension (probed).
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
            'cluster_size=4096,compat=0.10', '-b', 'base.raw', '-F', 'raw',
            'overlay-v2.qcow2', '1M')
        io('overlay-v2.qcow2', 'write -P 0x72 0 1k')
        made['overlay-v2'] = 'overlay-v2.qcow2'

        # Internal snapshots: the snapshot table and shared clusters.
        run('cp', 'v3-4k.qcow2', 'snap.qcow2')
        run('qemu-img', 'snapshot', '-c', 'first', 'snap.qcow2')
        io('snap.qcow2', 'write -P 0x81 0 4k')
        run('qemu-img', 'snapshot', '-c', 'second', 'snap.qcow2')
        made['snapshots'] = 'snap.qcow2'

        # A persistent dirty bitmap (bitmaps extension, autoclear bit).
        run('cp', 'v3-4k.qcow2', 'bitmap.qcow2')
        if run('qemu-img', 'bitmap', '--add', 'bitmap.qcow2', 'b0',
               check=False).returncode == 0:
            made['bitmap'] = 'bitmap.qcow2'

        # Dirty (lazy refcounts, not closed): the refcount rebuild path.
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
            'cluster_size=4096,lazy_refcounts=on', 'dirty.qcow2', '1M')
        io('dirty.qcow2', 'write -P 0x91 0 12k', 'abort', check=False)
        with open(os.path.join(work, 'dirty.qcow2'), 'rb') as f:
            head = f.read(80)
        if len(head) == 80 and head[79] & 1:
            made['dirty'] = 'dirty.qcow2'
        else:
            print('make-seeds.py: no dirty seed (qemu-io abort left the '
                  'dirty bit clear)', file=sys.stderr)

        total = 0
        for name, img in sorted(made.items()):
            with open(os.path.join(work, img), 'rb') as f:
                data = f.read()
            for i, ops in enumerate((DEFAULT_OPS, DEFAULT_OPS[:4], [],
                                     SNAPSHOT_OPS)):
                seed = data + trailer(ops) if ops else data + b'\0'
                with open(os.path.join(out, '%s-%d' % (name, i)), 'wb') as f:
                    f.write(seed)
                total += len(seed)
        print('make-seeds.py: %d qcow2 seeds, %d KiB' % (
            4 * len(made), total // 1024))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ('scsi', 'qcow2'):
        sys.exit(__doc__)
    what, out = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if what == 'scsi':
        for name, data in scsi_seeds().items():
            with open(os.path.join(out, name), 'wb') as f:
                f.write(data)
    else:
        qcow2_seeds(out)


if __name__ == '__main__':
    main()
