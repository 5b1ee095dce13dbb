#!/usr/bin/env bash
# Installs the Debian packages braid needs to build and test; as root it runs apt-get itself,
# otherwise it prints the exact apt line to run. Usage: scripts/deps.sh [--tests] [--train] [--docs]
set -euo pipefail

pkgs=(cmake make gcc g++ pkg-config libopenblas-dev libsentencepiece-dev libuv1-dev libxxhash-dev libhttp-parser-dev libjansson-dev)
for a in "$@"; do
  if [[ "$a" == "--tests" ]]; then
    # cmocka for the unit tests; python3-torch for the reference implementation the golden files came from
    pkgs+=(libcmocka-dev)
    # headless Chromium for braid serve's chat page test (tests/serve_page.mjs drives it with playwright-core)
    pkgs+=(chromium)
    # nginx for the load-balancer configuration of docs/DEPLOY.md (tests/deploy_test.sh)
    pkgs+=(nginx-light)
    # clang and its libFuzzer runtime: the clang build and the fuzzers in tests/fuzz
    pkgs+=(clang-14 libclang-rt-14-dev)
  elif [[ "$a" == "--train" ]]; then
    # the bundled model's pipeline: PyTorch trainer, SentencePiece trainer/encoder (CLI and Python)
    pkgs+=(python3-torch python3-numpy python3-sentencepiece sentencepiece)
  elif [[ "$a" == "--docs" ]]; then
    # the figures in docs/ drawn from CSV (scripts/plot_memory.py, scripts/plot_loss.py)
    pkgs+=(python3-matplotlib)
  fi
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
  echo "braid: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "braid: missing Debian packages; run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
