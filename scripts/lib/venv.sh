# Shared by scripts/*.sh: make sure python3 can create a venv, then create .venv and install gpstage
# with every extra into it (re-installed only when pyproject.toml changes).
ensure_venv() {
  local root="$1"
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "== installing python3-venv (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
  fi
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "== creating $root/.venv"
    python3 -m venv "$root/.venv"
  fi
  local stamp="$root/.venv/.gpstage-installed"
  local want
  want=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing gpstage and its test dependencies into .venv (pip)"
    "$root/.venv/bin/python" -m pip install -q --upgrade pip
    "$root/.venv/bin/python" -m pip install -q -e "$root[all,test,bench]"
    echo "$want" > "$stamp"
  fi
}
