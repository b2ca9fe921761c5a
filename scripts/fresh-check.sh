#!/usr/bin/env bash
# fresh-check.sh: runs the README's two commands as a new user would, on a brand-new Debian 12:
# a minimal root made by `debootstrap --variant=minbase bookworm` (kept as a tarball under
# build/fresh so later runs skip debootstrap), a pristine copy of it per run, the committed tree
# (git archive HEAD) and ../shared copied in, then scripts/demo.sh and scripts/test.sh run inside
# with chroot as root (/proc, /sys and /dev mounted, and always unmounted). Prints one closing line
# with each command's exit status, time and tests run; exits non-zero if either command fails or
# any ctest run was empty. Needs root. Logs: build/fresh/{demo,test}.log.
# Environment: FRESH_MIRROR overrides the Debian mirror read from this machine's apt sources.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (debootstrap and chroot)" >&2; exit 2; }
git rev-parse --verify -q HEAD >/dev/null || { echo "fresh-check: $repo is not a git checkout" >&2; exit 2; }
[ -d ../shared ] || echo "fresh-check: ../shared is absent; the demo and tests will say so" >&2

out="$repo/build/fresh"
tarball="$out/bookworm-minbase.tar"
root="$out/root"
mkdir -p "$out"

# The first http(s) Debian mirror of this machine's apt sources (deb822 or one-line format).
mirror() {
  if [ -n "${FRESH_MIRROR:-}" ]; then echo "$FRESH_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
        /^URIs:/ { uri = $2 } /^Suites:/ { if ($0 ~ /bookworm( |$)/ && uri ~ /debian\/?$/) { print uri; exit } }')
  [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 == "bookworm" && $2 ~ /^https?:/ { print $2; exit }')
  echo "${m:-http://deb.debian.org/debian}"
}

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  mounted=()
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# Leftover mounts of an interrupted run would make rm -rf reach the host's /dev.
for m in dev/pts dev sys proc; do
  mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
done

if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || scripts/setup.sh debootstrap
  base="$out/base"
  rm -rf "$base"
  echo "fresh-check: debootstrap --variant=minbase bookworm from $(mirror)" >&2
  debootstrap --variant=minbase bookworm "$base" "$(mirror)" >"$out/debootstrap.log" 2>&1 ||
    { tail -20 "$out/debootstrap.log" >&2; exit 1; }
  tar -C "$base" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$base"
fi

rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
mkdir -p "$root/work/lowbit"
git archive HEAD | tar -C "$root/work/lowbit" -x
[ -d ../shared ] && cp -a ../shared "$root/work/shared"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

for m in proc sys dev dev/pts; do
  case $m in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sysfs "$root/sys" ;;
    dev) mount --bind /dev "$root/dev" ;;
    dev/pts) mount --bind /dev/pts "$root/dev/pts" ;;
  esac
  mounted+=("$root/$m")
done

# run NAME: runs scripts/NAME.sh inside the root; sets status_NAME and secs_NAME.
run() {
  local name=$1 t0 rc=0
  echo "fresh-check: scripts/$name.sh in the fresh root (log: build/fresh/$name.log)" >&2
  t0=$(date +%s)
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb /bin/bash -c "cd /work/lowbit && scripts/$name.sh" \
    >"$out/$name.log" 2>&1 || rc=$?
  printf -v "status_$name" '%s' "$rc"
  printf -v "secs_$name" '%s' "$(($(date +%s) - t0))"
  [ "$rc" -eq 0 ] || tail -30 "$out/$name.log" >&2
}
run demo
run test

# Tests run: each ctest summary ("... out of N") and each Catch2 program run directly.
ctest_counts=$(grep -oE 'tests failed out of [0-9]+' "$out/test.log" | awk '{print $NF}' | paste -sd+ -)
empty=$(grep -c 'No tests were found' "$out/test.log" || true)
catch_cases=$(grep -oE 'in [0-9]+ test cases' "$out/test.log" | awk '{print $2}' | paste -sd+ -)
mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
echo "fresh-check: demo.sh exit $status_demo in $(mmss "$secs_demo"); test.sh exit $status_test in" \
  "$(mmss "$secs_test"), ctest runs ${ctest_counts:-none} tests, qemu runs ${catch_cases:-none} test cases" \
  "$([ "$empty" -gt 0 ] && echo "; $empty ctest run(s) EMPTY")"
[ "$status_demo" -eq 0 ] && [ "$status_test" -eq 0 ] && [ "$empty" -eq 0 ] && [ -n "$ctest_counts" ]
