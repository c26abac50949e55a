#!/usr/bin/env bash
# A soak of the daemon under a mixed flood, with short timings so that every
# way a connection ends comes up many times. Not part of `cargo test`.
#
#   tools/soak.sh           rounds of 10,000 clients, 2,000 at once, for 10 minutes
#   tools/soak.sh --quick   rounds of 1,000 clients, 500 at once, for 1 minute
#
# It builds the release binaries, starts the daemon on 127.0.0.1 (a free
# port) with its records in a file, notes its open descriptors and memory,
# runs smtarpit-flood against it round after round until the time is up (a
# round of 10,000 takes about 3 minutes with these timings; the last one is
# cut short by --duration), waits for it to drain, asks for a stats
# record (SIGUSR1), stops it (SIGTERM) and checks:
#   - one close record for every accept record;
#   - open descriptors back to the baseline, memory back near it;
#   - every line of the log parses as logfmt and starts with ts=;
#   - no panic, and a clean exit.
# It prints the figures, and exits non-zero if a check failed. Everything it
# makes is in a temporary directory, kept and named at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

count=2000 total=10000 seconds=600
if [ "${1:-}" = --quick ]; then
    count=500 total=1000 seconds=60
elif [ $# -gt 0 ]; then
    echo "usage: $0 [--quick]" >&2
    exit 2
fi

cargo build --release -q -p smtarpit -p smtarpit-flood
bin=target/release/smtarpit
flood=target/release/smtarpit-flood

work=$(mktemp -d /tmp/smtarpit-soak.XXXXXX)
log=$work/smtarpit.log
"$bin" -l 127.0.0.1:0 --hostname soak.test --no-chroot \
    --trickle 100ms-300ms --reply-time 2s-5s --max-session 60s \
    --idle-timeout 20s --max-per-ip 0 --log-file "$log" &
pid=$!
# shellcheck disable=SC2317 # (called by the trap)
stop_daemon() { kill "$pid" 2>/dev/null || true; }
trap stop_daemon EXIT

for _ in $(seq 100); do
    grep -q 'msg="serving"' "$log" 2>/dev/null && break
    sleep 0.1
done
grep -q 'msg="serving"' "$log" || { echo "the daemon did not start:" >&2; cat "$log" >&2; exit 1; }
port=$(sed -n 's/.*msg="listening on 127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$log" | head -1)

fds() { find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
fd0=$(fds) rss0=$(rss)
echo "daemon pid $pid on 127.0.0.1:$port; baseline: $fd0 descriptors, VmRSS $rss0 KB"

# The peaks, sampled every second while the flood runs.
peaks=$work/peaks
(
    pfd=0 prss=0
    while kill -0 "$pid" 2>/dev/null; do
        f=$(fds) r=$(rss)
        [ "$f" -gt "$pfd" ] && pfd=$f
        [ "$r" -gt "$prss" ] && prss=$r
        echo "$pfd $prss" > "$peaks"
        sleep 1
    done
) &
sampler=$!

t0=$(date +%s)
end=$((t0 + seconds))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
    round=$((round + 1))
    left=$((end - $(date +%s)))
    "$flood" --count "$count" --total "$total" \
        --mix bot=50,human=10,pregreet=10,silent=15,reset=15 --sources 64 \
        --duration "${left}s" --json "127.0.0.1:$port" > "$work/flood-$round.json"
    echo "flood round $round: up to $total clients, $count at once, $(($(date +%s) - t0)) s so far"
done
t1=$(date +%s)
echo "flood: $round rounds in $((t1 - t0)) s"

# Drained: every connection the flood left is closed on our side too.
for _ in $(seq 120); do
    [ "$(fds)" -le "$fd0" ] && break
    sleep 1
done
sleep 1
fd1=$(fds) rss1=$(rss)
read -r pfd prss < "$peaks"
kill "$sampler" 2>/dev/null || true
kill -USR1 "$pid"
sleep 0.5
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
trap - EXIT

result=0
python3 - "$log" "$work" "$fd0" "$fd1" "$pfd" "$rss0" "$rss1" "$prss" "$status" <<'EOF' || result=$?
import collections, glob, json, re, sys

log, work = sys.argv[1], sys.argv[2]
fd0, fd1, pfd, rss0, rss1, prss, status = map(int, sys.argv[3:])

PAIR = re.compile(r'([A-Za-z0-9_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')

def parse(line):
    """logfmt: key=value pairs, one space apart, quoted values escaped."""
    pairs, at = [], 0
    while at < len(line):
        m = PAIR.match(line, at)
        if not m:
            return None
        pairs.append((m.group(1), m.group(2)))
        at = m.end()
    return pairs if line and not line.endswith(" ") else None

bad, events, reasons, classes, stats = [], collections.Counter(), collections.Counter(), collections.Counter(), None
panics = 0
with open(log, "rb") as f:
    for n, raw in enumerate(f, 1):
        if b"panicked" in raw:
            panics += 1
        try:
            line = raw.decode("ascii").rstrip("\n")
        except UnicodeDecodeError:
            bad.append((n, raw)); continue
        pairs = parse(line)
        if (pairs is None or pairs[0][0] != "ts" or "\r" in line
                or any(ord(c) < 0x20 or ord(c) > 0x7e for c in line)):
            bad.append((n, raw)); continue
        d = dict(pairs)
        ev = d.get("event")
        if ev:
            events[ev] += 1
        if ev == "close":
            reasons[d["reason"]] += 1
            classes[d["class"]] += 1
        if ev == "stats":
            stats = d

rounds = [json.load(open(f)) for f in
          sorted(glob.glob(f"{work}/flood-*.json"), key=lambda f: int(f.split("-")[-1][:-5]))]
attempted = sum(r["total"]["attempted"] for r in rounds)
established = sum(r["total"]["established"] for r in rounds)
checks = [
    ("close records = accept records", events["close"] == events["accept"],
     f'{events["accept"]} accepted, {events["close"]} closed'),
    ("every line parses as logfmt", not bad, f"{len(bad)} bad lines"),
    ("no panic", panics == 0, f"{panics} lines mention a panic"),
    ("clean exit", status == 0, f"exit status {status}"),
    ("descriptors back to baseline", fd1 <= fd0, f"{fd0} before, {fd1} after, peak {pfd}"),
    ("memory back near baseline", rss1 <= rss0 + 8192,
     f"VmRSS {rss0} KB before, {rss1} KB after (+{rss1 - rss0}), peak {prss} KB"),
    ("the flood was served", established >= 0.95 * attempted,
     f"{established} of {attempted} established"),
]
print()
print(f"log lines: {sum(events.values())} records, events {dict(events)}")
print(f"close reasons: {dict(reasons)}; classes: {dict(classes)}")
if stats:
    keep = ("accepted", "closed", "rejected", "classified_machine", "classified_human",
            "bytes_sent", "held_s", "timer_fires", "late_p50_ms", "late_p99_ms", "late_max_ms")
    print("stats: " + " ".join(f"{k}={stats[k]}" for k in keep if k in stats))
for i, r in enumerate(rounds, 1):
    tot = r["total"]
    print(f'flood round {i}: elapsed {r["elapsed_ms"] / 1000:.0f} s, {tot["established"]} established, '
          f'held p50 {tot["held_ms"]["p50"]} ms, p99 {tot["held_ms"]["p99"]} ms, '
          f'failed {tot["failed"]}, ended by {tot["ends"]}')
    for name, b in r["behaviours"].items():
        print(f'  {name:9} {b["established"]:6} established, held p50 {b["held_ms"]["p50"]} ms, '
              f'bytes received {b["bytes_received"]}')
print()
ok = True
for name, good, figure in checks:
    print(f'{"ok  " if good else "FAIL"} {name}: {figure}')
    ok &= good
for n, raw in bad[:5]:
    print(f"  line {n}: {raw!r}")
sys.exit(0 if ok else 1)
EOF
echo "files: $work"
exit $result
