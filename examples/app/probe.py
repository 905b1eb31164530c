#!/usr/bin/env python3
"""Runs a command while GETting a URL every 20 ms, and says how long the URL went without a 200.

    examples/app/probe.py -- target/release/berth apply -f examples/app/
    examples/app/probe.py --url http://127.0.0.1:8080/healthz -- COMMAND...

Each probe is a new connection (as a new client's would be), with a 2 s timeout. Probing
starts before the command and goes on for --tail seconds after it exits, so an outage that
outlasts the command is seen whole. "Without a 200" is measured from the start of the first
probe that got no 200 to the start of the next probe that got one (resolution: the interval,
20 ms); a probe that hangs and then gets a 200 shows in "longest time between two 200
answers" (completion times; about one interval when nothing happens) and "slowest answer".
Prints a summary; exits with the command's exit code. Standard library only.
"""

import argparse
import http.client
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter


def probe(host, port, path, timeout):
    """The status of one GET, or None when nothing answered properly."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080/")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between probe starts (default 0.02)")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds one probe may take (default 2)")
    ap.add_argument("--tail", type=float, default=2.0, help="seconds to go on probing after the command (default 2)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command: probe.py [options] -- COMMAND...")
    url = urllib.parse.urlsplit(args.url)
    host, port, path = url.hostname, url.port or 80, url.path or "/"

    results = []  # (start, seconds taken, status)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            start = time.monotonic()
            status = probe(host, port, path, args.timeout)
            results.append((start, time.monotonic() - start, status))
            stop.wait(max(0.0, args.interval - (time.monotonic() - start)))

    t0 = time.monotonic()
    prober = threading.Thread(target=loop, daemon=True)
    prober.start()
    time.sleep(0.2)
    started = time.monotonic()
    code = subprocess.call(command)
    took = time.monotonic() - started
    time.sleep(args.tail)
    stop.set()
    prober.join()

    longest, stretch, down_since = 0.0, None, None
    for start, _, status in results:
        if status == 200:
            if down_since is not None and start - down_since > longest:
                longest, stretch = start - down_since, (down_since, start)
            down_since = None
        elif down_since is None:
            down_since = start
    if down_since is not None:
        end = results[-1][0] + results[-1][1]
        if end - down_since > longest:
            longest, stretch = end - down_since, (down_since, None)

    failed = Counter("none" if s is None else str(s) for _, _, s in results if s != 200)
    print(f"probe.py: {' '.join(command)}: exit {code} in {took:.2f} s", file=sys.stderr)
    print(
        f"probe.py: {len(results)} probes of {args.url} every {args.interval * 1000:.0f} ms; "
        f"not 200: {sum(failed.values())} ({', '.join(f'{k} x{v}' for k, v in sorted(failed.items())) or '-'})",
        file=sys.stderr,
    )
    where = ""
    if stretch:
        a, b = stretch
        where = f" (from +{a - started:.3f} s to " + (f"+{b - started:.3f} s)" if b else "the end)")
    print(f"probe.py: longest stretch without a 200: {longest * 1000:.0f} ms{where}", file=sys.stderr)
    # A probe that hangs and then gets its 200 is no outage above; between two 200 answers
    # (their completion times) it is: normally about one interval.
    done = [start + d for start, d, s in results if s == 200]
    gaps = [(b - a, a) for a, b in zip(done, done[1:])]
    if gaps:
        gap, at = max(gaps)
        print(
            f"probe.py: longest time between two 200 answers: {gap * 1000:.0f} ms (after +{at - started:.3f} s)",
            file=sys.stderr,
        )
    slow_start, slow, slow_status = max(results, key=lambda r: r[1])
    print(
        f"probe.py: slowest answer: {slow * 1000:.0f} ms ({slow_status or 'none'}, sent at +{slow_start - started:.3f} s)",
        file=sys.stderr,
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
