#!/usr/bin/env bash
# Time pipecat's TwilioFrameSerializer on the bench frames, in a throwaway virtualenv outside the repo.
# Usage: bench/pipecat_anchor.sh [--frames N] [--repeats R]
# Env: PYTHON (interpreter for the venv; default: the one behind .venv), PIPECAT_SPEC (default pipecat-ai).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" && -x "$here/../.venv/bin/python" ]]; then
  python="$("$here/../.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
fi
python="${python:-python3}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pipecat-anchor.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log="$tmp/install.log"
if ! { "$python" -m venv "$tmp/venv" \
  && "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "${PIPECAT_SPEC:-pipecat-ai}"; } \
  >"$log" 2>&1; then
  reason="$({ grep -E '^ERROR' "$log" || true; } | tail -n 1)"
  reason="${reason:-$(tail -n 1 "$log")}"
  echo "pipecat could not be installed: ${reason:-unknown error}"
  exit 0
fi

LOGURU_LEVEL=WARNING "$tmp/venv/bin/python" "$here/pipecat_anchor.py" "$@"
