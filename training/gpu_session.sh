#!/bin/bash
# One device `run` call that trains faces128 and taichi64 side by side on the lent GPU (an
# H200 has room for both and its 16 cores feed both loaders), then exports each run to $OUT
# as training/ holds it (float16, discriminator included, iterations counted over all
# sessions). mgif64 (bundled, past its bar) trains only when RUNS_LIST names it.
#
#   first call (carry [".gpu/data/faces128", ".gpu/data/taichi"]):
#       bash training/gpu_session.sh
#   a second call while the machine is still warm (it goes back 30 s after a call):
#       RESUME=1 MINUTES=4 bash training/gpu_session.sh
#
# The first call carries on from training/NAME.safetensors with a fresh Adam (--init), or
# starts NAME from scratch while training/ has no such file (mgif64, bundled, since taichi64's
# file took its room in the carry; its log stays as the record); the second
# continues the same run folders with their optimizer state (--resume). With
# MGIF_DROP_LR=2e-6 the second call also branches mgif64 at that rate (runs/mgif64-drop,
# exported as $OUT/mgif64-drop.safetensors), to see whether the drop pays yet.
#
# A/B arms: RUNS_LIST names the runs (default "faces128 taichi64"); a run NAME-ARM trains
# training/NAME.safetensors with training/arms/NAME-ARM.yaml (an uncommitted copy of
# training/NAME.yaml with the change under test) and is exported as $OUT/NAME-ARM.*.
# MGIF_LR sets the mgif64 runs' rate (default 2e-5; 2e-6 for a drop of every arm at once).
#
# A run whose data has a val/ split (gpu.py prep --val) is validated on it every
# VALIDATE_EVERY iterations, and its best weights go out as well, as $OUT/RUN-best.safetensors.
# A run NAME-scratch starts NAME from scratch even beside a committed file (the clean test of
# a val split cut from train/, which the committed weights have seen) and reads its data from
# FACES_SCRATCH_DATA or TAICHI_SCRATCH_DATA (default the run's usual data), e.g.
#   RUNS_LIST="faces128 taichi64 taichi64-scratch" TAICHI_SCRATCH_DATA=.gpu/data/taichi-val
set -u
MINUTES=${MINUTES:-7.6}       # of training per run; start-up and export take about 30 s more
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-runs}            # the run folders (kept on the machine between warm calls)
FACES_DATA=${FACES_DATA:-.gpu/data/faces128}
MGIF_DATA=${MGIF_DATA:-.gpu/data/mgif64}
TAICHI_DATA=${TAICHI_DATA:-.gpu/data/taichi}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}  # more options for both runs, e.g. --batch-size 2 to try it on a CPU
VALIDATE_EVERY=${VALIDATE_EVERY:-250}  # for a run whose data has a val/ split (gpu.py prep --val)
CONFIG_ITERATIONS=40000       # both configs' `iterations`: REMAINING is that minus the total

committed_total() {  # the total the committed file stands at: third field of the log's last
    # line; 0 without a file (the run then starts from scratch) or without a log yet
    { [ -f "training/$1.safetensors" ] && [ -f "training/$1.log" ]; } || { echo 0; return; }
    awk '!/^#/ && NF {total = $3} END {print total + 0}' "training/$1.log"
}

train() {  # NAME RUN DATA WORKERS [train options...]: training/NAME.* -> $RUNS/RUN, $OUT/RUN.*
    local name=$1 run=$2 data=$3 workers=$4 previous blend config=training/$1.yaml
    shift 4
    [ -f "training/arms/$run.yaml" ] && config=training/arms/$run.yaml
    previous=$(committed_total "$name")
    [ "$run" = "$name-scratch" ] && previous=0  # counts from 0 as well
    [ -d "$data/val" ] && set -- --validate-every "$VALIDATE_EVERY" "$@"
    if [ -n "${RESUME:-}" ]; then  # the run's config.json as the first call left it
        set -- --resume "$@"
    elif [ ! -f "training/$name.safetensors" ] || [ "$run" = "$name-scratch" ]; then
        set -- --config "$config" --iterations "$CONFIG_ITERATIONS" "$@"
    else
        set -- --config "$config" --init "training/$name.safetensors" \
            --iterations $((CONFIG_ITERATIONS - previous)) "$@"
    fi
    python3 training/gpu.py run train "$data" -o "$RUNS/$run" \
        --device "$DEVICE" --workers "$workers" --max-minutes "$MINUTES" "$@" $TRAIN_OPTIONS \
        > "$OUT/$run.log" 2>&1
    # a run trained without the blend head is exported with it, untrained, as training/ keeps
    # it: an even blend for taichi64, 0.9 on the warped source for faces128 (chosen on 3 of
    # its test clips, training/README.md); mgif64 (bundled as trained) goes out as it is
    case $name in
        mgif64) blend= ;;
        faces128) blend="--blend ${FACES_BLEND:-0.9}" ;;
        *) blend=--blend ;;
    esac
    python3 training/gpu.py export "$RUNS/$run" "$OUT/$run.safetensors" --previous "$previous" \
        $blend >> "$OUT/$run.log" 2>&1
    # validated (its data has a val/ split): the best weights on it go out too
    [ -f "$RUNS/$run/best.safetensors" ] && python3 training/gpu.py export "$RUNS/$run" \
        "$OUT/$run-best.safetensors" --best --previous "$previous" $blend >> "$OUT/$run.log" 2>&1
}

# faces128 decodes 128 px clips for every pair, so it gets most of the loader processes
RUNS_LIST=${RUNS_LIST:-faces128 taichi64}
runs=$RUNS_LIST
if [ -n "${RESUME:-}" ] && [ -n "${MGIF_DROP_LR:-}" ]; then
    rm -rf "$RUNS/mgif64-drop" && cp -r "$RUNS/mgif64" "$RUNS/mgif64-drop"
    train mgif64 mgif64-drop "$MGIF_DATA" 3 --lr "$MGIF_DROP_LR" &
    runs="$runs mgif64-drop"
fi
set -- $RUNS_LIST
for run in $RUNS_LIST; do
    case $run in
        faces128-scratch) train faces128 "$run" "${FACES_SCRATCH_DATA:-$FACES_DATA}" \
            $((10 - $# + 2)) --subject face & ;;
        faces128*) train faces128 "$run" "$FACES_DATA" $((10 - $# + 2)) --subject face & ;;
        mgif64*) train mgif64 "$run" "$MGIF_DATA" $((5 - $# + 2)) --lr "${MGIF_LR:-2e-5}" & ;;
        taichi64-scratch) train taichi64 "$run" "${TAICHI_SCRATCH_DATA:-$TAICHI_DATA}" \
            $((5 - $# + 2)) --subject body & ;;
        taichi64*) train taichi64 "$run" "$TAICHI_DATA" $((5 - $# + 2)) --subject body & ;;
    esac
done
wait
for run in $runs; do
    tail -n 2 "$OUT/$run.log"
done
