#!/usr/bin/env bash
# Installs ragbox on this machine: builds the release binary (tuned for this CPU),
# installs it, writes a default config if none exists, and optionally a systemd unit.
# Safe to run again: it rebuilds, reinstalls the binary and keeps an existing config.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./install.sh [--systemd] [--prefix DIR] [--config-dir DIR] [--data-dir DIR]

  --systemd         also install and start the systemd unit (needs root)
  --prefix DIR      install the binary into DIR/bin
                    (default: /usr/local as root, else ~/.local)
  --config-dir DIR  where config.toml goes
                    (default: /etc/ragbox as root, else ~/.config/ragbox)
  --data-dir DIR    data directory written into a new config
                    (default: /var/lib/ragbox as root, else ~/.local/share/ragbox)
USAGE
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

systemd=0
prefix=""
config_dir=""
data_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --systemd) systemd=1 ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift ;;
    --config-dir) [ $# -ge 2 ] || die "--config-dir needs a directory"; config_dir="$2"; shift ;;
    --data-dir) [ $# -ge 2 ] || die "--data-dir needs a directory"; data_dir="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done

cd "$(dirname "$0")"
[ -f Cargo.toml ] && [ -f config.toml ] || die "run install.sh from a ragbox checkout (Cargo.toml and config.toml missing)"

if [ "$(id -u)" -eq 0 ]; then
  prefix=${prefix:-/usr/local}
  config_dir=${config_dir:-/etc/ragbox}
  data_dir=${data_dir:-/var/lib/ragbox}
else
  [ "$systemd" -eq 0 ] || die "--systemd needs root (run with sudo)"
  prefix=${prefix:-$HOME/.local}
  config_dir=${config_dir:-${XDG_CONFIG_HOME:-$HOME/.config}/ragbox}
  data_dir=${data_dir:-${XDG_DATA_HOME:-$HOME/.local/share}/ragbox}
fi
bin_dir="$prefix/bin"

need cargo "install a Rust toolchain (rustup, or your distribution's cargo package)"
need cc "install a C compiler, e.g. apt-get install build-essential (SQLite is compiled in)"

step "building the release binary (first build takes several minutes)"
cargo build --release --locked

step "installing $bin_dir/ragbox"
install -d "$bin_dir"
install -m 0755 target/release/ragbox "$bin_dir/ragbox.new"
mv -f "$bin_dir/ragbox.new" "$bin_dir/ragbox"
"$bin_dir/ragbox" --version >/dev/null || die "the installed binary does not run"

if [ -f "$config_dir/config.toml" ]; then
  step "keeping existing $config_dir/config.toml"
else
  step "writing $config_dir/config.toml (data in $data_dir)"
  install -d "$config_dir"
  tmp=$(mktemp)
  sed "s#^data_dir = .*#data_dir = \"$data_dir\"#" config.toml >"$tmp"
  install -m 0644 "$tmp" "$config_dir/config.toml"
  rm -f "$tmp"
fi

if [ "$systemd" -eq 1 ]; then
  need systemctl "systemd is required for --systemd"
  step "installing the systemd unit ragbox.service"
  tmp=$(mktemp)
  sed -e "s#/usr/local/bin/ragbox#$bin_dir/ragbox#" \
      -e "s#/etc/ragbox/config.toml#$config_dir/config.toml#" \
      assets/ragbox.service >"$tmp"
  install -m 0644 "$tmp" /etc/systemd/system/ragbox.service
  rm -f "$tmp"
  systemctl daemon-reload
  systemctl enable ragbox.service
  systemctl restart ragbox.service
  step "ragbox.service is running: systemctl status ragbox; journalctl -u ragbox -f"
fi

case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "note: $bin_dir is not on your PATH; add it, e.g. export PATH=\"$bin_dir:\$PATH\"" ;;
esac
echo
echo "Installed. Next: ragbox serve   then open http://127.0.0.1:8080/docs"
