# usage: . scripts/devenv.sh [VENV]   (sourced, from the repository root)
# Runs this checkout's sources with a virtual environment that has unirt and its plugins installed (not
# editable): activates VENV (default .venv), copies the installed compiled core into src/unirt/ when the tree
# has none, and puts src/ and every plugin ahead of the installed copies on PYTHONPATH. With an editable install
# (docs/development.md) none of this is needed.
_unirt_root="$(pwd)"
. "${1:-.venv}/bin/activate"
if ! ls "$_unirt_root"/src/unirt/_core*.so >/dev/null 2>&1; then
  _unirt_site="$(cd /tmp && python -c 'import os, unirt; print(os.path.dirname(unirt.__file__))')"
  cp "$_unirt_site"/_core*.so "$_unirt_root/src/unirt/"
fi
PYTHONPATH="$_unirt_root/src"
for _unirt_p in "$_unirt_root"/plugins/*/; do PYTHONPATH="$PYTHONPATH:${_unirt_p%/}"; done
export PYTHONPATH
unset _unirt_root _unirt_site _unirt_p
echo "PYTHONPATH: this checkout's src/ and plugins/"
