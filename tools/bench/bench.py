#!/usr/bin/env python3
"""smtarpit's cost per held connection, measured on loopback.

Starts the release daemon once per scenario, floods it with `smtarpit-flood`,
and reads what the kernel says about the daemon: RSS and anonymous memory
(smaps_rollup, smaps), CPU time (schedstat and utime+stime), time spent
waiting for a CPU, kernel socket memory (`ss -tm`, /proc/net/sockstat), and
the daemon's own `event=stats` record (timer fires, bytes sent, lateness).
Prints a Markdown table of metric, value, target and whether it was met,
then the per-scenario details. See tools/README.md.

Scenarios:
  silent N  N clients that connect and only read. The daemon greets them and
            waits for a command: no trickle, one idle timer each (1h).
  bot N     N bots that have sent EHLO, MAIL and RCPT and wait for the RCPT
            reply, which is trickled one byte per second for an hour. They
            get there through a fast envelope phase (reply-time 0, whole
            filler lines per fire), then two SIGHUP reloads make every reply
            from then on last an hour, one byte a second (see README).
  burst B   B silent clients connecting as fast as one flood process can
            (--rate 0): how long the daemon takes to accept and banner them.

Not part of `cargo test`: it needs minutes, many descriptors and a quiet
machine. Run as root or as a user whose hard RLIMIT_NOFILE covers N.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The targets of DESIGN.md "Cost per connection" and issue 4.
RSS_SILENT_MAX = 96  # bytes per held silent connection
RSS_BOT_MAX = 256  # bytes per held bot that has sent its envelope
CPU_WRITE_MAX_US = 10.0  # CPU per trickled write
FLAT_MAX = 0.20  # per-write cost at the largest N within 20% of the smallest
LATE_P99_MAX = 5  # ms
LATE_MAX_MAX = 50  # ms
BURST_MAX_MS = 1000  # accept and banner a burst within this

# Kernel slab caches a held TCP connection occupies (per end of the
# connection; loopback holds both ends, the flood's and the daemon's).
SLAB_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq")

LINE = re.compile(rb'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- what /proc says ---------------------------------------------------------


def rss_bytes(pid, anon=False):
    """Resident memory: smaps_rollup's Rss (exact sum), else VmRSS. With
    `anon`, only anonymous memory (heap, mmapped Vecs, stack): without the
    pages of code and libraries that fault in when a path first runs."""
    if anon:
        keys = (("smaps_rollup", "Anonymous:"), ("status", "RssAnon:"))
    else:
        keys = (("smaps_rollup", "Rss:"), ("status", "VmRSS:"))
    for name, key in keys:
        path = f"/proc/{pid}/{name}"
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    raise RuntimeError(f"cannot read the RSS of {pid}")


def cpu_seconds(pid):
    """(schedstat run time, utime+stime) in seconds. schedstat counts
    nanoseconds; the stat ticks are 1/CLK_TCK s (10 ms here), so schedstat is
    the one to divide by small numbers of writes."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            sched = int(f.read().split()[0]) / 1e9
    except OSError:
        sched = ticks
    return sched, ticks


