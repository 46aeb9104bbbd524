#!/usr/bin/env python3
"""Baseline for the verify benchmark: the same comparison written the usual
way, with redis-py pipelines and one process per source master.

usage: bench-verify-baseline.py quick|full TARGET_SEED SOURCE_MASTER...

Per batch of SCAN (COUNT 1000): pipeline TYPE + PTTL on both sides; then the
length (quick) or the whole value (full: GET/LRANGE/SMEMBERS/ZRANGE WITHSCORES/
HGETALL/XRANGE, plus XINFO GROUPS and XPENDING per group) on both sides.
Prints one line: keys, differences, seconds.
"""
import sys
import time
from multiprocessing import Pool

import redis
from redis.cluster import RedisCluster

LEN = {b"string": "STRLEN", b"list": "LLEN", b"set": "SCARD", b"zset": "ZCARD",
       b"hash": "HLEN", b"stream": "XLEN"}


def fetch(p, t, k):
    if t == b"string":
        p.execute_command("GET", k)
    elif t == b"list":
        p.execute_command("LRANGE", k, 0, -1)
    elif t == b"set":
        p.execute_command("SMEMBERS", k)
    elif t == b"zset":
        p.execute_command("ZRANGE", k, 0, -1, "WITHSCORES")
    elif t == b"hash":
        p.execute_command("HGETALL", k)
    else:
        p.execute_command("XRANGE", k, "-", "+")
        p.execute_command("XINFO", "GROUPS", k)


def norm(t, v):
    if t == b"set":
        return sorted(v)
    if t == b"hash":
        return sorted(v.items()) if isinstance(v, dict) else sorted(zip(v[::2], v[1::2]))
    return v


def one_master(args):
    mode, target_seed, master = args
    th, tp = target_seed.rsplit(":", 1)
    sh, sp = master.rsplit(":", 1)
    src = redis.Redis(host=sh, port=int(sp))
    dst = RedisCluster(host=th, port=int(tp))
    keys = diffs = 0
    cursor = 0
    while True:
        cursor, batch = src.scan(cursor, count=1000)
        if batch:
            keys += len(batch)
            sides = []
            for conn in (src, dst):
                p = conn.pipeline(transaction=False) if conn is src else conn.pipeline()
                for k in batch:
                    p.execute_command("TYPE", k)
                    p.execute_command("PTTL", k)
                sides.append(p.execute(raise_on_error=False))
            s, d = sides
            types = []
            for i, k in enumerate(batch):
                st, dt = s[2 * i], d[2 * i]
                if st != dt or abs((s[2 * i + 1] or 0) - (d[2 * i + 1] or 0)) > 2000:
                    diffs += 1
                types.append(st)
            sides = []
            for conn in (src, dst):
                p = conn.pipeline(transaction=False) if conn is src else conn.pipeline()
                for k, t in zip(batch, types):
                    if mode == "quick":
                        p.execute_command(LEN.get(t, "EXISTS"), k)
                    else:
                        fetch(p, t, k)
                sides.append(p.execute(raise_on_error=False))
            s, d = sides
            if mode == "quick":
                diffs += sum(1 for a, b in zip(s, d) if a != b)
            else:
                i = 0
                groups = []
                for k, t in zip(batch, types):
                    if t == b"stream":
                        if s[i] != d[i] or s[i + 1] != d[i + 1]:
                            diffs += 1
                        for g in s[i + 1] or []:
                            name = g[b"name"] if isinstance(g, dict) else g[1]
                            groups.append((k, name))
                        i += 2
                    else:
                        if norm(t, s[i]) != norm(t, d[i]):
                            diffs += 1
                        i += 1
                sides = []
                for conn in (src, dst):
                    p = conn.pipeline(transaction=False) if conn is src else conn.pipeline()
                    for k, g in groups:
                        p.xpending_range(k, g, "-", "+", 1000)
                    sides.append(p.execute(raise_on_error=False))
                s, d = sides
                for a, b in zip(s, d):
                    key = lambda e: (e["message_id"], e["consumer"], e["times_delivered"])
                    if [key(e) for e in a] != [key(e) for e in b]:
                        diffs += 1
        if cursor == 0:
            break
    return keys, diffs


def main():
    mode, target_seed, masters = sys.argv[1], sys.argv[2], sys.argv[3:]
    started = time.time()
    with Pool(len(masters)) as pool:
        results = pool.map(one_master, [(mode, target_seed, m) for m in masters])
    seconds = time.time() - started
    keys = sum(r[0] for r in results)
    diffs = sum(r[1] for r in results)
    print(f"baseline {mode}: {keys} keys, {diffs} differences, {seconds:.2f}s, {keys / seconds:.0f} keys/s")


if __name__ == "__main__":
    main()
