#!/usr/bin/env bash
# Installs stream-conductor as a systemd service from the packages `npm run pack` writes:
#
#   scripts/install.sh [--prefix DIR] [--root DIR] [--unit-dir DIR] CLI.tgz DAEMON.tgz
#   scripts/install.sh --uninstall [--purge] [--prefix DIR] [--root DIR] [--unit-dir DIR]
#
# Install: both packages with npm into PREFIX (default /usr/local: PREFIX/bin/conductor and
# PREFIX/bin/conductor-daemon, the code in PREFIX/lib/node_modules/@stream-conductor/), the unit
# into UNIT_DIR (default /etc/systemd/system) with its paths filled in, the settings file
# /etc/stream-conductor/conductor.env from the template (never over an existing one), the
# stream-conductor system user (a sysusers.d entry in PREFIX/lib/sysusers.d; made at once when
# ROOT is /). Running it again with newer packages upgrades them.
# Uninstall: stops and disables the service (ROOT /), removes the packages, the unit and the
# sysusers.d entry; keeps the settings and the state unless --purge (also /etc/stream-conductor
# and /var/lib/stream-conductor). The user stays (files it owned may remain elsewhere).
# --root DIR installs into a staging root (an image, a package build): every path above lives
# under DIR, and neither systemctl nor the user database of this machine is touched.
# Prints each thing it does on stdout. Bad arguments: exit 2 before anything is changed.
set -euo pipefail
umask 022

NAME=stream-conductor
usage() {
  cat >&2 <<'EOF'
usage: scripts/install.sh [--prefix DIR] [--root DIR] [--unit-dir DIR] CLI.tgz DAEMON.tgz
       scripts/install.sh --uninstall [--purge] [--prefix DIR] [--root DIR] [--unit-dir DIR]
EOF
}
bad() {
  printf 'install: %s\n' "$1" >&2
  usage
  exit 2
}
fail() {
  printf 'install: %s\n' "$1" >&2
  exit 1
}
say() { printf '%s\n' "$*"; }

prefix=/usr/local
root=/
unit_dir=/etc/systemd/system
uninstall=0
purge=0
tarballs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix | --root | --unit-dir)
      [ $# -ge 2 ] || bad "$1 needs a value"
      case "$1" in
        --prefix) prefix=$2 ;;
        --root) root=$2 ;;
        --unit-dir) unit_dir=$2 ;;
      esac
      shift 2
      ;;
    --prefix=* | --root=* | --unit-dir=*)
      value=${1#*=}
      case "$1" in
        --prefix=*) prefix=$value ;;
        --root=*) root=$value ;;
        --unit-dir=*) unit_dir=$value ;;
      esac
      shift
      ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) bad "unknown option: $1" ;;
    *) tarballs+=("$1"); shift ;;
  esac
done

