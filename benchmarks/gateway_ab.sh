#!/usr/bin/env bash
# The gateway's overhead with `tokenmill bench serve`: tokenmill before the gateway
# (OLD: the src of a checkout of 2b0a6e1) against this tree, both with their defaults,
# both servers pinned to CPU 1 with 1 thread, the load generator on CPU 0, rounds
# interleaved (new, old, new, old). Results: ${OUT:-/tmp}/serve_{new,old}_N.txt/json.
set -u
OLD=${OLD:?set OLD to the src directory of a 2b0a6e1 checkout}
NEW=${NEW:-$PWD/src}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp}
start() { # src port log
  PYTHONPATH=$1 taskset -c 1 "$PY" -m tokenmill.cli.main serve --host 127.0.0.1 \
    --port "$2" --num-threads 1 > "$3" 2>&1 &
  echo $!
}
P_OLD=$(start "$OLD" 18101 "$OUT/old.log")
P_NEW=$(start "$NEW" 18102 "$OUT/new.log")
for port in 18101 18102; do
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 1; done
done
for round in 1 2; do
  for side in new old; do
    port=18102; [ "$side" = old ] && port=18101
    PYTHONPATH=$NEW taskset -c 0 "$PY" -m tokenmill.cli.main bench serve \
      --url "http://127.0.0.1:$port" --concurrency 4 --num-prompts 24 --input-len 64 \
      --output-len 32 --seed "$round" --no-progress \
      --result-json "$OUT/serve_${side}_${round}.json" > "$OUT/serve_${side}_${round}.txt" 2>&1
    echo "$side $round rc=$?"
  done
done
kill "$P_OLD" "$P_NEW"
