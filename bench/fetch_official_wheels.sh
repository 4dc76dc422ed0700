#!/usr/bin/env sh
# Download, here, the wheels that the official SAM 2 code (SAM2_SRC) imports beyond this
# project's own dependencies, into one folder that can be carried to a GPU machine with no
# network:
#
#   sh bench/fetch_official_wheels.sh [DIR]          # default DIR: .official/wheels
#   # on the GPU machine:
#   pip install --no-index --find-links DIR hydra-core omegaconf iopath
#   SAM2_SRC=<checkout of facebookresearch/sam2 at 2b90b9f> python bench/gpu_acceptance.py
#
# antlr4-python3-runtime 4.9.3 (what omegaconf pins) and iopath are published as source only:
# `pip wheel` builds their pure-Python wheels here. The others are downloaded as wheels for
# this interpreter and platform. Nothing is installed.
set -eu
DIR="${1:-.official/wheels}"
mkdir -p "$DIR"
python -m pip wheel --no-deps --wheel-dir "$DIR" \
    "hydra-core==1.3.2" "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" \
    "iopath==0.1.10" "portalocker>=2.0"
ls -1 "$DIR"
