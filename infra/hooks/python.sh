# Sourced by the azd hooks (POSIX sh, from the repository root). Finds a Python the tooling runs
# on, 3.11 to 3.13 (DEPLOY_PYTHON names one; else python3.11, python3.12, python3.13, python3 on
# PATH, in that order), and prepares the repository's venv with it when a step needs the app's
# libraries. Stops with what to install when there is none.

HOOK_PYTHON=
hook_python() {
  tried=
  candidates="python3.11 python3.12 python3.13 python3"
  [ -z "${DEPLOY_PYTHON:-}" ] || candidates=$DEPLOY_PYTHON  # named: that one or none
  for candidate in $candidates; do
    exe=$(command -v "$candidate" 2>/dev/null) || continue
    version=$("$exe" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    case "$version" in
      3.11|3.12|3.13) HOOK_PYTHON=$exe; return 0 ;;
    esac
    tried="$tried $candidate ($version)"
  done
  [ -z "${DEPLOY_PYTHON:-}" ] || tried="$tried; DEPLOY_PYTHON=$DEPLOY_PYTHON"
  {
    echo "error: the deployment hooks need Python 3.11, 3.12 or 3.13 and found none on PATH${tried:+ (found:$tried)}."
    echo "  Install one (Debian/Ubuntu: sudo apt install python3.11 python3.11-venv; macOS: brew install python@3.12;"
    echo "  or pyenv install 3.12), or name one: azd env set DEPLOY_PYTHON /path/to/python3.12"
  } >&2
  exit 1
}

# The venv the app's libraries are in: DEPLOY_VENV when set (a venv you keep up to date yourself,
# used as it is), else the repository's .venv, created or brought up to date by make.
HOOK_VENV_PYTHON=
hook_venv() {
  [ -n "$HOOK_PYTHON" ] || hook_python
  if [ -n "${DEPLOY_VENV:-}" ]; then
    HOOK_VENV_PYTHON=$DEPLOY_VENV/bin/python
    [ -x "$HOOK_VENV_PYTHON" ] || { echo "error: DEPLOY_VENV=$DEPLOY_VENV has no bin/python" >&2; exit 1; }
    return 0
  fi
  if [ -x .venv/bin/python ]; then
    version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || version=unknown
    case "$version" in
      3.11|3.12|3.13) ;;
      *) echo "error: .venv runs Python $version; the tooling needs 3.11 to 3.13: remove it (rm -rf .venv) and" \
              "run the hook again, it is recreated with $HOOK_PYTHON" >&2; exit 1 ;;
    esac
  fi
  command -v make >/dev/null 2>&1 || {
    echo "error: the hooks build the venv with make: install GNU make (sudo apt install make; xcode-select --install)" >&2
    exit 1
  }
  # azd may build the package (prepackage) while postprovision runs: one make at a time.
  waited=0
  until mkdir .venv.lock 2>/dev/null; do
    [ "$waited" -lt 900 ] || { echo "error: .venv.lock is still there after 15 minutes: if no hook is" \
                                    "running, remove it (rmdir .venv.lock)" >&2; exit 1; }
    sleep 3; waited=$((waited + 3))
  done
  trap 'rmdir .venv.lock 2>/dev/null' EXIT
  echo "preparing .venv (Python: $HOOK_PYTHON; the first time this installs requirements-dev.txt)"
  make -s .venv/.installed PYTHON="$HOOK_PYTHON" VENV=.venv
  rmdir .venv.lock; trap - EXIT
  HOOK_VENV_PYTHON=.venv/bin/python
}
