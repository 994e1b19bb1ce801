#!/usr/bin/env bash
# The GPU check of the Triton kernels (issue 18), for a machine with a CUDA GPU and the project
# installed (`pip install -e .` brings torch's CUDA wheel and Triton). Run from anywhere:
#
#     bash benchmarks/gpu_check.sh          # about 3-8 minutes, most of it Triton compiling
#
# 1. golden digests: compiled Triton on CUDA tensors vs the CPU reference and the golden digests
#    (projections, theta_0, whole subspaces with layerwise scales and include patterns);
# 2. the existing CUDA test of test_subspace.py (auto: CUDA tensors now take Triton);
# 3. the CUDA rows of benchmarks/regen.py (Triton and reference vs device-to-device and pinned
#    host-to-device copies of the same bytes, at D = 10M and 124M, d = 1000), bits compared;
# 4. every case of tests/test_triton.py (the C tests' cases) compiled on CUDA;
# 5. the conformance table (tests/conformance.json) on compiled Triton.
# Each step has its own timeout, so a slow step cannot hide the others; the last line sums up.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
unset TRITON_INTERPRET SQUEEZE_KERNEL

echo "== card"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || echo "nvidia-smi not found"
$PY -c "import torch, triton; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| triton', triton.__version__, '|', torch.cuda.get_device_name(0), '| SMs', torch.cuda.get_device_properties(0).multi_processor_count)"

echo "== 1. golden digests, compiled Triton on CUDA == CPU reference == golden"
timeout 180 $PY tests/test_triton.py --device cuda --suite golden; golden=$?

echo "== 2. tests/test_subspace.py CUDA test (auto path)"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_subspace.py -k cuda; subspace=$?

echo "== 3. benchmark (CUDA rows)"
timeout 200 $PY benchmarks/regen.py --sizes "" --cuda-sizes 10M,124M --d 1000 --repeats 10; bench=$?

echo "== 4. every case, compiled on CUDA"
timeout 200 $PY tests/test_triton.py --device cuda --suite all; cases=$?

echo "== 5. the conformance table, compiled Triton on CUDA"
timeout 200 $PY tests/test_conformance.py --backend triton --device cuda; table=$?

echo "== exit codes (0 = passed, 124 = timed out): golden=$golden subspace_cuda=$subspace bench=$bench all_cases=$cases conformance=$table"
[ "$golden" -eq 0 ] && [ "$subspace" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$cases" -eq 0 ] && [ "$table" -eq 0 ]
