#!/usr/bin/env bash
# Build (once) and print the path of gmem's Python environment.
#
# The venv lives outside the clone, keyed by a hash of everything that decides its contents, so a
# fresh clone reuses it when present and builds it when not (a new machine has nothing).
# Override the location with GMEM_VENV=/path. Set GMEM_PYTHON to choose the interpreter (3.10+).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${GMEM_PYTHON:-python3}"
key="$(cat "$root/settings.ini" "$root/setup.py" "$root/requirements-lock.txt" "$root/tools/env.sh" \
       <("$py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-12)"
venv="${GMEM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem/venv-$key}"
if [ ! -f "$venv/.complete" ]; then
  echo "gmem: building the environment in $venv (first run only, a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip wheel 'setuptools<81' >&2
  # requirements-lock.txt pins every package to versions that install together (torch 2.14.1 with
  # torchvision 0.29.1). Dependencies only here: the package itself is installed from the clone below.
  "$venv/bin/python" -m pip install -q -c "$root/requirements-lock.txt" \
      $(cd "$root" && "$py" -c "
import configparser; c = configparser.ConfigParser(delimiters=['=']); c.read('settings.ini')
print(' '.join(c['DEFAULT']['requirements'].split() + c['DEFAULT']['dev_requirements'].split()))") \
      2> >(grep -v "is ignored: it is neither" >&2) >&2
  # Test oracle only: CompVis' original LDM/taming autoencoder code, which the VA-VAE conversion in
  # nbs/api/06_tokenizers is checked against. Its declared dependencies (pytorch-lightning, omegaconf) are not
  # needed by the module the test imports, so it goes in without them.
  "$venv/bin/python" -m pip install -q --no-deps taming-transformers==0.0.1 >&2
  touch "$venv/.complete"
fi
# (Re)point the venv at this clone: cheap, and makes the `gmem` command and `import gmem` use it.
if ! log="$(cd "$root" && "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>&1)"; then
  echo "$log" | grep -v "is ignored: it is neither" >&2; echo "gmem: installing the package failed" >&2; exit 1
fi
echo "$venv"