def run_delay(pid):
    """Seconds spent runnable but waiting for a CPU (schedstat field 2)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError):
        return 0.0


def rss_by_mapping(pid):
    """Rss of the heap, of anonymous mappings (large Vecs are mmapped) and
    of the rest (code, libraries, stack), from /proc/PID/smaps."""
    out = {"heap": 0, "anon": 0, "other": 0}
    kind = "other"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 6)
                if re.match(r"^[0-9a-f]+-[0-9a-f]+$", first[0]):
                    name = first[5].strip() if len(first) > 5 else ""
                    kind = "heap" if name == "[heap]" else "anon" if name == "" else "other"
                elif first[0] == "Rss:":
                    out[kind] += int(first[1]) * 1024
    except OSError:
        pass
    return out


def ctx_switches(pid):
    """(voluntary, involuntary) context switches so far."""
    v = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                k, n = line.split(":")
                v[k] = int(n)
    return v.get("voluntary_ctxt_switches", 0), v.get("nonvoluntary_ctxt_switches", 0)


def sockstat():
    """TCP line of /proc/net/sockstat: inuse, orphan, tw, alloc, mem (pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()[1:]
                return {p[i]: int(p[i + 1]) for i in range(0, len(p), 2)}
    return {}


def slab_bytes():
    """Bytes in active objects of the caches a connection uses (root only)."""
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in SLAB_CACHES:
                    out[p[0]] = int(p[1]) * int(p[3])
    except OSError:
        return None
    return out


SKMEM = re.compile(r"skmem:\(([^)]*)\)")


def socket_memory(port):
    """The daemon's end of every connection to `port`, from `ss -tmn`:
    (sockets, bytes charged (rmem_alloc + wmem_queued + forward_alloc),
    typical receive and send buffer limits)."""
    try:
        out = subprocess.run(
            ["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    n, charged, rb, tb = 0, 0, {}, {}
    for m in SKMEM.finditer(out):
        f = dict(re.match(r"([a-z]+)(\d+)", x).groups() for x in m.group(1).split(","))
        n += 1
        charged += int(f["r"]) + int(f["w"]) + int(f["f"])
        rb[f["rb"]] = rb.get(f["rb"], 0) + 1
        tb[f["tb"]] = tb.get(f["tb"], 0) + 1
    common = lambda d: int(max(d, key=d.get)) if d else None
    return {"sockets": n, "charged": charged, "rcvbuf": common(rb), "sndbuf": common(tb)}


def slab_sizes():
    """Object size of each cache a connection end occupies."""
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in SLAB_CACHES:
                    out[p[0]] = int(p[3])
    except OSError:
        return None
    return out


def free_port():
    """A free loopback port below the ephemeral range the flood's sources use."""
    for port in range(24250, 24750):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in 24250-24749")


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    import resource

    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": cpu,
        "mem_gib": mem,
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "loadavg": os.getloadavg(),
    }


# --- the daemon's log ----------------------------------------------------------


def ts_ms(value):
    """`2026-12-04T16:18:57.201Z` as milliseconds since the epoch."""
    d = datetime.datetime.strptime(value.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


class Log:
    """Follows the daemon's log file and keeps what the benchmark asks."""

    def __init__(self, path):
        self.f = open(path, "rb")
        self.rest = b""
        self.accepts = 0
        self.first_accept = None
        self.last_accept = None
        self.closes = 0
        self.cmds = 0
        self.rcpt_ids = set()
        self.last_cmd = time.monotonic()
        self.stats = []
        self.reloaded = 0
        self.serving = False
        self.warnings = []

    def poll(self):
        data = self.f.read()
        if not data:
            return
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            self.line(line)

    def line(self, line):
        if b" event=accept " in line:
            self.accepts += 1
            t = ts_ms(line[3:27])
            self.first_accept = self.first_accept or t
            self.last_accept = t
        elif b" event=cmd " in line:
            self.cmds += 1
            self.last_cmd = time.monotonic()
            if b' verb="RCPT"' in line:
                self.rcpt_ids.add(line.split(b" id=", 1)[1].split(b" ", 1)[0])
        elif b" event=close " in line:
            self.closes += 1
        elif b" event=stats " in line:
            rec = {k.decode(): v.decode() for k, v in LINE.findall(line)}
            self.stats.append({k: int(v) for k, v in rec.items() if v.isdigit()})
        elif b" level=" in line:
            if b'msg="reloaded"' in line:
                self.reloaded += 1
            elif b'msg="serving"' in line:
                self.serving = True
            elif b" level=warn" in line or b" level=error" in line:
                self.warnings.append(line.decode(errors="replace"))


def pinned(cpus, nice=0, fifo=False):
    """A preexec_fn that sets the child's CPU affinity (None: leave it),
    niceness, or real-time priority (SCHED_FIFO 1)."""
    if not cpus and not nice and not fifo:
        return None

    def setup():
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.nice(nice)
        if fifo:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))

    return setup


def cpu_sets(opts):
    """With --pin: the daemon on the first CPU, the floods on the others."""
    if not opts.pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[0]}, set(cpus[1:]) or {cpus[0]}


