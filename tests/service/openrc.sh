#!/usr/bin/env bash
# tests/service/openrc.sh: runs etc/init.d/smtarpit for real under OpenRC.
#
#     sudo tests/service/openrc.sh [BINARY]
#
# BINARY defaults to target/debug/smtarpit, built first if it is missing.
# Needs root and a Debian-like system: CI runs it on a throwaway machine.
#
# What it does: installs OpenRC if missing (apt-get install openrc), the
# binary as /usr/local/sbin/smtarpit, the init script as /etc/init.d/smtarpit
# and a test /etc/smtarpit.conf (127.0.0.1:2626, short timings, chroot
# /var/empty, user nobody); then start, status, a real "220 " banner, the
# daemon's identity (nobody, chrooted, no_new_privs), reload (good and bad
# config), stop, and no process left.
#
# What it must not do is disturb the machine's init. Installing Debian's
# openrc package does not replace /sbin/init (that is sysvinit-core's or
# systemd-sysv's) and starts nothing: its postinst only links the existing
# services into /etc/runlevels. The script refuses to install it if apt would
# remove anything (openrc conflicts with sysv-rc). openrc-run refuses to run
# on a system OpenRC did not boot unless /run/openrc/softlevel exists, so the
# script creates that file, and removes it again: while it exists, Debian's
# invoke-rc.d (which every package's postinst calls) would hand services to
# OpenRC instead of the real init. Every file it installs is backed up first
# and restored on exit, whatever happens (trap). The openrc package itself is
# left installed: inert without /run/openrc/softlevel, and quicker next run.

set -euo pipefail

readonly PORT=2626
readonly BIN=/usr/local/sbin/smtarpit
readonly INITD=/etc/init.d/smtarpit
readonly CONF=/etc/smtarpit.conf
readonly LOG=/var/log/smtarpit.log     # the init script's default SMTARPIT_LOG
readonly JAIL=/var/empty
readonly RCDIR=/run/openrc

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
backup=""
nodeps=()
log_offset=0
# What existed before, so that cleanup puts back exactly that.
had_rcdir=no had_softlevel=no had_jail=no had_log=no

say() { printf 'openrc.sh: %s\n' "$*"; }
fail() {
	printf 'openrc.sh: FAIL: %s\n' "$*" >&2
	exit 1
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s; never a fixed sleep.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.1
	done
}

# Our daemon and its supervisor, by their exact command lines: other
# smtarpit processes (other tests, a developer's) are none of our business.
our_daemon_pids() { pgrep -f "^${BIN}( |\$)" || true; }
our_supervisor_pids() { pgrep -f "^supervise-daemon smtarpit " || true; }
none_left() { [[ -z "$(our_daemon_pids)$(our_supervisor_pids)" ]]; }

# The first line the server sends, without its CR. A subshell, so that the
# connection is closed however it returns.
banner() (
	{ exec 3<>"/dev/tcp/127.0.0.1/${PORT}"; } 2>/dev/null || exit 1
	IFS= read -r -t 5 line <&3 || exit 1
	printf '%s\n' "${line%$'\r'}"
)
listening() { banner >/dev/null; }

# What the daemon wrote since the test began.
new_log() { tail -c +"$((log_offset + 1))" "${LOG}" 2>/dev/null || true; }
logged() { new_log | grep -qF -- "$1"; }
count_logged() { new_log | grep -cF -- "$1" || true; }

child_pid() { cat "${RCDIR}/options/smtarpit/child_pid" 2>/dev/null || true; }

# put FILE SOURCE MODE: installs SOURCE as FILE, first saving any FILE there.
put() {
	local file=$1 source=$2 mode=$3 saved
	saved="${backup}/$(printf '%s' "${file}" | tr / _)"
	if [[ -e "${file}" && ! -e "${saved}" ]]; then
		cp -a "${file}" "${saved}"
	fi
	printf '%s\n' "${file}" >>"${backup}/installed"
	install -m "${mode}" "${source}" "${file}"
}

