#!/bin/sh
# Download Meta's official SAM 2.1 checkpoints (and, with --all, the original SAM 2 ones).
#
# Files go next to this script, or to $SAM2_STREAM_CHECKPOINT_DIR, or to --dir DIR; that is
# where `sam2-stream` looks by default. Each file is fetched to a .part name and renamed only
# when complete, so an interrupted run never leaves a truncated checkpoint behind.
set -eu

SAM2_URL=https://dl.fbaipublicfiles.com/segment_anything_2/072824
SAM2_1_URL=https://dl.fbaipublicfiles.com/segment_anything_2/092824
SIZES="tiny small base_plus large"

usage() {
    cat <<USAGE
Usage: sh checkpoints/download_ckpts.sh [--all] [--dir DIR]

  (default)   download sam2.1_hiera_{tiny,small,base_plus,large}.pt
  --all       also download the original SAM 2 files sam2_hiera_*.pt
  --dir DIR   save into DIR (default: \$SAM2_STREAM_CHECKPOINT_DIR, else this script's folder)
USAGE
}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
dest_dir=${SAM2_STREAM_CHECKPOINT_DIR:-$script_dir}
all=0
while [ $# -gt 0 ]; do
    case $1 in
        --all) all=1 ;;
        --dir)
            [ $# -ge 2 ] || { echo "error: --dir needs a value" >&2; exit 2; }
            dest_dir=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if command -v curl >/dev/null 2>&1; then
    fetch() { curl --fail --location --retry 3 --progress-bar --output "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
    fetch() { wget -O "$2" "$1"; }
else
    echo "error: neither curl nor wget is installed; install one of them" >&2
    exit 1
fi

mkdir -p "$dest_dir"
part=""
trap 'if [ -n "$part" ]; then rm -f "$part"; fi' EXIT
trap 'exit 130' INT TERM

download() {
    url=$1
    file=$dest_dir/${url##*/}
    if [ -s "$file" ]; then
        echo "$file already present, skipping"
        return 0
    fi
    echo "Downloading $url"
    part=$file.part
    if ! fetch "$url" "$part"; then
        echo "error: failed to download $url" >&2
        exit 1
    fi
    mv -f "$part" "$file"
    part=""
}

if [ "$all" -eq 1 ]; then
    for size in $SIZES; do
        download "$SAM2_URL/sam2_hiera_$size.pt"
    done
fi
for size in $SIZES; do
    download "$SAM2_1_URL/sam2.1_hiera_$size.pt"
done
echo "Checkpoints are in $dest_dir"
