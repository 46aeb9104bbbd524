#!/usr/bin/env python3
"""Generate crates/command/src/table/builtin.txt from real servers' `COMMAND` replies.

The built-in command table is the fallback the engine uses when a source does not
report a command (or reports no key specs, as Redis <= 6.2 does). It is the union of
what every supported server says about itself, so it is generated, never typed.

Usage:
    scripts/gen-command-table.py [BIN_DIR] > crates/command/src/table/builtin.txt

BIN_DIR defaults to .test-servers/bin (made by shared/tools/install-test-servers.sh).
Every executable there is started on a free loopback port, asked `COMMAND`, and stopped.
/usr/bin/redis-server is included as well when present. Later servers in SERVER_ORDER
win for a name they share; key specs are kept from an earlier server when a later one
reports none (a 5.0/6.x server never does).

Output format (one command per line, tab-separated; `#` lines are comments):
    name arity flags first last step spec...
  flags  comma list of the COMMAND flags, `-` when none
  spec   BEGIN/FIND/FLAGS where
           BEGIN = iN (index N) | kS:WORD (keyword WORD searched from S) | u (unknown)
           FIND  = rL:S:M (range lastkey L, keystep S, limit M)
                 | nI:F:S (keynum at I, first key F, keystep S) | u (unknown)
           FLAGS = comma list of key-spec flags, `-` when none
Only standard library; talks RESP2 over a raw socket.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

# Oldest first; a later server overrides an earlier one for the same command name.
# Redis 8.2 last so that for names both families share, Redis's metadata is the reference.
SERVER_ORDER = [
    "redis-5.0.10", "redis-6.0.9", "redis-6.2.5", "redis-6.2.14", "redis-7.0.15",
    "redis-7.2.4", "redis-7.4.1", "valkey-8.1.8", "valkey-9.0.0", "valkey-9.1.2",
    "redis-8.2.3",
]


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("unexpected RESP type %r" % t)

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_reply(binary):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    c = Resp(port)
                    c.cmd("PING")
                    break
                except (OSError, RuntimeError, EOFError):
                    time.sleep(0.1)
            else:
                raise RuntimeError("%s did not answer PING" % binary)
            return c.cmd("COMMAND")
        finally:
            proc.terminate()
            proc.wait(10)


def pairs(flat):
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def fmt_spec(spec):
    s = pairs(spec)
    bs = pairs(s["begin_search"])
    bspec = pairs(bs.get("spec") or [])
    if bs["type"] == "index":
        begin = "i%d" % bspec["index"]
    elif bs["type"] == "keyword":
        begin = "k%d:%s" % (bspec["startfrom"], bspec["keyword"])
    else:
        begin = "u"
    fk = pairs(s["find_keys"])
    fspec = pairs(fk.get("spec") or [])
    if fk["type"] == "range":
        find = "r%d:%d:%d" % (fspec["lastkey"], fspec["keystep"], fspec["limit"])
    elif fk["type"] == "keynum":
        find = "n%d:%d:%d" % (fspec["keynumidx"], fspec["firstkey"], fspec["keystep"])
    else:
        find = "u"
    flags = ",".join(s.get("flags") or []) or "-"
    return "%s/%s/%s" % (begin, find, flags)


def flatten(entries, out):
    for e in entries:
        name = e[0].lower()
        specs = [fmt_spec(s) for s in e[8]] if len(e) > 8 and e[8] else []
        out[name] = {
            "arity": e[1], "flags": [f.lower() for f in e[2]],
            "triple": (e[3], e[4], e[5]), "specs": specs,
        }
        if len(e) > 9 and e[9]:
            flatten(e[9], out)


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else ".test-servers/bin"
    binaries = [(n, os.path.join(bin_dir, n)) for n in SERVER_ORDER
                if os.access(os.path.join(bin_dir, n), os.X_OK)]
    if os.access("/usr/bin/redis-server", os.X_OK):
        # The Debian server (7.0) sits with the 7.0 servers.
        binaries.insert(min(4, len(binaries)), ("debian", "/usr/bin/redis-server"))
    if not binaries:
        sys.exit("no servers found in %s" % bin_dir)
    table, used = {}, []
    for label, path in binaries:
        here = {}
        flatten(command_reply(path), here)
        for name, entry in here.items():
            old = table.get(name)
            if old and not entry["specs"]:
                entry["specs"] = old["specs"]
            table[name] = entry
        used.append("%s (%d)" % (label, len(here)))
        print("%s: %d commands" % (label, len(here)), file=sys.stderr)
    print("# Generated by scripts/gen-command-table.py from COMMAND of: " + ", ".join(used))
    print("# name\tarity\tflags\tfirst\tlast\tstep\tspecs... (format: see the script)")
    for name in sorted(table):
        e = table[name]
        print("\t".join([name, str(e["arity"]), ",".join(e["flags"]) or "-",
                         *map(str, e["triple"]), *e["specs"]]))


if __name__ == "__main__":
    main()
