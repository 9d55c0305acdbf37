#!/bin/sh
# Installs the batch-outputs CLI and library on a Batch compute node from this application
# package, without internet: every wheel it needs is in wheels/ beside this script (CPython 3.10
# and 3.12 on manylinux x86_64, the Pythons of Batch's Ubuntu 22.04 and 24.04 images).
#
#   sh "$AZ_BATCH_APP_PACKAGE_batch_outputs/install.sh" [TARGET]
#
# TARGET (default: $AZ_BATCH_NODE_SHARED_DIR/batch-outputs, or ./batch-outputs off Batch)
# becomes a virtual environment holding batch-outputs; PYTHON picks the interpreter (default
# python3). Needs neither pip nor ensurepip on the node: pip runs from its own wheel, here.
# Run as the pool's start task with admin elevation to also link batch-outputs into
# /usr/local/bin (BATCH_OUTPUTS_LINK_DIR), on every task's PATH.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
python=${PYTHON:-python3}
target=${1:-${AZ_BATCH_NODE_SHARED_DIR:-$PWD}/batch-outputs}
wheels="$here/wheels"

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else "batch-outputs needs Python 3.9 or newer")'
set -- "$wheels"/pip-*.whl
[ -f "$1" ] || { echo "install.sh: no pip wheel in $wheels" >&2; exit 1; }
pip_wheel=$1

# --without-pip: Ubuntu's python3 has venv but not ensurepip unless python3-venv is installed.
"$python" -m venv --without-pip "$target"
"$target/bin/python" "$pip_wheel/pip" install --quiet --disable-pip-version-check --no-index \
    --find-links "$wheels" batch-outputs

link_dir=${BATCH_OUTPUTS_LINK_DIR-/usr/local/bin}  # set it empty to link nothing
if [ -n "$link_dir" ] && [ -d "$link_dir" ] && [ -w "$link_dir" ]; then
    ln -sf "$target/bin/batch-outputs" "$link_dir/batch-outputs"
fi
echo "batch-outputs installed: $target/bin/batch-outputs"
