#!/usr/bin/env bash
# Install samocode for Claude Code from this checkout (the "symlink route"):
#   - a virtual environment in <checkout>/.venv with the worker installed (skipped by --no-venv),
#   - links to skills/*, commands/*.md and agents/*.md in ${CLAUDE_CONFIG_DIR:-~/.claude},
#   - skills/samocode-run linked into ${CODEX_HOME:-~/.codex}/skills when Codex is installed.
# Idempotent; checks every link before touching anything; never overwrites a file it did not make.
# Writes nothing outside the checkout, the Claude config folder and the Codex skills folder.
#
#   ./install.sh              install or update
#   ./install.sh --no-venv    links only
#   ./install.sh --venv-only  the virtual environment only
#   ./install.sh --uninstall  remove the links that point into this checkout (the .venv stays)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi # started as `sh install.sh`
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

mode=install
venv=yes
links=yes
for arg in "$@"; do
    case $arg in
        --uninstall) mode=uninstall ;;
        --no-venv) venv=no ;;
        --venv-only) links=no ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd -P "$(dirname "$0")" && pwd -P)
CLAUDE_DIR=${CLAUDE_CONFIG_DIR:-$HOME/.claude}
CODEX_DIR=${CODEX_HOME:-$HOME/.codex}

# --- helpers -------------------------------------------------------------------------------------

# The target of a link as an absolute path (not resolved further).
link_target() {
    local link=$1 target
    target=$(readlink "$link")
    case $target in
        /*) printf '%s\n' "$target" ;;
        *) printf '%s/%s\n' "$(dirname "$link")" "$target" ;;
    esac
}

# Physical path of an existing file or folder; empty when it does not exist.
real_path() {
    local path=$1
    if [ -d "$path" ]; then
        (cd -P "$path" 2>/dev/null && pwd -P) || true
    elif [ -e "$path" ]; then
        local dir
        dir=$( (cd -P "$(dirname "$path")" 2>/dev/null && pwd -P) ) || return 0
        printf '%s/%s\n' "$dir" "$(basename "$path")"
    fi
}

# True when a link points into this checkout (by its text or by where it really leads).
points_here() {
    local target real
    target=$(link_target "$1")
    case $target/ in "$ROOT"/*) return 0 ;; esac
    real=$(real_path "$target")
    case $real/ in "$ROOT"/*) return 0 ;; esac
    return 1
}

codex_installed() {
    command -v codex >/dev/null 2>&1 || [ -d "$CODEX_DIR" ]
}

# --- uninstall -----------------------------------------------------------------------------------

if [ "$mode" = uninstall ]; then
    removed=0
    for dir in "$CLAUDE_DIR/skills" "$CLAUDE_DIR/commands" "$CLAUDE_DIR/agents" "$CODEX_DIR/skills"; do
        [ -d "$dir" ] || continue
        for entry in "$dir"/* "$dir"/.[!.]*; do
            [ -L "$entry" ] || continue
            if points_here "$entry"; then
                rm -f "$entry"
                echo "  removed    $entry"
                removed=$((removed + 1))
            fi
        done
    done
    echo "samocode: removed $removed link(s) into $ROOT; other files were left alone."
    [ -d "$ROOT/.venv" ] && echo "The virtual environment $ROOT/.venv stays; delete it by hand if you want."
    exit 0
fi

# --- plan: every link and what would happen to it ------------------------------------------------

sources=()
dests=()
if [ "$links" = yes ]; then
    for skill in "$ROOT"/skills/*/; do
        [ -f "$skill/SKILL.md" ] || continue
        skill=${skill%/}
        sources+=("$skill")
        dests+=("$CLAUDE_DIR/skills/$(basename "$skill")")
    done
    for kind in commands agents; do
        for file in "$ROOT/$kind"/*.md; do
            [ -f "$file" ] || continue
            sources+=("$file")
            dests+=("$CLAUDE_DIR/$kind/$(basename "$file")")
        done
    done
    if codex_installed && [ -f "$ROOT/skills/samocode-run/SKILL.md" ]; then
        sources+=("$ROOT/skills/samocode-run")
        dests+=("${CODEX_DIR}/skills/samocode-run")
    fi
fi

problems=()

# A plugin install of samocode plus these links would show every command and agent twice.
if [ "$links" = yes ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        # No python3 to read the JSON: a plain search for the plugin key is close enough.
        plugin_hits=$(grep -l '"samocode@' "$CLAUDE_DIR/settings.json" \
            "$CLAUDE_DIR/plugins/installed_plugins.json" 2>/dev/null | sed 's/^/mentioned in /' || true)
    else
        plugin_hits=$(
            python3 - "$CLAUDE_DIR" <<'PY' 2>/dev/null || true
import json, sys
from pathlib import Path

base = Path(sys.argv[1])
hits = []
def load(path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
enabled = load(base / "settings.json").get("enabledPlugins") or {}
hits += [f"{k} enabled in {base / 'settings.json'}" for k, v in enabled.items() if k.startswith("samocode@") and v]
installed = load(base / "plugins" / "installed_plugins.json").get("plugins") or {}
hits += [f"{k} listed in {base / 'plugins' / 'installed_plugins.json'}" for k in installed if k.startswith("samocode@")]
print("\n".join(hits))
PY
        )
    fi
    if [ -n "$plugin_hits" ]; then
        while IFS= read -r hit; do
            problems+=("samocode is already installed as a Claude Code plugin ($hit).")
        done <<<"$plugin_hits"
        problems+=("Pick one route: keep the plugin (it sets up the worker's Python environment itself on first use), or run 'claude plugin uninstall samocode' first and then ./install.sh.")
    fi
    # The whole checkout linked as a skills-directory plugin is the plugin route too.
    if [ -d "$CLAUDE_DIR/skills" ]; then
        for entry in "$CLAUDE_DIR/skills"/*; do
            [ -L "$entry" ] || continue
            if [ "$(real_path "$(link_target "$entry")")" = "$ROOT" ]; then
                problems+=("$entry links the whole checkout (a skills-directory plugin); remove it or keep that route instead of ./install.sh.")
            fi
        done
    fi
fi

actions=()
i=0
while [ "$i" -lt "${#sources[@]}" ]; do
    src=${sources[$i]}
    dest=${dests[$i]}
    parent=$(dirname "$dest")
    action=create
    if [ -e "$parent" ] && [ ! -d "$parent" ]; then
        problems+=("$parent exists and is not a folder.")
    elif [ -L "$dest" ]; then
        target=$(link_target "$dest")
        kind_name=$(basename "$(dirname "$src")")/$(basename "$src")
        if [ "$(real_path "$target")" = "$src" ]; then
            action=unchanged
        elif points_here "$dest"; then
            action=replace # an old link of ours
        elif [ ! -e "$target" ] && case $target in */"$kind_name") true ;; *) false ;; esac; then
            action=replace # dangling, left by a samocode checkout that moved or was deleted
        else
            problems+=("$dest is a link to $target, not to this checkout; remove it or run the other checkout's ./install.sh --uninstall.")
        fi
    elif [ -e "$dest" ]; then
        problems+=("$dest already exists and is not a samocode link; move it away and run ./install.sh again.")
    fi
    actions+=("$action")
    i=$((i + 1))