# Paths go into the unit file as they are: absolute, plain characters, no . or .. parts.
plain_path() {
  local what=$1 path=$2
  [[ "$path" == /* ]] || bad "$what must be an absolute path, got '$path'"
  [[ "$path" =~ ^[A-Za-z0-9._/+-]+$ ]] || bad "$what may hold only letters, digits and ._/+- ('$path')"
  [[ "/$path/" != */./* && "/$path/" != */../* ]] || bad "$what may not hold . or .. parts ('$path')"
}
plain_path --prefix "$prefix"
plain_path --root "$root"
plain_path --unit-dir "$unit_dir"
[ -d "$root" ] || bad "--root $root is not a directory"
prefix=${prefix%/}
unit_dir=${unit_dir%/}
[ -n "$prefix" ] || bad "--prefix may not be /"
root=${root%/}

if [ "$uninstall" = 1 ]; then
  [ ${#tarballs[@]} -eq 0 ] || bad "--uninstall takes no packages (got ${tarballs[*]})"
else
  [ "$purge" = 0 ] || bad "--purge goes with --uninstall"
  [ ${#tarballs[@]} -eq 2 ] || bad "give the two packages of npm run pack: the CLI's and the daemon's tarball"
  cli_tgz=""
  daemon_tgz=""
  versions=()
  for tarball in "${tarballs[@]}"; do
    [ -f "$tarball" ] || bad "no such file: $tarball"
    manifest=$(tar -xzOf "$tarball" package/package.json 2>/dev/null) || bad "$tarball is not an npm package (tar.gz with package/package.json)"
    read -r name version < <(node -e 'const m = JSON.parse(process.argv[1]); console.log(`${m.name} ${m.version}`)' "$manifest") ||
      bad "$tarball: unreadable package.json"
    case "$name" in
      @stream-conductor/cli) [ -z "$cli_tgz" ] || bad "two CLI packages given"; cli_tgz=$(realpath "$tarball") ;;
      @stream-conductor/daemon) [ -z "$daemon_tgz" ] || bad "two daemon packages given"; daemon_tgz=$(realpath "$tarball") ;;
      *) bad "$tarball is $name, not a stream-conductor package" ;;
    esac
    versions+=("$version")
  done
  [ -n "$cli_tgz" ] && [ -n "$daemon_tgz" ] || bad "give one CLI package and one daemon package"
  [ "${versions[0]}" = "${versions[1]}" ] || bad "the packages are of different versions (${versions[*]})"
fi

# What the installed commands need on this machine.
command -v node >/dev/null 2>&1 || fail "node is not on PATH (Node.js 20.18 or later is needed)"
command -v npm >/dev/null 2>&1 || fail "npm is not on PATH"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)' ||
  fail "Node.js 20.18 or later is needed; this is $(node --version)"

# The unit runs conductor-daemon, whose #! line finds node on systemd's PATH.
if ! PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v node >/dev/null 2>&1; then
  printf 'install: warning: node (%s) is not on the PATH systemd gives services; link it into /usr/local/bin\n' "$(command -v node)" >&2
fi

live=0 # this machine's own root, with systemd running: systemctl and the user database are ours to use
if [ -z "$root" ] && [ -d /run/systemd/system ]; then live=1; fi
dest() { printf '%s%s' "$root" "$1"; }
pkgdir=$prefix/lib/node_modules/@$NAME/daemon
unit_file=$unit_dir/$NAME.service
# systemd-sysusers reads /usr/lib/sysusers.d and /usr/local/lib/sysusers.d (and /etc, /run), not
# $prefix/lib/sysusers.d: under any other prefix the entry goes to /usr/local/lib/sysusers.d.
if [ "$prefix" = /usr ]; then sysusers_file=/usr/lib/sysusers.d/$NAME.conf; else sysusers_file=/usr/local/lib/sysusers.d/$NAME.conf; fi
env_file=/etc/$NAME/conductor.env
npm_cache=$(mktemp -d)
trap 'rm -rf "$npm_cache"' EXIT
# --ignore-scripts: nothing in a package runs as root at install time (ours have no scripts).
npm_flags=(--global --prefix "$(dest "$prefix")" --cache "$npm_cache" --offline --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=error)

# Under --root, every path we write or remove must stay inside it: a link in the staging root
# (an etc that points at the host's /etc, say) is refused before anything changes.
if [ -n "$root" ]; then
  real_root=$(realpath -e "$root")
  for path in "$prefix" "$unit_dir" "$(dirname "$sysusers_file")" /etc/$NAME /var/lib/$NAME; do
    real=$(realpath -m "$(dest "$path")")
    case "$real" in
      "$real_root" | "$real_root"/*) ;;
      *) bad "$path under --root $root leads to $real, outside the root (a symbolic link?)" ;;
    esac
  done
fi

if [ "$uninstall" = 1 ]; then
  if [ "$live" = 1 ] && systemctl cat "$NAME.service" >/dev/null 2>&1; then
    systemctl disable --now "$NAME.service" >/dev/null 2>&1 || true
    say "stopped and disabled $NAME.service"
  fi
  for package in cli daemon; do
    if [ -e "$(dest "$prefix/lib/node_modules/@$NAME/$package")" ]; then
      npm uninstall "${npm_flags[@]}" "@$NAME/$package" >/dev/null
      say "removed @$NAME/$package from $prefix"
    fi
  done
  rmdir "$(dest "$prefix/lib/node_modules/@$NAME")" 2>/dev/null || true
  for file in "$unit_file" "$sysusers_file"; do
    if [ -e "$(dest "$file")" ]; then
      rm -f "$(dest "$file")"
      say "removed $file"
    fi
  done
  if [ "$live" = 1 ]; then systemctl daemon-reload; fi
  for dir in /etc/$NAME /var/lib/$NAME; do
    [ -e "$(dest "$dir")" ] || continue
    if [ "$purge" = 1 ]; then
      rm -rf "$(dest "$dir")"
      say "removed $dir"
    else
      say "kept $dir (--purge removes it)"
    fi
  done
  exit 0
fi

npm install "${npm_flags[@]}" "$cli_tgz" "$daemon_tgz" >/dev/null
say "installed @$NAME/cli and @$NAME/daemon ${versions[0]} into $prefix/lib/node_modules"
say "commands: $prefix/bin/conductor, $prefix/bin/conductor-daemon"

mkdir -p "$(dest "$unit_dir")"
sed -e "s|@BINDIR@|$prefix/bin|g" -e "s|@PKGDIR@|$pkgdir|g" "$(dest "$pkgdir")/packaging/$NAME.service" >"$(dest "$unit_file").tmp"
chmod 0644 "$(dest "$unit_file").tmp"
mv -f "$(dest "$unit_file").tmp" "$(dest "$unit_file")"
say "wrote $unit_file"

mkdir -p "$(dest "$(dirname "$sysusers_file")")"
printf 'u %s - "stream-conductor daemon" /var/lib/%s /usr/sbin/nologin\n' "$NAME" "$NAME" >"$(dest "$sysusers_file")"
chmod 0644 "$(dest "$sysusers_file")"
say "wrote $sysusers_file"

if [ ! -d "$(dest /etc/$NAME)" ]; then
  # Made here: readable by all (the settings file in it is 0600); a folder that exists keeps its mode.
  mkdir -p "$(dest /etc/$NAME)"
  chmod 0755 "$(dest /etc/$NAME)"
fi
if [ -e "$(dest "$env_file")" ]; then
  say "kept $env_file (this version's template: $pkgdir/packaging/conductor.env)"
else
  install -m 0600 "$(dest "$pkgdir")/packaging/conductor.env" "$(dest "$env_file")"
  say "wrote $env_file (every setting, commented out with its default)"
fi

if [ -z "$root" ]; then
  if id -u "$NAME" >/dev/null 2>&1; then
    say "user $NAME exists"
  elif command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers "$sysusers_file"
    say "made user $NAME (systemd-sysusers)"
  else
    useradd --system --user-group --home-dir /var/lib/$NAME --no-create-home --shell /usr/sbin/nologin "$NAME"
    say "made user $NAME (useradd)"
  fi
else
  say "user $NAME: made on the target by systemd-sysusers from $sysusers_file"
fi

if [ "$live" = 1 ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet "$NAME.service"; then
    say "$NAME.service runs the old version until: systemctl restart $NAME"
  else
    say "next: edit $env_file, then: systemctl enable --now $NAME"
  fi
else
  say "next (on the target): edit $env_file, then: systemctl daemon-reload && systemctl enable --now $NAME"
fi