cleanup() {
	local rc=$? file saved pid
	set +e
	if [[ -n "$(our_daemon_pids)$(our_supervisor_pids)" ]] && [[ -x "${INITD}" ]]; then
		say "cleanup: stopping the service"
		"${INITD}" stop >/dev/null 2>&1
		wait_for 10 none_left
	fi
	for pid in $(our_supervisor_pids) $(our_daemon_pids); do
		say "cleanup: killing leftover process ${pid}"
		kill -KILL "${pid}" 2>/dev/null
	done
	[[ -x "${INITD}" && -e "${RCDIR}/softlevel" ]] && "${INITD}" zap >/dev/null 2>&1
	if [[ -n "${backup}" ]]; then
		if [[ -f "${backup}/installed" ]]; then
			sort -u "${backup}/installed" | while read -r file; do
				saved="${backup}/$(printf '%s' "${file}" | tr / _)"
				if [[ -e "${saved}" ]]; then
					cp -a "${saved}" "${file}"
				else
					rm -f "${file}"
				fi
			done
		fi
		rm -rf "${backup}"
	fi
	[[ ${had_log} == no ]] && rm -f "${LOG}"
	[[ ${had_jail} == no && -d ${JAIL} ]] && rmdir "${JAIL}"
	[[ ${had_softlevel} == no ]] && rm -f "${RCDIR}/softlevel"
	[[ ${had_rcdir} == no ]] && rm -rf "${RCDIR}"
	if ((rc == 0)); then
		say "PASS"
	else
		say "failed (exit ${rc}); the machine is restored"
	fi
	exit "${rc}"
}

# --- Preconditions ---------------------------------------------------------

((EUID == 0)) || fail "must run as root (it installs OpenRC and a service)"

