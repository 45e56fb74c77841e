#!/usr/bin/env bash
# The edge runtime on aarch64 (what a Raspberry Pi runs), proven on this x86 machine under emulation:
#   1. an arm64 Debian bookworm root (debootstrap + qemu-user-static from Debian's packages; Raspberry Pi OS
#      is Debian bookworm, Python 3.11),
#   2. a Python 3.11 venv inside it and `pip install '.[edge]'` from PyPI (aarch64 wheels),
#   3. `har-edge replay` of the shipped example and of a fault-injected serial capture, int8 and fp32,
#      inside the arm64 root and here on x86,
#   4. every window's sample_end, label and raw label compared (and the largest probability difference shown).
# Timed per step. Emulated timings are not Pi timings (docs/results.md, "Lean runtime", has the estimate).
# Needs root (debootstrap, chroot) and network (Debian mirror, PyPI). Usage:
#   sudo scripts/check_aarch64.sh            # HAR_ARM64_ROOT=/var/tmp/har-arm64/root is kept and reused
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${HAR_ARM64_ROOT:-/var/tmp/har-arm64/root}
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d /tmp/har-aarch64.XXXXXX)
start=$(date +%s)
step() { echo "check_aarch64: [$(( $(date +%s) - start )) s] $*"; }

if [ "$(id -u)" != 0 ]; then echo "check_aarch64: needs root (debootstrap, chroot)" >&2; exit 2; fi
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  step "installing qemu-user-static debootstrap binfmt-support"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap binfmt-support >/dev/null
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  echo "check_aarch64: binfmt_misc has no qemu-aarch64 entry: arm64 programs cannot run here" >&2; exit 2
fi

if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  step "debootstrap arm64 bookworm into $ROOT"
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's trust store (a network behind a proxy with its own CA, as CI sandboxes have, works inside too).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
unset PIP_FIND_LINKS  # a host wheel directory is not there inside the root
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true; rm -rf "$WORK"' EXIT

step "copying the working tree to $ROOT/src"
rm -rf "$ROOT/src" "$ROOT/work"; mkdir -p "$ROOT/src" "$ROOT/work"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$ROOT/src"
step "arm64: $(chroot "$ROOT" uname -m), $(chroot "$ROOT" python3.11 --version); venv + pip install '.[edge]'"
chroot "$ROOT" /bin/sh -c "[ -x /opt/har-venv/bin/python ] || python3.11 -m venv /opt/har-venv" 
chroot "$ROOT" /bin/sh -c "cd /src && /opt/har-venv/bin/pip install -q --disable-pip-version-check '.[edge]'" \
  >"$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log"; exit 1; }
chroot "$ROOT" /opt/har-venv/bin/python -c "import numpy, scipy, ai_edge_litert, platform; \
print('check_aarch64: arm64 venv:', platform.machine(), 'numpy', numpy.__version__, 'scipy', scipy.__version__)"

step "fault-injected capture of the example (x86, scripts/fault_capture.py)"
PYTHONPATH=$REPO "$PY" scripts/fault_capture.py edge/examples/user01_exp01.csv "$ROOT/work/faults.bin"
cp edge/examples/user01_exp01.csv "$ROOT/work/example.csv"
inputs="example.csv faults.bin"
# A whole HAPT recording too, where there is one: the example shows no sit <-> stand transition, this one two
# (the posture stage's rises: waist_rise in Python floats on both machines).
HAPT_ZIP=${HAR_HAPT_ZIP:-$REPO/../shared/data/HAPT_RawData_train_users.zip}
if [ -f "$HAPT_ZIP" ]; then
  mkdir -p "$ROOT/work/hapt/RawData"
  "$PY" - "$HAPT_ZIP" "$ROOT/work/hapt/RawData" <<'PYEOF'
import pathlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for member in z.namelist():
        if member.endswith(("RawData/labels.txt", "acc_exp01_user01.txt", "gyro_exp01_user01.txt")):
            (pathlib.Path(sys.argv[2]) / pathlib.Path(member).name).write_bytes(z.read(member))
PYEOF
  inputs="$inputs hapt/RawData/acc_exp01_user01.txt"
fi

status=0
for input in $inputs; do
  name=${input//\//_}
  for precision in int8 fp32; do
    PYTHONPATH=$REPO "$PY" -m edge.cli replay "$ROOT/work/$input" --precision "$precision" --quiet \
      --jsonl "$WORK/x86-$name-$precision.jsonl" 2>/dev/null
    t0=$(date +%s)
    chroot "$ROOT" /opt/har-venv/bin/har-edge replay "/work/$input" --precision "$precision" --quiet \
      --jsonl "/work/arm64-$name-$precision.jsonl" 2>"$WORK/arm.err" || { cat "$WORK/arm.err"; exit 1; }
    step "arm64 replay of $input ($precision) took $(( $(date +%s) - t0 )) s emulated"
    "$PY" - "$WORK/x86-$name-$precision.jsonl" "$ROOT/work/arm64-$name-$precision.jsonl" "$input $precision" <<'PYEOF' || status=1
import json, sys
x86 = [json.loads(line) for line in open(sys.argv[1])]
arm = [json.loads(line) for line in open(sys.argv[2])]
keys = ("sample_end", "label", "raw_label")
differ = sum(any(a[k] != b[k] for k in keys) for a, b in zip(x86, arm)) + abs(len(x86) - len(arm))
dp = max((abs(a["probs"][c] - b["probs"][c]) for a, b in zip(x86, arm) for c in a["probs"]), default=0.0)
print(f"check_aarch64: {sys.argv[3]}: {len(x86)} windows on x86, {len(arm)} on arm64, {differ} differ in "
      f"sample_end/label/raw_label; largest probability difference {dp:.2g}")
sys.exit(1 if differ or not x86 else 0)
PYEOF
  done
done
auto=$(chroot "$ROOT" /opt/har-venv/bin/har-edge replay /work/example.csv --quiet 2>&1 | grep -o "\[tflite [^]]*\]" | head -1 || true)
step "arm64 --precision auto picks: $auto"
step "$([ $status = 0 ] && echo "PASS: every label identical on arm64 and x86" || echo "FAIL: labels differ")"
exit $status
