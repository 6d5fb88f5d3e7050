#!/usr/bin/env bash
# Makes the Debian 12 base image the Dockerfile starts from (debian:bookworm by
# default) with debootstrap from the Debian mirror, and imports it into Docker,
# for machines that reach no image registry. Does nothing when the image is
# already there. Runs as root; needs debootstrap and a running Docker daemon.
#   IMAGE=debian:bookworm MIRROR=http://deb.debian.org/debian tools/make_base_image.sh
set -euo pipefail
IMAGE=${IMAGE:-debian:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}

if docker image inspect "$IMAGE" > /dev/null 2>&1; then
  echo "make_base_image: $IMAGE is there"
  exit 0
fi
if ! command -v debootstrap > /dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

rootfs=$(mktemp -d /tmp/gantry-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# minbase: what the official image has (apt, dpkg, bash), no init or kernel.
nice -n 19 debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR"

# What the official image sets up beyond minbase: the security and updates
# suites, no apt caches or docs left behind in layers, and no daemons started
# by package scripts during builds.
cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/tmp/*

tar -C "$rootfs" --numeric-owner -c . \
  | docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --message "debootstrap --variant=minbase $SUITE $MIRROR" - "$IMAGE"
echo "make_base_image: imported $IMAGE"
