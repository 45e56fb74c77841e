#!/usr/bin/env bash
# The worked example of docs/datasets.md: record (virtual device) -> label -> train a 7-class model (the six
# + HAPT's postural transitions as one class TRANSITION, from real data) -> export -> replay with it.
#
#   scripts/own_data_example.sh [OUT (default runs/own_data_example)] [USERS (default "1 3 5")]
#
# Each HAPT experiment of USERS is streamed by the virtual device (har-bridge simulate, 50x real time),
# recorded by `har-edge record`, labelled by `har-edge label` from a segments file made of HAPT's labels.txt
# (activities 7-12 renamed TRANSITION), and listed in manifest.csv with its wearer. The last user is held out.
set -euo pipefail
OUT=${1:-runs/own_data_example}
USERS=${2:-"1 3 5"}
PY=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$OUT"; mkdir -p "$OUT/raw" "$OUT/data"
echo "recording,subject" > "$OUT/data/manifest.csv"

# 1. The raw experiments and their segments files (start,end,label in samples, end exclusive).
$PY - "$OUT/raw" $USERS <<'PYEOF'
import sys
from pathlib import Path
from firmware_bridge.recording import HAPT_ACTIVITIES, HAPT_ARCHIVE, HaptSource, data_root
out, users = Path(sys.argv[1]), {int(u) for u in sys.argv[2:]}
source = HaptSource(data_root() / HAPT_ARCHIVE)
segments = source.segments()
for experiment, user in source.experiments():
    if user not in users:
        continue
    stem = f"exp{experiment:02d}_user{user:02d}"
    for name in (f"acc_{stem}.txt", f"gyro_{stem}.txt"):
        (out / name).write_text(source.read_text(name, "file"))
    rows = ["start,end,label"] + [
        f"{s.first - 1},{s.last},{'TRANSITION' if s.name in HAPT_ACTIVITIES[6:] else s.name}"
        for s in segments if (s.experiment, s.user) == (experiment, user)]
    (out / f"{stem}.segments.csv").write_text("\n".join(rows) + "\n")
PYEOF

# 2. Record each experiment from the virtual device, 3. label it.
for acc in "$OUT"/raw/acc_exp*_user*.txt; do
  stem=$(basename "$acc" .txt); stem=${stem#acc_}; user=$((10#${stem##*user}))
  n=$(grep -c . "$acc")
  $PY -m firmware_bridge.cli simulate "$acc" --speed 50 --link "$OUT/imu" > /dev/null 2>&1 &
  sim=$!
  $PY -m edge.cli record --port "$OUT/imu" --out "$OUT/raw/$stem.csv" --no-model --connect-timeout 10 \
      --duration $(( n / 2500 + 4 )) --report-every 0
  kill -INT $sim 2>/dev/null || true; wait $sim 2>/dev/null || true
  got=$(( $(wc -l < "$OUT/raw/$stem.csv") - 1 ))
  [ "$got" -eq "$n" ] || { echo "recorded $got of $n samples of $stem" >&2; exit 1; }
  plot=(); [ -e "$OUT/labelled.png" ] || plot=(--plot "$OUT/labelled.png")
  $PY -m edge.cli label "$OUT/raw/$stem.csv" "$OUT/raw/$stem.segments.csv" --out "$OUT/data/$stem.csv" "${plot[@]}"
  echo "$stem.csv,$user" >> "$OUT/data/manifest.csv"
done

# 4. Train the 7-class model (last user held out), 5. export it, 6. replay and evaluate with it.
held_out=${USERS##* }
$PY -m training.cli fit --data "$OUT/data" --out "$OUT/run" --model tcn_physics_h32 \
    --set epochs=${EPOCHS:-8} --set "val_subjects=[$held_out]" --set num_threads=1 --set progress=false
$PY -m export.cli "$OUT/run/model.pt" --out "$OUT/bundle" --runs 50 --force
replay=$(ls "$OUT"/data/exp*_user$(printf %02d "$held_out").csv | head -1)
$PY -m edge.cli replay "$replay" --bundle "$OUT/bundle" --quiet --plot "$OUT/replay.png" \
    --summary-json "$OUT/replay.json" --jsonl "$OUT/replay.jsonl"
$PY -m training.cli evaluate "$OUT/bundle" --data "$OUT/data" --subjects "$held_out" \
    --json "$OUT/evaluate.json" --confusion "$OUT/evaluate.png"
