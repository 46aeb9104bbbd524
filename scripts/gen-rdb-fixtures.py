#!/usr/bin/env python3
"""Generate the RDB golden fixtures of crates/rdb from real servers.

For each server build in BIN_DIR (default: .test-servers/bin, filled by
shared/tools/install-test-servers.sh), this starts the server on a loopback port in
30000-30999 with a temporary directory, writes keys of every type in every encoding the
version has, records what the server itself returns for each key (read commands and DUMP),
runs SAVE, and writes:

    crates/rdb/tests/fixtures/<name>.rdb    the snapshot
    crates/rdb/tests/fixtures/<name>.json   the expected content

Usage:  scripts/gen-rdb-fixtures.py [--bin-dir DIR] [--out DIR] [--only NAME ...]
        scripts/gen-rdb-fixtures.py --server /usr/bin/redis-server --name 7.0.15 --out /tmp/x

Byte strings in the JSON are strings when valid UTF-8, else {"base64": "..."}.
Every server started here is stopped by its PID (SHUTDOWN NOSAVE, then SIGKILL).
No third-party Python packages are needed: RESP is spoken over a raw socket.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAR_FUTURE_MS = 4102444800000  # 2100-01-01, so fixtures never expire
PORT_BASE = 30100


# ---------------------------------------------------------------------------------------
# a minimal RESP2 client

class RespError(Exception):
    pass


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ValueError("unexpected RESP type %r" % line)

    def cmd(self, *args, ok_error=False):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, int):
                a = str(a).encode()
            elif isinstance(a, float):
                a = repr(a).encode()
            elif isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        r = self._reply()
        if isinstance(r, RespError) and not ok_error:
            raise r
        return r


def bj(b):
    """Binary-safe JSON for a byte string."""
    if isinstance(b, int):
        b = str(b).encode()
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode()}


def pairs(flat):
    return dict(zip(flat[0::2], flat[1::2]))


# ---------------------------------------------------------------------------------------
# server lifecycle

def version_tuple(name):
    flavor, v = name.split("-", 1) if "-" in name else ("redis", name)
    parts = tuple(int(x) for x in v.split("-")[0].split("."))
    return flavor, parts


def start(server, port, workdir, extra):
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
            "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", os.path.join(workdir, "server.log")] + extra
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            log = open(os.path.join(workdir, "server.log")).read()[-2000:]
            raise RuntimeError("server exited early:\n" + log)
        try:
            c = Conn(port)
            if c.cmd("PING") == b"PONG":
                return proc, c
        except (OSError, ConnectionError):
            time.sleep(0.05)
    stop(proc, None)
    raise RuntimeError("server did not answer PING")


def stop(proc, conn):
    try:
        if conn is not None:
            conn.cmd("SHUTDOWN", "NOSAVE", ok_error=True)
    except (OSError, ConnectionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()  # by PID: the Popen handle we started
        proc.wait()


# ---------------------------------------------------------------------------------------
# the dataset

def populate(c, flavor, v, variant):
    """Write every type/encoding this version has. Returns {key: expire_at_ms} set here."""
    expires = {}
    valkey = flavor == "valkey"
    r7 = v >= (7, 0) or valkey
    r74 = flavor == "redis" and v >= (7, 4)
    vk9 = valkey and v >= (9, 0)

    if variant in ("lfu", "lru"):
        for i in range(5):
            c.cmd("SET", "acc:%d" % i, "v%d" % i)
            for _ in range(i * 3):
                c.cmd("GET", "acc:%d" % i)
        c.cmd("RPUSH", "acc:list", "a", "b")
        return expires
    if variant == "cluster":
        for i in range(12):
            c.cmd("SET", "ck:%d" % i, "v%d" % i)
        c.cmd("SET", "ck:ttl", "x")
        c.cmd("PEXPIREAT", "ck:ttl", FAR_FUTURE_MS)
        expires[b"ck:ttl"] = FAR_FUTURE_MS
        c.cmd("HSET", "ck:h", "f", "v")
        return expires

    # Small encoding limits, so both the compact and the full encodings appear with few
    # members (keeps the fixtures small). The ziplist names are aliases on 7.0+.
    for name, value in [("hash-max-ziplist-entries", 16), ("zset-max-ziplist-entries", 16),
                        ("set-max-intset-entries", 16), ("list-max-ziplist-size", 32),
                        ("stream-node-max-entries", 20)]:
        c.cmd("CONFIG", "SET", name, value)
    if (flavor == "redis" and v >= (7, 2)) or valkey:
        c.cmd("CONFIG", "SET", "set-max-listpack-entries", 16)

    # strings: raw, int-encoded (8/16/32 bit), too big for int32, LZF, empty, binary, big
    c.cmd("SET", "s:raw", "hello world")
    c.cmd("SET", "s:int8", "-5")
    c.cmd("SET", "s:int16", "12345")
    c.cmd("SET", "s:int32", "-2000000000")
    c.cmd("SET", "s:int64", "1234567890123")
    c.cmd("SET", "s:lzf", "a" * 200 + "b" * 50 + "abcdefgh" * 20)
    c.cmd("SET", "s:empty", "")
    c.cmd("SET", "s:bin", b"\x00\xff\xfe\x80binary\r\n")
    c.cmd("SET", "s:big", "".join("%08x" % ((i * 2654435761) & 0xffffffff) for i in range(2500)))
    c.cmd("SET", "s:ttl", "expiring")
    c.cmd("PEXPIREAT", "s:ttl", FAR_FUTURE_MS)
    expires[b"s:ttl"] = FAR_FUTURE_MS
    c.cmd("SET", b"k:bin\xff\x00", "binary key")
    c.cmd("SET", "a" * 100, "long key (LZF-compressible)")

    # lists: small (one compact node), big (several nodes), compressed nodes, plain nodes
    c.cmd("RPUSH", "l:small", "a", 12, -200, 1000000, 5000000000, "x" * 70, "")
    c.cmd("RPUSH", "l:big", *["item-%d" % i for i in range(100)])
    c.cmd("CONFIG", "SET", "list-compress-depth", "1")
    c.cmd("RPUSH", "l:compressed", *["compressible-compressible-%d" % i for i in range(200)])
    c.cmd("CONFIG", "SET", "list-compress-depth", "0")
    if r7:
        c.cmd("DEBUG", "QUICKLIST-PACKED-THRESHOLD", "100")
        # a list already in quicklist form, then one element above the threshold
        c.cmd("RPUSH", "l:plain", *["small-%d" % i for i in range(40)])
        c.cmd("RPUSH", "l:plain", "P" * 300, "tail")
        c.cmd("DEBUG", "QUICKLIST-PACKED-THRESHOLD", str(1 << 30))
    c.cmd("RPUSH", "l:ttl", "x")
    c.cmd("PEXPIREAT", "l:ttl", FAR_FUTURE_MS)
    expires[b"l:ttl"] = FAR_FUTURE_MS

    # sets: intset (16/64 bit), listpack (7.2+), hashtable
    c.cmd("SADD", "set:int", 1, 2, 70000)
    c.cmd("SADD", "set:int64", 1, 5000000000, -3)
    c.cmd("SADD", "set:str", "a", "b", "c")
    c.cmd("SADD", "set:big", *["member-%d" % i for i in range(40)])
    c.cmd("SADD", "set:bigint", *range(0, 80, 2))

    # sorted sets: compact (ziplist/listpack) and skiplist (ZSET_2)
    c.cmd("ZADD", "z:small", 1, "a", 2.5, "b", "-inf", "c", "inf", "d", "1e100", "e", -0.125, "f", 7, "g")
    c.cmd("ZADD", "z:big", *sum([[i * 1.5, "m-%d" % i] for i in range(40)], []))
    c.cmd("ZADD", "z:longmember", 1, "y" * 100)

    # hashes: compact and hashtable
    c.cmd("HSET", "h:small", "f1", "v1", "f2", 123, "f3", -7, "f4", "")
    c.cmd("HSET", "h:big", *sum([["field-%d" % i, "value-%d" % i] for i in range(40)], []))
    c.cmd("HSET", "h:longval", "f", "z" * 100)

    # streams
    c.cmd("XADD", "x:basic", "1-1", "f", "v", "g", "w")
    c.cmd("XADD", "x:basic", "1-2", "f", "v2", "g", "w2")
    c.cmd("XADD", "x:basic", "2-0", "other", "z")
    c.cmd("XGROUP", "CREATE", "x:basic", "grp", "0")
    c.cmd("XREADGROUP", "GROUP", "grp", "alice", "COUNT", 2, "STREAMS", "x:basic", ">")
    for i in range(1, 11):
        c.cmd("XADD", "x:del", "%d-0" % (i * 10), "n", i, "sq", i * i)
    c.cmd("XDEL", "x:del", "30-0", "100-0")
    c.cmd("XGROUP", "CREATE", "x:del", "g1", "0")
    c.cmd("XGROUP", "CREATE", "x:del", "g2", "$")
    c.cmd("XREADGROUP", "GROUP", "g1", "bob", "COUNT", 3, "STREAMS", "x:del", ">")
    c.cmd("XREADGROUP", "GROUP", "g1", "carol", "COUNT", 2, "STREAMS", "x:del", ">")
    c.cmd("XACK", "x:del", "g1", "10-0")
    if v >= (6, 2) or valkey:
        c.cmd("XGROUP", "CREATECONSUMER", "x:del", "g1", "dave")
    for i in range(50):
        c.cmd("XADD", "x:big", "%d-%d" % (1000 + i // 3, i % 3), "k", "v%d" % i)
    c.cmd("XGROUP", "CREATE", "x:empty", "g", "$", "MKSTREAM")

    # another db
    c.cmd("SELECT", 3)
    c.cmd("SET", "db3:key", "in db three")
    c.cmd("HSET", "db3:h", "a", "b")
    c.cmd("SELECT", 0)

    # functions (7.0+)
    if r7:
        code = ("#!lua name=fixturelib\n"
                "redis.register_function('fixture_echo', function(keys, args) return args[1] end)")
        c.cmd("FUNCTION", "LOAD", code)

    # per-field TTL hashes
    if r74 or vk9:
        c.cmd("HSET", "hf:small", "f1", "v1", "f2", "v2", "f3", "v3")
        c.cmd("HPEXPIREAT", "hf:small", FAR_FUTURE_MS, "FIELDS", 1, "f1")
        c.cmd("HPEXPIREAT", "hf:small", FAR_FUTURE_MS + 1234, "FIELDS", 1, "f3")
        c.cmd("HSET", "hf:big", *sum([["field-%d" % i, "value-%d" % i] for i in range(40)], []))
        c.cmd("HPEXPIREAT", "hf:big", FAR_FUTURE_MS + 5, "FIELDS", 2, "field-1", "field-2")
    return expires


# ---------------------------------------------------------------------------------------
# recording what the server says

def record_key(c, key, flavor, v):
    valkey = flavor == "valkey"
    t = c.cmd("TYPE", key).decode()
    rec = {"key": bj(key), "type": t, "encoding": c.cmd("OBJECT", "ENCODING", key).decode()}
    pttl = c.cmd("PTTL", key)
    rec["has_ttl"] = pttl >= 0
    if t == "string":
        rec["value"] = bj(c.cmd("GET", key))
    elif t == "list":
        rec["value"] = [bj(x) for x in c.cmd("LRANGE", key, 0, -1)]
    elif t == "set":
        rec["value"] = sorted((bj(x) for x in c.cmd("SMEMBERS", key)), key=json.dumps)
    elif t == "zset":
        flat = c.cmd("ZRANGE", key, 0, -1, "WITHSCORES")
        rec["value"] = [[bj(m), s.decode()] for m, s in zip(flat[0::2], flat[1::2])]
    elif t == "hash":
        flat = c.cmd("HGETALL", key)
        rec["value"] = {bj(f) if isinstance(bj(f), str) else json.dumps(bj(f)): bj(val)
                        for f, val in zip(flat[0::2], flat[1::2])}
        if (flavor == "redis" and v >= (7, 4)) or (valkey and v >= (9, 0)):
            fields = flat[0::2]
            ttls = c.cmd("HPEXPIRETIME", key, "FIELDS", len(fields), *fields)
            rec["field_expire_at_ms"] = {f.decode(): t for f, t in zip(fields, ttls) if t > 0}
    elif t == "stream":
        rec["value"] = record_stream(c, key, flavor, v)
    dump = c.cmd("DUMP", key)
    rec["dump"] = base64.b64encode(dump).decode()
    return rec


def record_stream(c, key, flavor, v):
    out = {"entries": [[e[0].decode(), [bj(x) for x in e[1]]] for e in c.cmd("XRANGE", key, "-", "+")]}
    info = pairs(c.cmd("XINFO", "STREAM", key))
    out["length"] = info[b"length"]
    out["last_id"] = info[b"last-generated-id"].decode()
    for k in (b"max-deleted-entry-id", b"recorded-first-entry-id"):
        if k in info:
            out[k.decode()] = info[k].decode()
    if b"entries-added" in info:
        out["entries_added"] = info[b"entries-added"]
    groups = []
    for g in c.cmd("XINFO", "GROUPS", key):
        g = pairs(g)
        name = g[b"name"]
        grp = {"name": bj(name), "last_id": g[b"last-delivered-id"].decode(),
               "pending": g[b"pending"]}
        if b"entries-read" in g:
            grp["entries_read"] = g[b"entries-read"]
        pel = c.cmd("XPENDING", key, name, "-", "+", 100000) if g[b"pending"] else []
        grp["pel"] = [[p[0].decode(), bj(p[1]), p[3]] for p in pel]
        grp["consumers"] = sorted(
            ({"name": bj(pairs(x)[b"name"]), "pending": pairs(x)[b"pending"]}
             for x in c.cmd("XINFO", "CONSUMERS", key, name)), key=lambda x: json.dumps(x))
        groups.append(grp)
    out["groups"] = groups
    if v >= (6, 0) or flavor == "valkey":
        # FULL gives delivery times and seen/active times, which the RDB stores exactly
        full = pairs(c.cmd("XINFO", "STREAM", key, "FULL"))
        fg = {}
        for g in full.get(b"groups") or []:
            g = pairs(g)
            fg[g[b"name"].decode()] = {
                "pel_delivery_ms": {p[0].decode(): p[2] for p in g[b"pending"]},
                "consumer_seen_ms": {pairs(x)[b"name"].decode(): pairs(x)[b"seen-time"]
                                     for x in g[b"consumers"]},
                "consumer_active_ms": {pairs(x)[b"name"].decode(): pairs(x)[b"active-time"]
                                       for x in g[b"consumers"] if b"active-time" in pairs(x)},
            }
        out["full_groups"] = fg
    return out


def record(c, flavor, v, expires, cluster=False):
    keys = []
    for db in [0] if cluster else range(16):
        if not cluster:
            c.cmd("SELECT", db)
        cursor = b"0"
        names = []
        while True:
            cursor, batch = c.cmd("SCAN", cursor, "COUNT", 1000)
            names.extend(batch)
            if cursor == b"0":
                break
        for k in sorted(names):
            rec = record_key(c, k, flavor, v)
            rec["db"] = db
            rec["expire_at_ms"] = expires.get(k)
            keys.append(rec)
    if not cluster:
        c.cmd("SELECT", 0)
    functions = []
    if v >= (7, 0) or flavor == "valkey":
        for lib in c.cmd("FUNCTION", "LIST", "WITHCODE"):
            functions.append(bj(pairs(lib)[b"library_code"]))
    return keys, functions


# ---------------------------------------------------------------------------------------

VARIANTS = {
    # extra fixtures: maxmemory policies (IDLE / FREQ opcodes) and cluster mode (slot info)
    "5.0.10-lru": ("redis-5.0.10", "lru"),
    "7.2.4-lfu": ("redis-7.2.4", "lfu"),
    "8.2.3-cluster": ("redis-8.2.3", "cluster"),
    "valkey-9.1.2-cluster": ("valkey-9.1.2", "cluster"),
}


def generate(server, name, out_dir, port, variant=None, base_name=None):
    flavor, v = version_tuple(base_name or name)
    work = tempfile.mkdtemp(prefix="rdbfix-")
    extra = []
    if v >= (7, 0) or flavor == "valkey":
        extra += ["--enable-debug-command", "yes"]
    if variant == "lru":
        extra += ["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"]
    if variant == "lfu":
        extra += ["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lfu"]
    if variant == "cluster":
        extra += ["--cluster-enabled", "yes", "--cluster-config-file", os.path.join(work, "nodes.conf")]
    proc, c = start(server, port, work, extra)
    try:
        if variant == "cluster":
            c.cmd("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            for _ in range(100):
                if b"cluster_state:ok" in c.cmd("CLUSTER", "INFO"):
                    break
                time.sleep(0.1)
        expires = populate(c, flavor, v, variant)
        keys, functions = record(c, flavor, v, expires, variant == "cluster")
        server_version = pairs([x for l in c.cmd("INFO", "server").split(b"\r\n") if b":" in l
                                for x in l.split(b":", 1)])
        c.cmd("SAVE")
        os.makedirs(out_dir, exist_ok=True)
        shutil.copyfile(os.path.join(work, "dump.rdb"), os.path.join(out_dir, name + ".rdb"))
        doc = {
            "server": name,
            "flavor": flavor,
            "server_version": (server_version.get(b"valkey_version") or server_version.get(b"redis_version") or b"").decode(),
            "variant": variant,
            "functions": functions,
            "keys": keys,
        }
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            # one key per line: compact, yet diffs stay readable
            keys_json = ",\n".join(json.dumps(k, sort_keys=True, separators=(",", ":")) for k in keys)
            head = json.dumps({k: v for k, v in doc.items() if k != "keys"}, sort_keys=True)
            f.write(head[:-1] + ',\n"keys":[\n' + keys_json + "\n]}\n")
    finally:
        stop(proc, c)
        shutil.rmtree(work, ignore_errors=True)
    size = os.path.getsize(os.path.join(out_dir, name + ".rdb"))
    print("%-22s %4d keys  %7d bytes" % (name, len(keys), size))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, ".test-servers", "bin"))
    ap.add_argument("--out", default=os.path.join(ROOT, "crates", "rdb", "tests", "fixtures"))
    ap.add_argument("--only", nargs="*", help="fixture names to (re)generate")
    ap.add_argument("--server", help="one server executable instead of --bin-dir")
    ap.add_argument("--name", help="fixture name for --server, e.g. 7.0.15 or valkey-9.0.0")
    ap.add_argument("--port", type=int, default=PORT_BASE)
    args = ap.parse_args()

    if args.server:
        generate(args.server, args.name, args.out, args.port)
        return
    jobs = []
    for exe in sorted(os.listdir(args.bin_dir)):
        name = exe[len("redis-"):] if exe.startswith("redis-") else exe
        jobs.append((os.path.join(args.bin_dir, exe), name, None, None))
    for name, (exe, variant) in VARIANTS.items():
        base = exe[len("redis-"):] if exe.startswith("redis-") else exe
        if os.path.exists(os.path.join(args.bin_dir, exe)):
            jobs.append((os.path.join(args.bin_dir, exe), name, variant, base))
    for i, (exe, name, variant, base) in enumerate(jobs):
        if args.only and name not in args.only:
            continue
        generate(exe, name, args.out, args.port + i, variant, base)


if __name__ == "__main__":
    sys.exit(main())
