#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one time-boxed run from the repository root:
#
#   speed    a W1/A1 QAT step and the deployed network's latency against float on the GPU
#            (benchmarks/quantize_speed.py --device cuda), run first, alone on the GPU;
#   recipes  the CUDA path of every recipe: tests/engines/test_every_recipe.py's stopped-and-resumed
#            run with the GPU visible, so every `mltk train` takes device=auto -> cuda and
#            amp=auto -> bf16. Resume is bit-identical on CPU only: a difference there is a
#            finding, a crash is a defect;
#   suite    the whole test suite with the GPU visible (two-rank tests left out: one GPU cannot
#            hold two NCCL ranks). Exact CPU expectations (golden numbers, bit-identical resume)
#            may fail; the tracebacks say which;
#   cifar10  W1/A1 MobileNetV2 on CIFAR-10 at GPU scale, every method, 3 seeds
#            (benchmarks/quantize.py --section cifar10).
#
#   benchmarks/gpu_checks.sh OUT_DIR SECONDS PART... [-- PYTEST_ARGS]
#
# Logs, junit XML and the benchmarks' JSON land in OUT_DIR. For cifar10, MLTK_BENCH_CIFAR_ZIP may name
# a class-balanced part of the CIFAR-10 train zip in the same layout; the report says how many images.
set -u
out=${1:?usage: benchmarks/gpu_checks.sh OUT_DIR SECONDS PART... [-- PYTEST_ARGS]}
budget=${2:?}
shift 2
parts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do parts+=("$1"); shift; done
[ $# -gt 0 ] && shift
extra_tests=("$@")
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MLTK_NO_PROGRESS=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  echo "CPUs: $(nproc)"; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

if wants speed; then
    echo "== speed ($(left) s left)"
    timeout 90 python3 benchmarks/quantize_speed.py --device cuda --batch 128 --label "gpu, batch 128" \
        --note "CUDA, float32 (no autocast), synchronised around every timed call." \
        --step-repeats 10 --latency-repeats 10 --data cifar > "$out/quantize_speed.log" 2>&1
    echo "exit $?"; tail -2 "$out/quantize_speed.log" | cut -c1-600
    cp benchmarks/results/quantize_speed.json "$out/" 2>/dev/null
fi

if wants cifar10; then
    echo "== cifar10 in the background ($(left) s left)"
    timeout $(($(left) - 20)) python3 benchmarks/quantize.py --section cifar10 --cifar-train 15000 --fp-epochs 20 \
        --cifar-epochs 6 --seeds 0 1 2 --jobs 12 --work /tmp/quantize-cifar10 \
        --cifar-variants xnor reactnet "bitat, identity transform" "bitat, pca transform" \
        > "$out/quantize_cifar10.log" 2>&1 &
    cifar=$!
fi

tests=()
wants recipes && tests+=(tests/engines/test_every_recipe.py::test_stopped_and_resumed_ends_bit_identical)
wants suite && tests+=(tests)
tests+=("${extra_tests[@]}")
if [ ${#tests[@]} -gt 0 ]; then
    limit=$(($(left) - 15))
    echo "== pytest ${tests[*]} ($limit s)"
    timeout "$limit" python3 -m pytest -v -rfE --tb=short --timeout 200 -p no:cacheprovider -n 14 \
        -k "not gloo and not ddp and not ranks" --junitxml "$out/pytest_cuda.xml" "${tests[@]}" \
        > "$out/pytest_cuda.log" 2>&1
    echo "pytest exit $?"; grep -E "^(FAILED|ERROR) |[0-9]+ (passed|failed)" "$out/pytest_cuda.log" | cut -c1-300 | tail -40
fi

if wants cifar10; then
    wait "$cifar"; echo "cifar10 exit $?"; tail -20 "$out/quantize_cifar10.log"
    cp benchmarks/results/quantize.json "$out/" 2>/dev/null
fi
echo "== done in $(($(date +%s) - start)) s"
