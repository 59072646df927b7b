#!/usr/bin/env bash
# Build deploy/Dockerfile where Docker Hub and the PyTorch index cannot be reached, but Debian's
# package mirror and PyPI can (a build farm behind an egress proxy, an air-gapped mirror):
#
#   deploy/build_image_offline.sh WHEELS_DIR [TAG]
#
# 1. A Debian bookworm base (python3 3.11, python3-venv) is made with debootstrap and imported
#    as privrank-base:bookworm-local; the host's extra CA certificates
#    (/usr/local/share/ca-certificates) are trusted in it, so pip can pass a TLS-inspecting proxy.
# 2. WHEELS_DIR (a folder holding torch-2.13.0+cpu-*.whl) is served on 127.0.0.1 over HTTP for
#    the build's pip, which runs with --network host.
# Needs root, debootstrap and a running Docker daemon. The image is the same as a normal build's
# apart from the base layer.
set -euo pipefail

wheels=${1:?usage: deploy/build_image_offline.sh WHEELS_DIR [TAG]}
tag=${2:-privrank:0.1.0}
base=privrank-base:bookworm-local
port=${WHEEL_PORT:-8765}
root=$(cd "$(dirname "$0")/.." && pwd)

if ! docker image inspect "$base" > /dev/null 2>&1; then
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian
    if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates
    fi
    tar -C "$rootfs" -c . | docker import - "$base"
fi

python3 -m http.server "$port" --bind 127.0.0.1 --directory "$wheels" > /dev/null 2>&1 &
server=$!
trap 'kill "$server" 2> /dev/null || true' EXIT
sleep 1
docker build --network host -f "$root/deploy/Dockerfile" -t "$tag" \
    --build-arg BASE_IMAGE="$base" \
    --build-arg TORCH_SOURCE="--find-links http://127.0.0.1:$port/" \
    "$root"
