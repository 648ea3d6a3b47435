#!/usr/bin/env bash
# Prepare, on this (networked) machine, what a GPU session carries to the device machine for
# issue 5's benchmarks (docs/diffusion.md, "GPU session"):
#   .whl/            wheels the device image lacks for OUR pipeline (stock diffusers, peft)
#   .whl-official/   the older stack the OFFICIAL ColorFlow code needs (its diffusers fork
#                    imports names transformers >= 4.46 removed), installed to its own --target
#   .cache/ColorFlow the parts of a TencentARC/ColorFlow checkout its pipeline imports
#                    (diffusers/src, colorflow_utils, BidirectionalTranslation; ~13 MB).
#                    Academic licence: never committed, only carried.
# Usage: bash bench/device_prepare.sh /path/to/TencentARC-ColorFlow-checkout-or-git-dir
set -euo pipefail
src=${1:?usage: bench/device_prepare.sh COLORFLOW_CHECKOUT_OR_GIT_DIR}
cd "$(dirname "$0")/.."
# The device runs Python 3.12 on x86-64 (device/KINDS.md).
download() {  # dir, requirement...
    local dir=$1; shift
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$dir" "$@"
}
download .whl diffusers==0.42.1 peft==0.21.2
download .whl-official transformers==4.44.2 tokenizers==0.19.1 huggingface_hub==0.25.2 peft==0.12.0
rm -rf .cache/ColorFlow && mkdir -p .cache/ColorFlow
if [ -d "$src/.git" ] || git -C "$src" rev-parse --is-bare-repository >/dev/null 2>&1; then
    git -C "$src" archive HEAD diffusers/src colorflow_utils BidirectionalTranslation | tar -x -C .cache/ColorFlow
else
    cp -r "$src/diffusers" "$src/colorflow_utils" "$src/BidirectionalTranslation" .cache/ColorFlow/
fi
du -sh .whl .whl-official .cache/ColorFlow
