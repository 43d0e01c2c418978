#!/usr/bin/env bash
# Server-choice benchmark for meterflow's ingest endpoint.
#
# For every candidate and round: start the server pinned to CPU $SERVER_CPU on 127.0.0.1 with
# a free port, check that it answers, warm it up, run wrk (pinned to CPU $CLIENT_CPU) with
# post.lua (~10 KB, 100-event JSON batch), sample the server's CPU time and RSS, stop it.
# Prints a table at the end and writes raw outputs to $OUT.
#
# Everything runs from a throwaway venv ($VENV, created on first use with pinned versions);
# the project's own .venv and pyproject are not touched.
#
#   ./run.sh                                   # all candidates, 2 rounds, 15 s each
#   CANDIDATES="a_raw_httptools d_aiohttp" ROUNDS=1 DURATION=5s ./run.sh
#   CANDIDATES="g0_ingest_httptools g1_ingest_guarded" ./run.sh   # ingest's protocol, A/B
#
# The g* candidates run from the project's own venv ($PROJECT_PYTHON), as ingest does; with only
# those, no throwaway venv is made.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-/tmp/meterflow-server-choice-venv}"
OUT="${OUT:-/tmp/meterflow-server-choice-out}"
PYTHON="${PYTHON:-python3.11}"
PROJECT_PYTHON="${PROJECT_PYTHON:-$HERE/../../.venv/bin/python}"
DURATION="${DURATION:-15s}"
WARMUP="${WARMUP:-3s}"
THREADS="${THREADS:-2}"
CONNS="${CONNS:-32}"
ROUNDS="${ROUNDS:-2}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
CANDIDATES="${CANDIDATES:-a_raw_httptools b_raw_h11 c_starlette_httptools d_aiohttp e1_granian_rsgi e2_granian_asgi}"
URL_PATH="/v2/billing/meter_event_stream"
PKGS=(uvicorn==0.54.0 httptools==0.9.0 uvloop==0.23.0 h11==0.16.0 orjson==3.13.0
      starlette==1.10.0 aiohttp==3.14.5 granian==2.8.7)

command -v wrk >/dev/null || { echo "wrk not found: apt-get update && apt-get install -y wrk" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset not found (util-linux)" >&2; exit 1; }

needs_venv=0
for name in $CANDIDATES; do [[ $name == g* ]] || needs_venv=1; done
if [[ $needs_venv == 1 && ! -x "$VENV/bin/python" ]]; then
    echo "creating throwaway venv $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PKGS[@]}"
fi
mkdir -p "$OUT"
cd "$HERE"

free_port() {
    "$PROJECT_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# server_cmd NAME PORT -> sets the global array CMD
server_cmd() {
    local name=$1 port=$2
    local uv=("$VENV/bin/uvicorn" --host 127.0.0.1 --port "$port" --loop uvloop
              --no-access-log --log-level warning --lifespan on --app-dir "$HERE")
    local gr=("$VENV/bin/granian" --host 127.0.0.1 --port "$port" --workers 1 --loop uvloop
              --http 1 --no-ws --log-level warning --working-dir "$HERE")
    case "$name" in
        a_raw_httptools)       CMD=("${uv[@]}" --http httptools apps:raw_asgi_app) ;;
        b_raw_h11)             CMD=("${uv[@]}" --http h11 apps:raw_asgi_app) ;;
        c_starlette_httptools) CMD=("${uv[@]}" --http httptools --factory apps:make_starlette_app) ;;
        d_aiohttp)             CMD=("$VENV/bin/python" "$HERE/apps.py" aiohttp --host 127.0.0.1 --port "$port") ;;
        e1_granian_rsgi)       CMD=("${gr[@]}" --interface rsgi apps:rsgi_app) ;;
        e2_granian_asgi)       CMD=("${gr[@]}" --interface asgi apps:raw_asgi_app) ;;
        g0_ingest_httptools)   CMD=("$PROJECT_PYTHON" "$HERE/apps.py" uvicorn --protocol httptools --host 127.0.0.1 --port "$port") ;;
        g1_ingest_guarded)     CMD=("$PROJECT_PYTHON" "$HERE/apps.py" uvicorn --protocol guarded --host 127.0.0.1 --port "$port") ;;
        *) echo "unknown candidate $name" >&2; return 1 ;;
    esac
}

tree_pids() {  # PID and all its descendants
    local p
    echo "$1"
    for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$p"; done
}

