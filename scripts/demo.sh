#!/usr/bin/env bash
# One command: set up a fresh machine and run the built-in demo (synthetic corpus -> pretrain -> evaluate).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
vatt demo "$@"
