#!/usr/bin/env bash
# Benchmarks on a lent GPU machine, from the repository root, with the folder that
# `python -m bench.gpu.kit` made here carried along (device `run`: carry [".gpu"]):
#
#   bash bench/gpu/run.sh [STEP ...]     (default: compare placement step)
#
#   compare    ggserve and llama-server side by side, greedy then sampled, with the kernel
#              ceiling (docs/benchmarks.md, "One GPU")
#   placement  ggserve alone at concurrency 16, the executor's threads placed several ways
#              (-t, -C / --cpu-strict away from the frontend and clients, --prio, OpenMP's
#              wait policy), the baseline first and last
#   trace      the baseline and the placement apart again with -v (one log line per step)
#   step       one executor step in process, split into its parts, beside the bare loop; then
#              the same with the pick on the device (-bs)
#   contexts   one context decoding 16 rows against two contexts of 8 driven alternately (the
#              host's pick of one overlapping the other's decode: bench.micro.two_contexts)
#   dual       the same idea end to end, with no new code: ggserve at concurrency 16 with one
#              executor of 16 slots against two executors of 8 on the one GPU (--executors 2
#              --gpus 0,0: two processes, whose host work overlaps the other's kernels), alternated
#   ab         another commit against the working tree, alternated twice: the step in process
#              at 16 rows, then ggserve alone at 16. The other tree goes in .gpu/base first:
#              mkdir -p .gpu/base && git archive REV ggserve executor scheduler frontend ipc bench | tar -x -C .gpu/base
#
# THREADS, OUTPUT_LEN, PROMPTS and STEPS shrink a dry run (on a CPU here, CUDA_LIBS naming the
# cuBLAS and CUDA runtime folders: ggml finds no GPU and runs on the CPU).
#
# Results, server logs and tables go to $OUT/results.tgz, packed again after each step (the device
# returns at most 8 files, and what is under $OUT also when a run is cut short); the tables print.
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}
RES=/tmp/gpu-results
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1
SECONDS=0

# the kit: llama.cpp's CUDA build, llama_cpp, ggserve's packages for this Python, the model
KIT=/tmp/kit
rm -rf "$KIT" /tmp/site
mkdir -p "$KIT"
tar -xJf "$PWD"/.gpu/kit.tar.xz -C "$KIT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$KIT"/wheels/*.whl
cp -r "$KIT"/site/. /tmp/site/
mkdir -p /tmp/site/llama_cpp/lib
cp -a "$KIT"/lib/*.so* /tmp/site/llama_cpp/lib/
export PYTHONPATH=/tmp/site:$PWD
# cuBLAS and the CUDA runtime: the image's PyTorch has them (CUDA 13, as the build here)
CUDA_LIBS=${CUDA_LIBS:-$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')}
export LD_LIBRARY_PATH=$CUDA_LIBS:/tmp/site/llama_cpp/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
# bench.baselines looks for llama-server and llama-batched-bench in its cache
export XDG_CACHE_HOME=/tmp/cache
VERSION=$(python3 -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
BIN=$XDG_CACHE_HOME/ggserve/llama.cpp-$VERSION/build/bin
mkdir -p "$BIN"
cp "$KIT"/lib/llama-server "$KIT"/lib/llama-batched-bench "$BIN"/
python3 -m bench.micro.gguf_standin unpack "$KIT"/model.xz /tmp/model.gguf
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU"; } | tee "$RES"/gpu.txt
nproc | tee -a "$RES"/gpu.txt
echo "set up in ${SECONDS}s"

COMMON=(-m /tmp/model.gguf -np 16 -c 8192 -t "${THREADS:-4}" --input-len 32 --output-len "${OUTPUT_LEN:-128}"
        --num-prompts "${PROMPTS:-64}" --quiet-cores 1.0 --quiet-timeout 20 --retries 0)

compare() {
    python3 -m bench compare --servers ggserve,llama-server "${COMMON[@]}" --concurrency 1,4,16 \
        --extra-args "ggserve=-ngl 99" --extra-args "llama-server=-ngl 99" \
        --extra-args "llama-batched-bench=-ngl 99" --output-dir "$RES"/greedy
    python3 -m bench compare --servers ggserve,llama-server "${COMMON[@]}" --concurrency 4,16 \
        --sampling default --no-batched-bench --extra-args "ggserve=-ngl 99" \
        --extra-args "llama-server=-ngl 99" --output-dir "$RES"/sampled
    summary greedy
    summary sampled
}

# one ggserve run at concurrency 16: LABEL, then `taskset` CPUs or "", then ggserve's flags
placed() {
    local label=$1 cpus=$2 flags=$3
    local pin=()
    [ -n "$cpus" ] && pin=(taskset -c "$cpus")
    "${pin[@]}" python3 -m bench compare --servers ggserve "${COMMON[@]}" --concurrency 16 \
        --no-batched-bench --extra-args "ggserve=-ngl 99 $flags" --output-dir "$RES/placement-$label"
}

placement() {
    placed base "" ""
    placed t1 "" "-t 1"
    placed t16 "" "-t 16"
    placed apart 4-15 "-C 0xf --cpu-strict 1"
    placed apart-prio 4-15 "-C 0xf --cpu-strict 1 --prio 2"
    OMP_WAIT_POLICY=PASSIVE placed passive "" ""
    placed base2 "" ""
    summary placement
}

# one line per run of the step: server, concurrency, output tok/s, TTFT and TPOT p50
summary() {
    python3 - "$RES" "$1" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob(f"{sys.argv[2]}*/results.jsonl")):
    for line in path.read_text().splitlines():
        r = json.loads(line)
        print(f"{path.parent.name:24} {r['server']:12} c={r['load']:<3} {r['output_throughput']:9.1f} tok/s  "
              f"TTFT p50 {r['ttft_p50_ms']:7.1f} ms  TPOT p50 {r['tpot_p50_ms']:6.2f} ms  err {r['errors']}")
