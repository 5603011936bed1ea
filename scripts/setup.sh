#!/bin/sh
# Installs every Debian 12 package the build, tests, benchmarks and reference scripts need, then builds.
# Usage: scripts/setup.sh [--no-build]
set -eu
cd "$(dirname "$0")/.."

# build and tests
PACKAGES="build-essential cmake pkg-config libopencv-dev libopenblas-dev libpng-dev libcmocka-dev libxml2-dev
libjansson-dev libmatio-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev"
# reference scripts (tools/) and benchmarks (bench/): PyTorch, ONNX, NumPy, OpenCV contrib, Node.js for
# onnxruntime-node, valgrind for memory checks
PACKAGES="$PACKAGES python3 python3-numpy python3-torch python3-onnx python3-opencv libopencv-contrib-dev nodejs
valgrind"
# the Caffe fixtures (tools/caffe_fixture.py): Python protobuf messages compiled by protoc from our caffe.proto
PACKAGES="$PACKAGES python3-protobuf protobuf-compiler"
# the MultiBox loss reference (tools/multibox_reference.py): SciPy's optimal assignment, independent of ours
PACKAGES="$PACKAGES python3-scipy"
# the crop set of bench/train_crops.sh (tools/make_crops.py): Pillow
PACKAGES="$PACKAGES python3-pil"
# the viewer page's test (tests/test_viewer.c): headless Chromium takes screenshots of it, with fonts for its labels
PACKAGES="$PACKAGES chromium fonts-dejavu-core"
# MPI (optional at build time, README "Many processes"): `mpirun -n N inception detect|proposals|train`
PACKAGES="$PACKAGES libopenmpi-dev openmpi-bin"
# peak memory in bench/detect.sh: GNU time (/usr/bin/time -f %M)
PACKAGES="$PACKAGES time"
# Debian's npm is a package of its own; NodeSource's nodejs (seen on some machines) ships npm and conflicts with it.
command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES npm"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# ONNX Runtime for the export test (tools/export_check.py) and bench/forward.sh: npm's onnxruntime-node, into bench/
if [ ! -d bench/node_modules/onnxruntime-node ]; then
    (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund >/dev/null)
fi

if [ "${1:-}" != "--no-build" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j "$(nproc)"
fi