bin=${1:-${repo}/target/debug/smtarpit}
if [[ $# -eq 0 && ! -x ${bin} ]]; then
	say "building ${bin}"
	(cd "${repo}" && cargo build -q -p smtarpit) || fail "cargo build failed"
fi
[[ -x ${bin} ]] || fail "no executable at ${bin}"

[[ -e ${RCDIR} ]] && had_rcdir=yes
[[ -e ${RCDIR}/softlevel ]] && had_softlevel=yes
[[ -e ${JAIL} ]] && had_jail=yes
[[ -e ${LOG} ]] && had_log=yes

if ! command -v openrc-run >/dev/null; then
	command -v apt-get >/dev/null || fail "openrc-run is missing and there is no apt-get to install it"
	export DEBIAN_FRONTEND=noninteractive
	plan=$(apt-get install -s --no-install-recommends openrc 2>&1) || {
		apt-get update -q >/dev/null || fail "apt-get update failed"
		plan=$(apt-get install -s --no-install-recommends openrc 2>&1) ||
			fail "apt cannot install openrc: ${plan}"
	}
	if grep -q '^Remv' <<<"${plan}"; then
		fail "installing openrc would remove packages (the init system?); refusing:
$(grep '^Remv' <<<"${plan}")"
	fi
	say "installing openrc (it does not replace /sbin/init and starts nothing)"
	apt-get install -y -q --no-install-recommends openrc >/dev/null ||
		fail "apt-get install openrc failed"
fi
command -v openrc-run >/dev/null || fail "openrc-run still missing after installing openrc"
command -v supervise-daemon >/dev/null || fail "supervise-daemon is missing (OpenRC too old?)"

if listening; then
	fail "something already answers on 127.0.0.1:${PORT}; stop it first"
fi
[[ -z "$(our_daemon_pids)" ]] || fail "${BIN} is already running: $(our_daemon_pids)"

backup=$(mktemp -d /tmp/smtarpit-openrc-test.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Install ---------------------------------------------------------------

say "installing ${bin} as ${BIN}, the init script and a test ${CONF}"
put "${BIN}" "${bin}" 0755
put "${INITD}" "${repo}/etc/init.d/smtarpit" 0755
cat >"${backup}/smtarpit.conf" <<EOF
# Written by tests/service/openrc.sh; the original is restored afterwards.
listen = 127.0.0.1:${PORT}
hostname = openrc.test
human-threshold = 1s
trickle = 50ms-100ms
reply-time = 1s-2s
max-session = 30s
idle-timeout = 10s
user = nobody
chroot = ${JAIL}
EOF
put "${CONF}" "${backup}/smtarpit.conf" 0644
[[ -e ${LOG} ]] && log_offset=$(stat -c %s "${LOG}")

mkdir -p "${RCDIR}"
touch "${RCDIR}/softlevel"
# OpenRC rebuilds its dependency cache only when a script is newer than it,
# to the second: a script installed in the same second as the cache would
# start with no dependencies checked at all. Rebuild it now.
rc-update -u >/dev/null 2>&1 || fail "rc-update -u (dependency cache) failed"

# --- start -----------------------------------------------------------------

say "start"
if ! out=$("${INITD}" start 2>&1); then
	printf '%s\n' "${out}"
	# A container has no network service to provide "net" (need net); that
	# is the machine, not the script: start without dependencies then.
	grep -q "needs service(s) net" <<<"${out}" ||
		fail "${INITD} start failed"
	say "note: no service here provides 'net'; starting with --nodeps"
	nodeps=(--nodeps)
	"${INITD}" "${nodeps[@]}" start || fail "${INITD} --nodeps start failed"
else
	printf '%s\n' "${out}"
fi

[[ -d ${JAIL} ]] || fail "start_pre did not create ${JAIL}"
[[ $(stat -c '%a %U' "${JAIL}") == "755 root" ]] ||
	fail "${JAIL} is $(stat -c '%a %U' "${JAIL}"), not 755 root"

"${INITD}" status || fail "status says the service is not started"

wait_for 10 listening || {
	new_log
	fail "nothing answers on 127.0.0.1:${PORT} 10 s after start (the log is above)"
}
line=$(banner) || fail "no greeting from 127.0.0.1:${PORT}"
[[ ${line} == "220 "* ]] || fail "the greeting is '${line}', not a '220 ' line"
say "banner: ${line}"

pid=$(child_pid)
[[ -n ${pid} && -d /proc/${pid} ]] || fail "supervise-daemon records no running child (child_pid '${pid}')"
[[ " $(our_daemon_pids | tr '\n' ' ')" == *" ${pid} "* ]] ||
	fail "child ${pid} is not ${BIN}"

# --- The daemon's identity: chroot and privilege drop ----------------------

user=$(ps -o user= -p "${pid}")
root_dir=$(readlink "/proc/${pid}/root")
say "daemon ${pid}: user ${user}, root ${root_dir}"
[[ ${user} == nobody ]] || fail "the daemon runs as '${user}', not nobody (privileges not dropped)"
[[ ${root_dir} == "${JAIL}" ]] || fail "the daemon's root is ${root_dir}, not ${JAIL} (no chroot)"
nobody_uid=$(id -u nobody)
grep -Eq "^Uid:[[:space:]]+${nobody_uid}[[:space:]]+${nobody_uid}[[:space:]]+${nobody_uid}[[:space:]]" "/proc/${pid}/status" ||
	fail "real/effective/saved uids are not all ${nobody_uid}: $(grep ^Uid: "/proc/${pid}/status")"
grep -Eq "^Groups:[[:space:]]*($(id -g nobody)[[:space:]]*)?$" "/proc/${pid}/status" ||
	fail "supplementary groups remain: $(grep ^Groups: "/proc/${pid}/status")"
grep -Eq '^NoNewPrivs:[[:space:]]+1' "/proc/${pid}/status" || fail "no_new_privs is not set"
logged 'msg="verified: root cannot be regained"' || fail "the log does not show the verified drop"

# --- reload ----------------------------------------------------------------

say "reload"
before=$(count_logged 'msg="reloaded"')
"${INITD}" reload || fail "${INITD} reload failed"
reloaded() { (($(count_logged 'msg="reloaded"') > before)); }
wait_for 10 reloaded || {
	new_log | tail -n 5
	fail "no msg=\"reloaded\" in ${LOG} after reload"
}
[[ $(child_pid) == "${pid}" && -d /proc/${pid} ]] || fail "reload restarted the daemon (pid ${pid} -> $(child_pid))"
"${INITD}" status >/dev/null || fail "not started after reload"
line=$(banner) || fail "no greeting after reload"
[[ ${line} == "220 "* ]] || fail "the greeting after reload is '${line}'"

say "reload with a broken config: refused, the daemon runs on"
cp "${CONF}" "${backup}/good.conf"
echo "no-such-key = 1" >>"${CONF}"
if "${INITD}" reload; then
	fail "reload accepted a config with an unknown key"
fi
cp "${backup}/good.conf" "${CONF}"
[[ -d /proc/${pid} ]] || fail "the daemon died after a refused reload"
"${INITD}" status >/dev/null || fail "not started after a refused reload"

# --- stop ------------------------------------------------------------------

say "stop"
"${INITD}" stop || fail "${INITD} stop failed"
wait_for 10 none_left || fail "still running 10 s after stop: $(our_supervisor_pids) $(our_daemon_pids)"
if "${INITD}" status >/dev/null 2>&1; then
	fail "status says started after stop"
fi
logged 'msg="shutting down' || fail "the log does not show the shutdown"
if listening; then
	fail "127.0.0.1:${PORT} still answers after stop"
fi
others=$(pgrep -x smtarpit || true)
if [[ -n ${others} ]]; then
	say "note: other smtarpit processes, not started by this test, are running: $(echo "${others}" | tr '\n' ' ')"
fi

say "the daemon's log during the test:"
new_log | sed 's/^/    /'
