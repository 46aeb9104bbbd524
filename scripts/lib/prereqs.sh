# Installs the programs the demo and the tests need, when they are missing.
# Sourced (not run) by scripts/demo.sh and scripts/test.sh, so both find and install
# things the same way the tests themselves look for them (crates/testkit/src/bin.rs,
# crates/redis-sync-manager/tests/browser.rs).
#
#   prereqs_require TAG ITEM...
#
# TAG prefixes every message ("demo", "test"). ITEMs: redis-server redis-cli chromium
# python3 unzip pip. On Debian/Ubuntu the missing ones are installed with apt-get (as root
# directly, else through sudo), after one line saying what is installed. Elsewhere one line
# names what is missing and the command to install it, and the script exits 1.

# True when ITEM is usable, looked up as the tests look it up.
prereqs_have() {
  case "$1" in
    # The test kit takes $REDIS_SERVER / $REDIS_CLI before PATH.
    redis-server) [ -x "${REDIS_SERVER:-}" ] || command -v redis-server >/dev/null 2>&1 ;;
    redis-cli) [ -x "${REDIS_CLI:-}" ] || command -v redis-cli >/dev/null 2>&1 ;;
    # browser.rs takes $CHROMIUM, then the first of these names on PATH.
    chromium)
      [ -n "${CHROMIUM:-}" ] ||
        command -v chromium >/dev/null 2>&1 ||
        command -v chromium-browser >/dev/null 2>&1 ||
        command -v google-chrome >/dev/null 2>&1
      ;;
    # The version-matrix install script downloads wheels with `python3 -m pip`.
    pip) python3 -m pip --version >/dev/null 2>&1 ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

# The Debian package that provides ITEM.
prereqs_debian_pkg() {
  case "$1" in
    redis-cli) echo redis-tools ;;
    pip) echo python3-pip ;;
    *) echo "$1" ;;
  esac
}

# The Homebrew formula for ITEM (for the one-line hint on other systems).
prereqs_brew_pkg() {
  case "$1" in
    redis-server | redis-cli) echo redis ;;
    chromium) echo "--cask chromium" ;;
    python3 | pip) echo python ;;
    *) echo "$1" ;;
  esac
}

prereqs_is_debian() {
  [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1
}

prereqs_require() {
  local tag=$1 item pkg
  shift
  local missing=() pkgs=()
  for item in "$@"; do
    prereqs_have "$item" || missing+=("$item")
  done
  [ ${#missing[@]} -eq 0 ] && return 0

  if ! prereqs_is_debian; then
    local brew=()
    for item in "${missing[@]}"; do
      pkg=$(prereqs_brew_pkg "$item")
      case " ${brew[*]-} " in *" $pkg "*) ;; *) brew+=("$pkg") ;; esac
    done
    # Casks cannot share a `brew install` with formulae, hence the split.
    local formulae=() casks=() hint
    for pkg in "${brew[@]}"; do
      case "$pkg" in --cask*) casks+=("${pkg#--cask }") ;; *) formulae+=("$pkg") ;; esac
    done
    hint=""
    [ ${#formulae[@]} -gt 0 ] && hint="brew install ${formulae[*]}"
    [ ${#casks[@]} -gt 0 ] && hint="${hint:+$hint && }brew install --cask ${casks[*]}"
    echo "$tag: missing ${missing[*]}; install them first (macOS: \`$hint\`; elsewhere the packages that provide them), then rerun $0" >&2
    exit 1
  fi

  for item in "${missing[@]}"; do pkgs+=("$(prereqs_debian_pkg "$item")"); done
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "$tag: missing ${missing[*]}; as root run \`apt-get install -y ${pkgs[*]}\`, then rerun $0" >&2
      exit 1
    fi
    # Without a terminal (CI, a pipe) sudo could wait forever for a password: -n makes it
    # fail at once instead.
    if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
  fi

  # How to run apt-get by hand, for the failure messages below.
  local as=${sudo[0]:+sudo }
  echo "$tag: ${missing[*]} not found; updating the package lists (apt-get update)…"
  # `env` after sudo: sudo drops the caller's environment, DEBIAN_FRONTEND included.
  # A failure (no network, sudo wanting a password without a terminal) is one line with the
  # command to run by hand, not a bare exit from `set -e` somewhere in the middle.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
    echo "$tag: apt-get update failed; run \`${as}apt-get update && ${as}apt-get install -y ${pkgs[*]}\`, then rerun $0" >&2
    exit 1
  fi
  # Ubuntu has no `chromium` package, only `chromium-browser`. The policy is read whole
  # before matching: `apt-cache … | grep -q` can fail under pipefail when grep stops early.
  local i policy
  for i in "${!pkgs[@]}"; do
    if [ "${pkgs[$i]}" = chromium ]; then
      policy=$(apt-cache policy chromium 2>/dev/null || true)
      case "$policy" in *"Candidate: ("*) pkgs[i]=chromium-browser ;; *Candidate:*) ;; *) pkgs[i]=chromium-browser ;; esac
    fi
  done
  echo "$tag: installing ${pkgs[*]} with ${sudo[*]:+${sudo[*]} }apt-get"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
    echo "$tag: apt-get install failed; run \`${as}apt-get install -y ${pkgs[*]}\`, then rerun $0" >&2
    exit 1
  fi
  hash -r

  local still=()
  for item in "${missing[@]}"; do
    prereqs_have "$item" || still+=("$item")
  done
  if [ ${#still[@]} -gt 0 ]; then
    echo "$tag: ${still[*]} still missing after \`${as}apt-get install -y ${pkgs[*]}\`; install it by hand, then rerun $0" >&2
    exit 1
  fi
}
