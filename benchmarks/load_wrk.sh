#!/usr/bin/env bash
# Load test of `mnistkit serve` with wrk (Debian: apt-get install wrk): requests/s, p50/p95/p99
# and errors for three bodies posted to /api/predict: the drawing page's 280x280 canvas PNG,
# a 28x28 PNG and a 1000x1000 JPEG photo (the images `mnistkit bench infer` times).
#
#   benchmarks/load_wrk.sh RUN_DIR [serve options]   # starts `mnistkit serve RUN_DIR` on a free
#                                                    # port with those options, stops it after
#   URL=http://127.0.0.1:8000 benchmarks/load_wrk.sh # a server already running on this machine
#
# Environment: CONNECTIONS (32), DURATION per body (20s), WARMUP (3s), THREADS of wrk (1: on a
# small machine the load generator takes its core from the server), BODIES ("canvas digit28
# photo"), PYTHON (.venv/bin/python if there is one, else python3).
# A benchmark, not a test: it prints figures; it fails only if the server does not start.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
command -v wrk >/dev/null || { echo "load_wrk.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $root/.venv/bin/python ]]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
CONNECTIONS=${CONNECTIONS:-32} DURATION=${DURATION:-20s} WARMUP=${WARMUP:-3s} THREADS=${THREADS:-1}
BODIES=${BODIES:-canvas digit28 photo}

work=$(mktemp -d)
server=""
cleanup() {
  if [[ -n $server ]]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$PYTHON" - "$work" <<'PY'
import sys
from pathlib import Path
from mnistkit.bench.infer import preprocess_images

images, out = preprocess_images(), Path(sys.argv[1])
for name, key in [("canvas.png", "280x280 canvas PNG"), ("digit28.png", "28x28 PNG"),
                  ("photo.jpg", "1000x1000 JPEG")]:
    (out / name).write_bytes(images[key])
PY

if [[ -z ${URL:-} ]]; then
  [[ $# -ge 1 ]] || { echo "usage: $0 RUN_DIR [serve options]  (or URL=... $0)" >&2; exit 2; }
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  URL=http://127.0.0.1:$port
  "$PYTHON" -m mnistkit serve "$@" --port "$port" --quiet >"$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 240); do
    if "$PYTHON" -c "import urllib.request as u; u.urlopen('$URL/api/health', timeout=2)" 2>/dev/null; then break; fi
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "server: mnistkit serve $* (log: warnings only)"
fi
"$PYTHON" -c "
import json, urllib.request as u
h = json.load(u.urlopen('$URL/api/health'))
m = h['model']
print('model:', m.get('run_dir'), m.get('recipe'), 'backend', m.get('backend'))"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk: $THREADS thread(s), $CONNECTIONS connections, $DURATION per body after a $WARMUP warm-up"

# CPU seconds the server's processes have used (when this script started it): on a shared
# machine, CPU time per request says what the server costs whatever else runs.
server_cpu() {
  [[ -n $server ]] || { echo 0; return; }
  local ticks=0 pid f
  for pid in $server $(pgrep -P "$server" || true); do
    f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
    ticks=$((ticks + ${f% *} + ${f#* }))
  done
  echo "$ticks"
}
hz=$(getconf CLK_TCK)

declare -A file=([canvas]=canvas.png [digit28]=digit28.png [photo]=photo.jpg)
declare -A type=([canvas]=image/png [digit28]=image/png [photo]=image/jpeg)
declare -A what=([canvas]="280x280 canvas PNG" [digit28]="28x28 PNG" [photo]="1000x1000 JPEG photo")
for body in $BODIES; do
  export WRK_BODY=$work/${file[$body]} WRK_TYPE=${type[$body]}
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$here/load_wrk.lua" "$URL/api/predict" >/dev/null
  cpu0=$(server_cpu)
  result=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s -s "$here/load_wrk.lua" \
    "$URL/api/predict" | grep '^RESULT')
  cpu1=$(server_cpu)
  printf '%-22s %s\n' "${what[$body]}" "${result#RESULT }"
  if [[ -n $server ]]; then
    n=$(sed 's/^RESULT requests \([0-9]*\).*/\1/' <<<"$result")
    awk -v c=$((cpu1 - cpu0)) -v hz="$hz" -v n="$n" 'BEGIN { if (n > 0) printf "%-22s server CPU %.2f ms a request (%.1f CPU s)\n", "", 1000 * c / hz / n, c / hz }'
  fi
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n $server && -s $work/serve.log ]]; then echo "server log:"; tail -5 "$work/serve.log"; fi