class Daemon:
    """One smtarpit process, its configuration file (live settings, so a
    SIGHUP can change them) and its log (standard error, to a file)."""

    def __init__(self, bindir, workdir, name, port, live, cpus=None, nice=0, fifo=False):
        self.workdir = workdir
        self.conf = workdir / f"{name}.conf"
        self.log_path = workdir / f"{name}.log"
        self.write_conf(live)
        args = [
            str(bindir / "smtarpit"),
            "-l", f"127.0.0.1:{port}",
            "--no-chroot",
            "--max-per-ip", "0",
            "--max-session", "1h",
            "--idle-timeout", "1h",
            "--human-threshold", "2s",
            "--hostname", "bench.invalid",
            "-f", str(self.conf),
        ]  # fmt: skip
        self.cmdline = " ".join(args)
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=pinned(cpus, nice, fifo)
            )
        self.pid = self.proc.pid
        self.log = Log(self.log_path)
        self.wait_for(lambda: self.log.serving, 10, "the daemon to serve")

    def write_conf(self, live):
        # The daemon drops to `nobody` when started as root: it must still be
        # able to read the file on SIGHUP.
        text = "".join(f"{k} = {v}\n" for k, v in live.items())
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.conf)

    def wait_for(self, cond, timeout, what):
        end = time.monotonic() + timeout
        while True:
            self.log.poll()
            if cond():
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}); see {self.log_path}")
            if time.monotonic() > end:
                log(f"gave up waiting for {what} after {timeout:.0f}s")
                return False
            time.sleep(0.2)

    def reload(self, live):
        self.write_conf(live)
        n = self.log.reloaded
        os.kill(self.pid, signal.SIGHUP)
        if not self.wait_for(lambda: self.log.reloaded > n, 10, "the reload"):
            raise RuntimeError(f"the daemon did not reload; see {self.log_path}")

    def stats(self):
        n = len(self.log.stats)
        os.kill(self.pid, signal.SIGUSR1)
        if not self.wait_for(lambda: len(self.log.stats) > n, 20, "the stats record"):
            raise RuntimeError("no stats record")
        return self.log.stats[-1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.poll()


class Flood:
    """One smtarpit-flood process; its JSON summary when it ends."""

    def __init__(self, bindir, workdir, name, args, cpus=None):
        self.out = workdir / f"{name}.json"
        self.err = workdir / f"{name}.err"
        self.args = [str(bindir / "smtarpit-flood")] + args
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=o, stderr=e, preexec_fn=pinned(cpus)
            )

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=60):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            return json.loads(self.out.read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            log(f"no summary from {' '.join(self.args)}: {self.err.read_text()[-500:]}")
            return None


def split(n, per):
    k = max(1, math.ceil(n / per))
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def total(summaries, *path):
    s = 0
    for j in summaries:
        if j is None:
            continue
        v = j["total"]
        for p in path:
            v = v[p]
        s += v or 0
    return s


# --- scenarios -------------------------------------------------------------------

# Live settings (reloadable by SIGHUP). Every held machine's trickle fires
# once a second, exactly: 1s-1s.
STEADY = {"trickle": "1s-1s", "trickle-bytes": "1", "reply-time": "1h"}
# The bots' envelope phase: each reply is one whole filler line in one fire,
# then its final line at the next, so EHLO, MAIL, RCPT take about 2 s each.
ENVELOPE = {"trickle": "1s-1s", "trickle-bytes": "64", "reply-time": "0"}


def held(opts, kind, n, index):
    name = f"{kind}-{n}"
    log(f"== {name}: {n} {kind} clients, steady window {opts.window}s")
    port = free_port()
    dcpu, fcpu = cpu_sets(opts)
    live = ENVELOPE if kind == "bot" else STEADY
    daemon = Daemon(opts.bindir, opts.workdir, name, port, live, dcpu, opts.nice, opts.fifo)
    floods = []
    r = {"kind": kind, "n": n, "daemon": daemon.cmdline, "log": str(daemon.log_path)}
    try:
        time.sleep(1)
        r["rss_idle"] = rss_bytes(daemon.pid)
        r["anon_idle"] = rss_bytes(daemon.pid, anon=True)
        r["maps_idle"] = rss_by_mapping(daemon.pid)
        sock0, slab0 = sockstat(), slab_bytes()
        parts = split(n, opts.per_flood)
        for i, c in enumerate(parts):
            base = f"127.{index * 8 + i + 1}.0.1"
            args = [
                "--count", str(c),
                "--rate", str(max(1, opts.rate // len(parts))),
                "--sources", "64", "--source-base", base,
                "--timeout", "1h", "--hold", "1h", "--json",
            ]  # fmt: skip
            args += ["--mix", "bot=1", "--rcpts", "1000"] if kind == "bot" else ["--mix", "silent=1"]
            args.append(f"127.0.0.1:{port}")
            floods.append(Flood(opts.bindir, opts.workdir, f"{name}-flood{i}", args, fcpu))
        r["flood"] = " ".join(floods[0].args[1:])
        r["floods"] = len(floods)
        t0 = time.monotonic()
        ramp = n / opts.rate + 60
        daemon.wait_for(lambda: daemon.log.accepts >= n, ramp, f"{n} accepts")
        r["ramp_s"] = round(time.monotonic() - t0, 1)
        log(f"{daemon.log.accepts} accepted in {r['ramp_s']}s")
        if kind == "bot":
            # Every bot in its RCPT loop; then replies of an hour, whole lines
            # a fire, until every one has started such a reply (its next
            # command, then quiet); then one byte a fire.
            daemon.wait_for(lambda: len(daemon.log.rcpt_ids) >= n, 60, f"{n} bots at RCPT")
            log(f"{len(daemon.log.rcpt_ids)} bots have sent RCPT; replies of an hour from now")
            daemon.reload({**ENVELOPE, "reply-time": "1h"})
            time.sleep(2)
            daemon.wait_for(lambda: time.monotonic() - daemon.log.last_cmd > 3, 30, "the commands to stop")
            daemon.reload(STEADY)
            r["cmds"] = daemon.log.cmds
        time.sleep(opts.settle)
        if not all(f.alive() for f in floods):
            raise RuntimeError("a flood process ended early; see " + str(opts.workdir))

        # The steady window.
        s0 = daemon.stats()
        cpu0 = cpu_seconds(daemon.pid)
        cs0 = ctx_switches(daemon.pid)
        wait0 = run_delay(daemon.pid)
        fcpu0 = sum(cpu_seconds(f.proc.pid)[0] for f in floods)
        r["rss_start"] = rss_bytes(daemon.pid)
        t0 = time.monotonic()
        perf = None
        if opts.perf and kind == "bot" and n == max(opts.counts):
            out = opts.workdir / f"perf-{name}.data"
            perf = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g", "-o", str(out), "-p", str(daemon.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            r["perf"] = str(out)
        series = []
        if opts.stats_every > 0:
            # Lateness is cumulative: samples during the window show when the
            # maximum moved.
            end = t0 + opts.window
            while time.monotonic() + opts.stats_every < end:
                time.sleep(opts.stats_every)
                st = daemon.stats()
                at = round(time.monotonic() - t0, 1)
                series.append([at, st["timer_fires"] - s0["timer_fires"], st["late_p99_ms"], st["late_max_ms"]])
            time.sleep(max(0, end - time.monotonic()))
        else:
            time.sleep(opts.window)
        r["late_series"] = series
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        s1 = daemon.stats()
        cpu1 = cpu_seconds(daemon.pid)
        cs1 = ctx_switches(daemon.pid)
        wait1 = run_delay(daemon.pid)
        fcpu1 = sum(cpu_seconds(f.proc.pid)[0] for f in floods)
        w = time.monotonic() - t0
        r["rss_held"] = rss_bytes(daemon.pid)
        r["anon_held"] = rss_bytes(daemon.pid, anon=True)
        r["maps_held"] = rss_by_mapping(daemon.pid)
        sock1, slab1 = sockstat(), slab_bytes()
        r["skmem"] = socket_memory(port)

        r["window_s"] = round(w, 2)
        r["clients"] = s1.get("clients")
        r["cpu_s"] = cpu1[0] - cpu0[0]
        r["cpu_ticks_s"] = cpu1[1] - cpu0[1]
        r["flood_cpu_s"] = fcpu1 - fcpu0
        r["ctx_voluntary"] = cs1[0] - cs0[0]
        r["ctx_involuntary"] = cs1[1] - cs0[1]
        r["fires"] = s1["timer_fires"] - s0["timer_fires"]
        r["bytes_sent_window"] = s1.get("bytes_sent", 0) - s0.get("bytes_sent", 0)
        r["late"] = [s1["late_p50_ms"], s1["late_p99_ms"], s1["late_max_ms"]]
        r["late_before_window"] = [s0["late_p50_ms"], s0["late_p99_ms"], s0["late_max_ms"]]
        r["run_delay_s"] = wait1 - wait0
        r["fires_total"] = s1["timer_fires"]
        r["sock_mem_pages"] = sock1.get("mem", 0) - sock0.get("mem", 0)
        r["sock_inuse"] = sock1.get("inuse", 0) - sock0.get("inuse", 0)
        if slab0 is not None:
            r["slab"] = {k: slab1.get(k, 0) - slab0.get(k, 0) for k in SLAB_CACHES}
    finally:
        summaries = [f.stop() for f in floods]
        daemon.stop()
    r["established"] = total(summaries, "established")
    r["failed"] = sum(sum(j["total"]["failed"].values()) for j in summaries if j)
    r["held_p50_s"] = max((j["total"]["held_ms"]["p50"] or 0) / 1000 for j in summaries if j) if any(summaries) else 0
    r["server_closed"] = total(summaries, "ends", "server_closed") + total(summaries, "ends", "server_reset")
    r["stages"] = {k: total(summaries, "stages", k) for k in ("connect", "banner", "ehlo", "mail", "rcpt", "data")}
    r["warnings"] = daemon.log.warnings[:5]
    derive(r)
    log(
        f"{name}: RSS {r['rss_per_conn']:.1f} B/conn, CPU {r['cpu_s']:.3f}s "
        f"({r['cpu_per_write_us'] or 0:.2f} us/write), late {r['late']}"
    )
    return r


def derive(r):
    n = r["clients"] or r["n"]
    r["rss_per_conn"] = (r["rss_held"] - r["rss_idle"]) / n
    r["rss_drift"] = r["rss_held"] - r["rss_start"]
    r["anon_per_conn"] = (r["anon_held"] - r["anon_idle"]) / n
    r["rss_per_conn_by_mapping"] = {k: (r["maps_held"][k] - r["maps_idle"][k]) / n for k in r["maps_held"]}
    r["sock_mem_per_conn"] = r["sock_mem_pages"] * PAGE / n
    sk = r.get("skmem")
    r["skmem_per_conn"] = sk["charged"] / sk["sockets"] if sk and sk["sockets"] else None
    r["cpu_ms_per_1000_min"] = r["cpu_s"] * 1000 / (n / 1000) / (r["window_s"] / 60)
    r["cpu_per_write_us"] = r["cpu_s"] / r["fires"] * 1e6 if r["fires"] else None
    if r.get("slab"):
        r["slab_per_conn"] = sum(r["slab"].values()) / n


def burst(opts, index):
    b = opts.burst
    log(f"== burst: {b} silent clients at --rate 0")
    port = free_port()
    dcpu, fcpu = cpu_sets(opts)
    daemon = Daemon(opts.bindir, opts.workdir, f"burst-{b}", port, STEADY, dcpu, opts.nice, opts.fifo)
    r = {"kind": "burst", "n": b, "daemon": daemon.cmdline, "log": str(daemon.log_path)}
    try:
        time.sleep(1)
        cpu0 = cpu_seconds(daemon.pid)
        args = [
            "--count", str(b), "--rate", "0", "--mix", "silent=1",
            "--sources", "200", "--source-base", f"127.{index * 8 + 1}.0.1",
            "--hold", "5s", "--timeout", "1h", "--json", f"127.0.0.1:{port}",
        ]  # fmt: skip
        launched = time.time() * 1000
        flood = Flood(opts.bindir, opts.workdir, f"burst-{b}-flood", args, fcpu)
        r["flood"] = " ".join(args)
        try:
            flood.proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
        summary = flood.stop()
        s = daemon.stats()
        cpu1 = cpu_seconds(daemon.pid)
    finally:
        daemon.stop()
    r["accepted"] = s["accepted"]
    r["accept_span_ms"] = (daemon.log.last_accept or 0) - (daemon.log.first_accept or 0)
    r["launch_to_last_ms"] = (daemon.log.last_accept or launched) - launched
    r["cpu_s"] = cpu1[0] - cpu0[0]
    r["cpu_per_accept_us"] = r["cpu_s"] / max(1, s["accepted"]) * 1e6
    r["late"] = [s["late_p50_ms"], s["late_p99_ms"], s["late_max_ms"]]
    g = summary["total"] if summary else {}
    r["established"] = g.get("established", 0)
    r["failed"] = sum(g.get("failed", {}).values())
    r["no_banner"] = g.get("stages", {}).get("connect", b)
    r["ttfb_p50"] = g.get("ttfb_ms", {}).get("p50")
    r["ttfb_p99"] = g.get("ttfb_ms", {}).get("p99")
    r["warnings"] = daemon.log.warnings[:5]
    log(f"burst: {r['accepted']} accepted over {r['accept_span_ms']} ms, ttfb p99 {r['ttfb_p99']} ms")
    return r


# --- the report --------------------------------------------------------------------


def yes(ok):
    return "yes" if ok else "**no**"


def fmt_n(n):
    return f"{n:,}"


def report(results, opts, mach, failures=()):
    rows = []

    def row(metric, value, target="—", ok=None):
        rows.append((metric, value, target, "" if ok is None else yes(ok)))

    by = {(r["kind"], r["n"]): r for r in results}
    counts = sorted(opts.counts)
    first, last = counts[0], counts[-1]
    span = f"N={fmt_n(first)}→{fmt_n(last)}"
    for kind, limit, what in (
        ("silent", RSS_SILENT_MAX, "silent"),
        ("bot", RSS_BOT_MAX, "bot (EHLO, MAIL, RCPT sent)"),
    ):
        for key, label in (
            ("rss_per_conn", "RSS growth per held connection"),
            ("anon_per_conn", "anonymous memory growth per held connection (no code pages)"),
        ):
            for n in counts:
                if r := by.get((kind, n)):
                    v = r[key]
                    row(f"{label}, {what}, N={fmt_n(n)}", f"{v:.1f} B", f"≤ {limit} B", v <= limit)
        lo, hi = by.get((kind, first)), by.get((kind, last))
        if lo and hi and lo is not hi:
            grown = hi["rss_held"] - lo["rss_held"] - (hi["rss_idle"] - lo["rss_idle"])
            m = grown / (hi["clients"] - lo["clients"])
            row(f"RSS per connection, {what}, marginal {span}", f"{m:.1f} B", f"≤ {limit} B", m <= limit)
    for n in counts:
        r = by.get(("bot", n))
        if r and r["cpu_per_write_us"] is not None:
            v = r["cpu_per_write_us"]
            row(f"CPU per trickled write, bot, N={fmt_n(n)}", f"{v:.2f} µs", f"≤ {CPU_WRITE_MAX_US:g} µs",
                v <= CPU_WRITE_MAX_US)
    lo, hi = by.get(("bot", first)), by.get(("bot", last))
    if lo and hi and lo is not hi and lo["cpu_per_write_us"] and hi["cpu_per_write_us"]:
        ratio = hi["cpu_per_write_us"] / lo["cpu_per_write_us"]
        flat = abs(ratio - 1) <= FLAT_MAX
        rows.append((
            f"per-write cost, N={fmt_n(last)} ÷ N={fmt_n(first)}",
            f"{ratio:.2f}",
            f"{1 - FLAT_MAX:.2f}–{1 + FLAT_MAX:.2f}",
            yes(flat) + ("" if flat or ratio > 1 else " (cheaper at scale)"),
        ))
    for kind in ("silent", "bot"):
        for n in counts:
            if r := by.get((kind, n)):
                row(f"CPU per 1,000 held per minute, {kind}, N={fmt_n(n)}", f"{r['cpu_ms_per_1000_min']:.2f} ms")
    for n in counts:
        if r := by.get(("bot", n)):
            p50, p99, mx = r["late"]
            where = f"bot, N={fmt_n(n)} (whole run)"
            row(f"timer lateness p50 / p99, {where}", f"{p50} / {p99} ms", f"p99 ≤ {LATE_P99_MAX} ms",
                p99 <= LATE_P99_MAX)
            row(f"timer lateness max, {where}", f"{mx} ms", f"≤ {LATE_MAX_MAX} ms", mx <= LATE_MAX_MAX)
    for kind in ("silent", "bot"):
        for n in counts:
            r = by.get((kind, n))
            if r and r.get("skmem_per_conn") is not None:
                sk = r["skmem"]
                row(f"kernel socket buffers per connection, daemon's end (ss -tm), {kind}, N={fmt_n(n)}",
                    f"{r['skmem_per_conn']:.1f} B (limits rcvbuf {sk['rcvbuf']}, sndbuf {sk['sndbuf']})")
            if r:
                row(f"kernel TCP memory per connection, /proc/net/sockstat delta (both ends, machine-wide), "
                    f"{kind}, N={fmt_n(n)}", f"{r['sock_mem_per_conn']:.1f} B")
    if r := by.get(("burst", opts.burst)):
        b, p99 = opts.burst, r["ttfb_p99"]
        row(f"burst of {fmt_n(b)} connects: accepted", fmt_n(r["accepted"]), fmt_n(b), r["accepted"] >= b)
        row("burst: first to last accept (daemon's records)", f"{r['accept_span_ms']} ms", f"≤ {BURST_MAX_MS} ms",
            r["accepted"] >= b and r["accept_span_ms"] <= BURST_MAX_MS)
        row("burst: clients with no banner byte", fmt_n(r["no_banner"]), "0",
            r["no_banner"] == 0 and r["established"] >= b)
        row("burst: connect → banner p50 / p99 (flood)", f"{r['ttfb_p50']} / {p99} ms", f"p99 ≤ {BURST_MAX_MS} ms",
            p99 is not None and p99 <= BURST_MAX_MS)
        row("burst: daemon CPU per accepted connection", f"{r['cpu_per_accept_us']:.1f} µs")

    out = []
    out.append("| metric | value | target | met? |")
    out.append("|---|---|---|---|")
    for m, v, t, ok in rows:
        out.append(f"| {m} | {v} | {t} | {ok} |")
    out.append("")
    columns = (
        "scenario", "held", "idle RSS", "held RSS", "growth per conn: heap / anon maps / other",
        "RSS drift in window", "CPU in window (ticks)", "timer fires", "waited for a CPU",
        "context switches vol. / invol.", "lateness p50/p99/max: before window → end", "flood CPU",
    )  # fmt: skip
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "---|" * len(columns))
    for r in results:
        if r["kind"] == "burst":
            continue
        late = (
            "/".join(map(str, r["late_before_window"])) + " → " + "/".join(map(str, r["late"])) + " ms"
            if r["fires_total"]
            else "no fires"
        )
        m = r["rss_per_conn_by_mapping"]
        out.append(
            f"| {r['kind']} {fmt_n(r['n'])} | {fmt_n(r['clients'] or 0)} "
            f"| {r['rss_idle'] / 1024:.0f} KiB | {r['rss_held'] / 1024:.0f} KiB "
            f"| {m['heap']:.1f} / {m['anon']:.1f} / {m['other']:.1f} B | {r['rss_drift']:+d} B "
            f"| {r['cpu_s']:.3f} s ({r['cpu_ticks_s']:.2f} s) in {r['window_s']:.0f} s | {fmt_n(r['fires'])} "
            f"| {r['run_delay_s']:.3f} s | {fmt_n(r['ctx_voluntary'])} / {fmt_n(r['ctx_involuntary'])} "
            f"| {late} | {r['flood_cpu_s']:.2f} s |"
        )
    for r in results:
        prev = (r.get("late_before_window") or [0, 0, 0])[2]
        moves = []
        for t, _fires, _p99, mx in r.get("late_series") or []:
            if mx > prev:
                moves.append(f"{mx} ms by {t:.0f} s")
                prev = mx
        if moves:
            out.append("")
            out.append(f"{r['kind']} {fmt_n(r['n'])}: lateness maximum rose in the window to " + ", ".join(moves) + ".")
    sizes = slab_sizes()
    if sizes:
        out.append("")
        out.append("Kernel objects per connection end, by /proc/slabinfo object size (not measured per run: "
                   "the machine's other sockets move the totals): "
                   + " + ".join(f"{k} {v}" for k, v in sizes.items()) + f" = {sum(sizes.values())} B.")
    out.append("")
    for r in results:
        short = r["established"] < r["n"] or (r["kind"] != "burst" and (r["clients"] != r["n"] or r["server_closed"]))
        if short:
            out.append(f"Warning: {r['kind']} {fmt_n(r['n'])}: established {fmt_n(r['established'])}, "
                       f"held at the end {fmt_n(r.get('clients') or 0)}, closed by the server {r.get('server_closed', 0)}.")
    for f in failures:
        out.append(f"Failed: {f}")
    out.append(f"Daemon binary: {mach.get('binary', '?')}.")
    out.append(f"Machine: {mach['nproc']} CPUs ({mach['cpu']}), Linux {mach['kernel']}, {mach['mem_gib']} GiB, "
               f"open files {mach['nofile_hard']}, load average at start {mach['loadavg'][0]:.2f}.")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(
        description="Measure smtarpit's memory, CPU and timer lateness per held connection (see tools/README.md).",
    )
    p.add_argument("--counts", default=None, help="held connections per scenario, comma-separated (default 1000,18000)")
    p.add_argument("--window", type=float, default=None, help="steady window in seconds, once all are held (default 60)")
    p.add_argument("--scenarios", default="silent,bot,burst", help="any of silent, bot, burst (default all)")
    p.add_argument("--burst", type=int, default=None, help="connects in the burst scenario (default 10000)")
    p.add_argument("--rate", type=int, default=2000, help="connects per second while ramping up, over all flood processes (default 2000)")
    p.add_argument("--per-flood", type=int, default=19000, help="connections per flood process (default 19000)")
    p.add_argument("--settle", type=float, default=3, help="seconds between the last set-up step and the window (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: --counts 200,1000 --window 10 --burst 2000 unless given")
    p.add_argument("--bin-dir", help="where smtarpit and smtarpit-flood are (default: build target/release)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release --workspace first")
    p.add_argument("--work-dir", help="logs, configurations and flood summaries (default: a new directory in /tmp)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--pin", action="store_true", help="pin the daemon to the first CPU and the flood processes to the others")
    p.add_argument("--nice", type=int, default=0,
                   help="run the daemon at this niceness (negative needs root)")
    p.add_argument("--fifo", action="store_true",
                   help="run the daemon as SCHED_FIFO 1 (root): its lateness without waiting behind other processes")
    p.add_argument("--stats-every", type=float, default=0,
                   help="a stats record every this many seconds of the window, to see when the lateness maximum moved")
    p.add_argument("--perf", action="store_true",
                   help="perf record -e cpu-clock -g the daemon during the largest bot window (perturbs its CPU figures)")
    opts = p.parse_args()
    quick = {"counts": "200,1000", "window": 10, "burst": 2000}
    full = {"counts": "1000,18000", "window": 60, "burst": 10000}
    for k, v in (quick if opts.quick else full).items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    opts.counts = sorted(int(x) for x in opts.counts.split(","))
    opts.scenarios = opts.scenarios.split(",")
    for s in opts.scenarios:
        if s not in ("silent", "bot", "burst"):
            p.error(f"unknown scenario {s!r}")
    if opts.bin_dir:
        opts.bindir = Path(opts.bin_dir)
    else:
        opts.bindir = REPO / "target" / "release"
        if not opts.no_build:
            log("cargo build --release --workspace")
            subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=REPO, check=True)
    for b in ("smtarpit", "smtarpit-flood"):
        if not (opts.bindir / b).is_file():
            p.error(f"no {opts.bindir / b}")
    opts.workdir = Path(opts.work_dir or tempfile.mkdtemp(prefix="smtarpit-bench-"))
    opts.workdir.mkdir(parents=True, exist_ok=True)
    opts.workdir.chmod(0o755)  # the daemon rereads its configuration as nobody
    mach = machine()
    daemon_bin = opts.bindir / "smtarpit"
    built = datetime.datetime.fromtimestamp(daemon_bin.stat().st_mtime, datetime.timezone.utc)
    digest = hashlib.sha256(daemon_bin.read_bytes()).hexdigest()[:16]
    mach["binary"] = f"{daemon_bin} built {built:%Y-%m-%d %H:%M:%S} UTC, sha256 {digest}…"
    if max(opts.counts) + 64 > mach["nofile_hard"] and os.geteuid() != 0:
        log(f"warning: the open-file limit ({mach['nofile_hard']}) is below the largest count")
    log(f"work directory {opts.workdir}")

    results, failures = [], []
    plan = [(kind, n) for kind in ("silent", "bot") if kind in opts.scenarios for n in opts.counts]
    if "burst" in opts.scenarios:
        plan.append(("burst", opts.burst))
    for index, (kind, n) in enumerate(plan, 1):
        try:
            results.append(burst(opts, index) if kind == "burst" else held(opts, kind, n, index))
        except (RuntimeError, OSError, KeyError) as e:
            log(f"{kind} {n} failed: {e}")
            failures.append(f"{kind} {n}: {e}")
    table = report(results, opts, mach, failures)
    print(table)
    if opts.json:
        Path(opts.json).write_text(json.dumps({"machine": mach, "argv": sys.argv, "results": results}, indent=1))
    log(f"logs in {opts.workdir}")


if __name__ == "__main__":
    main()
