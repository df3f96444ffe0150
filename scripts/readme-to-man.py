#!/usr/bin/python3
"""Write qlun(8) from README.md, so the manual and the README cannot drift.

    scripts/readme-to-man.py README.md VERSION [MAKE_CONFIG_HELP] > qlun.8

The manual is README's reference sections (the cfgstring, images on files
and block devices, what the initiator sees, statistics, tuning), converted from the
small Markdown subset README uses: paragraphs, `code`, **bold**, links,
bullet lists (two levels), indented code blocks and pipe tables.  A table
becomes tagged paragraphs: its first column is the tag, every other cell a
"header: cell" line.  Anything else in a section is an error, not a guess.
MAKE_CONFIG_HELP, the --help text of targetcli-config/make-config.py,
becomes the section on qlun-make-config (the manual serves both names).
"""
import re
import sys

SECTIONS = [  # README heading -> manual section
    ("The cfgstring", "OPTIONS"),
    ("Images on files and block devices", "IMAGES ON FILES AND BLOCK DEVICES"),
    ("What the initiator sees", "WHAT THE INITIATOR SEES"),
    ("Statistics", "STATISTICS"),
    ("Online resize", "ONLINE RESIZE"),
    ("Live snapshots", "LIVE SNAPSHOTS"),
    ("Block jobs", "BLOCK JOBS"),
    ("Stream job", "STREAM JOB"),
    ("Commit job", "COMMIT JOB"),
    ("Mirror and active commit", "MIRROR AND ACTIVE COMMIT"),
    ("Copy-on-read", "COPY-ON-READ"),
    ("Throttling", "THROTTLING"),
    ("Management socket and qlunctl", "MANAGEMENT SOCKET AND QLUNCTL"),
    ("Tuning", "TUNING"),
]


def roff_escape(text):
    text = text.replace("\\", "\\e")
    return text.replace("-", "\\-")