tree_rss_kb() {
    local total=0 p kb
    for p in $(tree_pids "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

tree_cpu_ticks() {  # utime+stime of every process in the tree (all threads)
    local total=0 p t
    for p in $(tree_pids "$1"); do
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

cpu_stat() {  # "busy steal" jiffies of one CPU from /proc/stat (busy = user+nice+system+irq+softirq)
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat
}

SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local pids p i
    pids=$(tree_pids "$SERVER_PID")
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for i in $(seq 1 100); do
        local alive=0
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT INT TERM

wait_ready() {  # PORT
    local i
    for i in $(seq 1 150); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        if curl -sf -m 1 -X POST -H 'content-type: application/json' --data '{"events":[{},{}]}' \
                "http://127.0.0.1:$1$URL_PATH" | grep -q '"accepted":2'; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

CLK_TCK=$(getconf CLK_TCK)
RESULTS="$OUT/results.tsv"
printf 'candidate\tround\treq_s\tp50_ms\tp90_ms\tp99_ms\tmax_ms\terrors\tsrv_cpu_pct\tcore_other_pct\tcore_steal_pct\twrk_cpu_pct\trss_idle_mib\trss_after_mib\tload1\n' >"$RESULTS"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -Is)" >&2
echo "wrk: -t$THREADS -c$CONNS -d$DURATION --latency (warm-up $WARMUP), server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU" >&2

for round in $(seq 1 "$ROUNDS"); do
    for name in $CANDIDATES; do
        port=$(free_port)
        server_cmd "$name" "$port"
        log="$OUT/$name.r$round.server.log"
        taskset -c "$SERVER_CPU" "${CMD[@]}" >"$log" 2>&1 &
        SERVER_PID=$!
        if ! wait_ready "$port"; then
            echo "!! $name did not become ready; see $log" >&2
            stop_server
            continue
        fi
        url="http://127.0.0.1:$port$URL_PATH"
        rss_idle=$(tree_rss_kb "$SERVER_PID")
        taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s post.lua "$url" >/dev/null 2>&1
        load1=$(cut -d' ' -f1 /proc/loadavg)
        read -r core_busy0 core_steal0 < <(cpu_stat "$SERVER_CPU")
        cpu0=$(tree_cpu_ticks "$SERVER_PID")
        t0=$(date +%s.%N)
        wrk_out="$OUT/$name.r$round.wrk.txt"
        /usr/bin/time -f '%U %S' -o "$OUT/$name.r$round.wrk.time" \
            taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
            -s post.lua "$url" >"$wrk_out" 2>&1
        t1=$(date +%s.%N)
        cpu1=$(tree_cpu_ticks "$SERVER_PID")
        read -r core_busy1 core_steal1 < <(cpu_stat "$SERVER_CPU")
        rss_after=$(tree_rss_kb "$SERVER_PID")
        stop_server

        res=$(grep '^RESULT' "$wrk_out")
        get() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$res"; }
        errors=$(( $(get err_connect) + $(get err_read) + $(get err_write) + $(get err_status) + $(get err_timeout) ))
        read -r wu ws <"$OUT/$name.r$round.wrk.time"
        row=$(awk -v n="$name" -v r="$round" -v rps="$(get rps)" -v p50="$(get p50_us)" \
                  -v p90="$(get p90_us)" -v p99="$(get p99_us)" -v mx="$(get max_us)" -v e="$errors" \
                  -v c0="$cpu0" -v c1="$cpu1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
                  -v wu="$wu" -v ws="$ws" -v ri="$rss_idle" -v ra="$rss_after" -v l="$load1" \
                  -v b0="$core_busy0" -v b1="$core_busy1" -v s0="$core_steal0" -v s1="$core_steal1" 'BEGIN {
                el = t1 - t0
                srv = 100*(c1-c0)/hz/el
                printf "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%s\n",
                    n, r, rps, p50/1000, p90/1000, p99/1000, mx/1000, e,
                    srv, 100*(b1-b0)/hz/el - srv, 100*(s1-s0)/hz/el, 100*(wu+ws)/el,
                    ri/1024, ra/1024, l }')
        echo "$row" >>"$RESULTS"
        echo "$row" >&2
    done
done

echo
echo "# req/s and latency from wrk (closed loop, $CONNS connections); srv_cpu_pct = server CPU time /"
echo "# wall time (100 = one full core); core_other_pct = busy time on the server's CPU not charged to"
echo "# the server (other processes, irq/softirq); core_steal_pct = hypervisor steal on that CPU;"
echo "# rss = VmRSS summed over the server's process tree (granian: supervisor + 1 worker)."
column -t -s $'\t' "$RESULTS"
echo
echo "# mean of rounds"
awk -F'\t' 'NR > 1 { n[$1]++; rps[$1] += $3; p50[$1] += $4; p99[$1] += $6; rss[$1] += $14;
                     if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
            END { printf "candidate\treq_s\tp50_ms\tp99_ms\trss_after_mib\n";
                  for (i = 1; i <= k; i++) { c = order[i];
                      printf "%s\t%.0f\t%.2f\t%.2f\t%.1f\n", c, rps[c]/n[c], p50[c]/n[c], p99[c]/n[c], rss[c]/n[c] } }' \
    "$RESULTS" | column -t -s $'\t'
echo
echo "raw outputs: $OUT"
