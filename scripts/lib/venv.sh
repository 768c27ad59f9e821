# Shared by scripts/*.sh: make sure python3 can create a venv, then create ROOT/.venv and install gpstage
# (editable) into it with the extras the caller needs:
#
#   ensure_venv "$ROOT"                  # gpstage alone (the demo: local launcher, process runner, files)
#   ensure_venv "$ROOT" all,test,bench   # every extra (the tests)
#
# The stamp .venv/.gpstage-installed records the hash of pyproject.toml and the extras installed. Nothing is
# installed when the hash matches and the extras asked for are among those recorded; otherwise pip installs
# the extras asked for plus those recorded (the venv holds their packages already: they follow pyproject
# too), and the stamp records that union. So the demo after the tests installs nothing; the tests after the
# demo install the missing extras.
ensure_venv() {
  local root="$1" extras
  extras=$(_venv_extras "${2:-}")
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "== installing python3-venv (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
  fi
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "== creating $root/.venv"
    python3 -m venv "$root/.venv"
    "$root/.venv/bin/python" -m pip install -q --upgrade pip
  fi
  local stamp="$root/.venv/.gpstage-installed" hash have=""
  hash=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$hash" ]; then
    have=$(sed -n 2p "$stamp")
    if [ -z "$(comm -23 <(_venv_lines "$extras") <(_venv_lines "$have"))" ]; then
      return 0  # up to date, with every extra asked for
    fi
  elif [ -f "$stamp" ]; then
    have=$(sed -n 2p "$stamp")  # pyproject.toml changed: update what is installed too
  fi
  local all spec="$root"
  all=$(_venv_extras "$have,$extras")
  [ -n "$all" ] && spec="$root[$all]"
  echo "== installing gpstage${all:+[$all]} into .venv (pip)"
  "$root/.venv/bin/python" -m pip install -q -e "$spec"
  printf '%s\n%s\n' "$hash" "$all" > "$stamp"
}

# "b, a,,b" -> "a,b": extras sorted, without duplicates or empty names
_venv_extras() { _venv_lines "$1" | paste -sd, -; }
_venv_lines() { tr -s ', ' '\n' <<<"$1" | sed '/^$/d' | sort -u; }