done

if [ "${#problems[@]}" -gt 0 ]; then
    echo "install.sh: nothing was changed:" >&2
    for problem in "${problems[@]}"; do
        echo "  - $problem" >&2
    done
    exit 1
fi

# --- the virtual environment ---------------------------------------------------------------------

if [ "$venv" = yes ]; then
    stamp="$ROOT/.venv/.samocode-install"
    want=$(cksum <"$ROOT/pyproject.toml")
    if [ -x "$ROOT/.venv/bin/python" ] && [ -x "$ROOT/.venv/bin/samocode" ] &&
        [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        echo "  unchanged  $ROOT/.venv"
    else
        if [ ! -x "$ROOT/.venv/bin/python" ]; then
            command -v python3 >/dev/null 2>&1 || {
                echo "install.sh: python3 (3.10 or newer) is needed for the worker" >&2
                exit 1
            }
            python3 -m venv "$ROOT/.venv"
        fi
        # No pip cache: install.sh writes nothing outside the checkout and the Claude config folder.
        "$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir -e "$ROOT"
        printf '%s\n' "$want" >"$stamp"
        echo "  installed  $ROOT/.venv (the worker and its dependencies)"
    fi
fi

# --- links ---------------------------------------------------------------------------------------

i=0
while [ "$i" -lt "${#sources[@]}" ]; do
    src=${sources[$i]}
    dest=${dests[$i]}
    parent=$(dirname "$dest")
    if [ ! -d "$parent" ]; then
        mkdir -p "$parent"
        echo "  created    $parent/"
    fi
    case ${actions[$i]} in
        unchanged) echo "  unchanged  $dest" ;;
        create)
            ln -s "$src" "$dest"
            echo "  created    $dest -> $src"
            ;;
        replace)
            old=$(readlink "$dest")
            rm -f "$dest"
            ln -s "$src" "$dest"
            echo "  replaced   $dest -> $src (was -> $old)"
            ;;
    esac
    i=$((i + 1))
done

if [ "$links" = yes ]; then
    cat <<EOF

samocode is installed. Each project needs a .samocode file in its root, for example:

  MAIN_REPO=~/code/my-app
  WORKTREES=~/code/my-app-worktrees
  SESSIONS=~/code/my-app-sessions

Then, in Claude Code inside that project, say "run samocode on <session>" or type /samocode-implement.
Your settings (Telegram token and chat id, rails) go in ${XDG_CONFIG_HOME:-~/.config}/samocode/env.
Undo with: $ROOT/install.sh --uninstall
EOF
fi