PY
}

trace() {
    placed trace-base "" "-v"
    placed trace-apart 4-15 "-v -C 0xf --cpu-strict 1"
    summary placement-trace
}

step() {
    python3 -m bench.micro.executor_step --batch 16,4,1 --steps "${STEPS:-200}" --threads "${THREADS:-4}" \
        --model /tmp/model.gguf \
        | tee "$RES"/executor-step.txt
    python3 -m bench.micro.executor_step --batch 16,4,1 --steps "${STEPS:-200}" --threads "${THREADS:-4}" \
        --model /tmp/model.gguf --backend-sampling \
        | tee "$RES"/executor-step-device.txt
}

contexts() {
    python3 -m bench.micro.two_contexts --rows 16 --steps "${STEPS:-200}" --threads "${THREADS:-4}" --rounds 3 \
        --model /tmp/model.gguf 2>/dev/null | tee "$RES"/two-contexts.txt
}

dual() {
    local round
    for round in 1 2; do
        placed "dual-one$round" "" ""
        placed "dual-two$round" "" "--executors 2 --gpus 0,0 -np 8"
    done
    summary placement-dual
}

# a command (or one of the functions here) run on DIR's tree
in_tree() {
    local dir=$1
    shift
    (cd "$dir" && PYTHONPATH=/tmp/site:$dir "$@")
}

ab() {
    local tree label dir round
    for round in 1 2; do
        for tree in base work; do
            label=$tree$round
            dir=$PWD/.gpu/base
            [ "$tree" = work ] && dir=$PWD
            in_tree "$dir" python3 -m bench.micro.executor_step --batch 16 --steps "${STEPS:-200}" \
                --threads "${THREADS:-4}" --model /tmp/model.gguf 2>/dev/null | grep '^| 16' | sed "s/^/$label /" \
                | tee -a "$RES"/ab-step.txt
        done
    done
    for round in 1 2; do
        in_tree "$PWD/.gpu/base" placed "ab-base$round" "" "" > /dev/null 2>&1
        in_tree "$PWD" placed "ab-work$round" "" "" > /dev/null 2>&1
    done
    summary placement-ab
}

for name in "${@:-compare placement step}"; do
    for s in $name; do
        echo "== $s (${SECONDS}s)"
        "$s" || echo "== $s failed"
        tar czf "$OUT"/results.tgz -C "$RES" .
    done
done
echo "done in ${SECONDS}s"