def inline(text):
    """Markdown inline markup to roff, escaping everything else."""
    out = []
    pos = 0
    pattern = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\([^)]+\)")
    for m in pattern.finditer(text):
        out.append(roff_escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + roff_escape(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + roff_escape(m.group(2)) + "\\fR")
        else:
            out.append(roff_escape(m.group(3)))
        pos = m.end()
    out.append(roff_escape(text[pos:]))
    return "".join(out)


def protect(line):
    """A leading . or ' would make the line a request."""
    return "\\&" + line if line.startswith((".", "'")) else line


def text_line(text):
    """A line of running text, inline markup converted."""
    return protect(inline(text))


def text_line_verbatim(text):
    """A line of a code block: escaped, nothing converted."""
    return protect(roff_escape(text))


def split_row(line):
    cells = line.strip().strip("|").split("|")
    return [c.strip() for c in cells]


def convert_block(lines, out):
    """Convert the body of one README section."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("    "):  # code block
            out.append(".PP")
            out.append(".nf")
            out.append(".RS 4")
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                if lines[i].strip():
                    out.append(text_line_verbatim(lines[i][4:]))
                i += 1
            out.append(".RE")
            out.append(".fi")
            continue
        if line.startswith("|"):  # table
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            if len(rows) < 2 or not all(re.fullmatch(r":?-+:?", c) for c in rows[1]):
                raise SystemExit("readme-to-man: malformed table near: " + line)
            header, body = rows[0], rows[2:]
            for row in body:
                if len(row) != len(header):
                    raise SystemExit("readme-to-man: table row has %d cells, header %d: %s"
                                     % (len(row), len(header), "|".join(row)))
                out.append(".TP")
                out.append(text_line(row[0]) if row[0] else "\\&")
                first = True
                for name, cell in zip(header[1:], row[1:]):
                    if not cell:
                        continue
                    if not first:
                        out.append(".br")
                    label = name + ": " if len(header) > 2 else ""
                    out.append(text_line(label + cell))
                    first = False
            continue
        if re.match(r"- ", line):  # bullet list, continuation lines indented
            while i < len(lines) and re.match(r"( {2})?- ", lines[i]):
                nested = lines[i].startswith("  ")
                item = [lines[i].strip()[2:]]
                i += 1
                while i < len(lines) and lines[i].strip() and \
                        not re.match(r"( {2})?- ", lines[i]) and lines[i].startswith("  "):
                    item.append(lines[i].strip())
                    i += 1
                if nested:
                    out.append(".RS 4")
                out.append(".IP \\(bu 2")
                out.append(text_line(" ".join(item)))
                if nested:
                    out.append(".RE")
            continue
        if line.startswith("#"):
            raise SystemExit("readme-to-man: unexpected heading inside a section: " + line)
        para = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("|", "    ", "- ", "#")):
            para.append(lines[i].strip())
            i += 1
        out.append(".PP")
        out.append(text_line(" ".join(para)))


def sections(readme):
    found = {}
    current = None
    for line in readme.splitlines():
        m = re.match(r"## (.*)", line)
        if m:
            current = m.group(1).strip()
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return found


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: readme-to-man.py README.md VERSION [MAKE_CONFIG_HELP]")
    with open(sys.argv[1], encoding="utf-8") as f:
        found = sections(f.read())
    out = [
        '.TH QLUN 8 "" "qlun %s" "System Administration"' % sys.argv[2],
        ".\\\" Generated from README.md by scripts/readme-to-man.py; edit README.md.",
        ".SH NAME",
        "qlun, qlun\\-make\\-config \\- qcow2 and raw images as SCSI LUNs, a tcmu\\-runner handler",
        ".SH SYNOPSIS",
        ".nf",
        "\\fBtargetcli /backstores/user:qlun create\\fR \\fBname=\\fR\\fINAME\\fR "
        "\\fBsize=\\fR\\fISIZE\\fR \\fBcfgstring=\\fR\\fIPATH\\fR[\\fB;\\fR\\fIoption\\fR\\fB=\\fR\\fIvalue\\fR]...",
        ".fi",
        ".SH DESCRIPTION",
        ".PP",
        "\\fBhandler_qlun.so\\fR is a handler for \\fBtcmu\\-runner\\fR(8): it serves qcow2 and "
        "raw images, on regular files or block devices, as SCSI logical units of the "
        "Linux kernel target (LIO) through its TCM\\-User backstore. Export them with "
        "\\fBtargetcli\\fR(8) over iSCSI; initiators see an ordinary thin\\-provisioned disk.",
        ".PP",
        "tcmu\\-runner loads the handler from its handler directory at start\\-up. A backstore "
        "of type \\fBuser:qlun\\fR is created with a size and a cfgstring naming the image "
        "and its options.",
    ]
    for heading, title in SECTIONS:
        if heading not in found:
            raise SystemExit("readme-to-man: README.md has no section '## %s'" % heading)
        out.append(".SH " + title)
        convert_block(found[heading], out)
    if len(sys.argv) == 4:
        with open(sys.argv[3], encoding="utf-8") as f:
            help_text = f.read().replace("make-config.sh", "qlun-make-config")
        out += [".SH QLUN\\-MAKE\\-CONFIG", ".PP",
                "\\fBqlun\\-make\\-config\\fR writes a targetcli configuration for qlun LUNs "
                "(see /usr/share/qlun/targetcli\\-config/README.md):", ".PP", ".nf"]
        out += [text_line_verbatim(l) if l.strip() else "" for l in help_text.splitlines()]
        out.append(".fi")
    out += [
        ".SH FILES",
        ".TP",
        "\\fI/usr/lib/x86_64\\-linux\\-gnu/tcmu\\-runner/handler_qlun.so\\fR",
        "the handler",
        ".TP",
        "\\fI/usr/share/qlun/targetcli\\-config/make\\-config.sh\\fR",
        "writes a targetcli configuration (saveconfig.json or a command script) for qlun LUNs",
        ".TP",
        "\\fI/run/qlun/\\fR\\fIserial\\fR\\fI.json\\fR",
        "live statistics of a served LUN",
        ".TP",
        "\\fI/run/qlun/qlun.sock\\fR",
        "the management socket (\\fBqlunctl\\fR(8))",
        ".SH SEE ALSO",
        "\\fBqlunctl\\fR(8), \\fBtcmu\\-runner\\fR(8), \\fBtargetcli\\fR(8), \\fBiscsiadm\\fR(8), \\fBqemu\\-img\\fR(1)",
    ]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
