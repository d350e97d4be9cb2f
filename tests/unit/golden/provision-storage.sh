#!/bin/sh
# Provisioning for the storage node: NFS v4 server (nfs-ganesha, userspace), the image registry
# (Debian's docker-registry) and a Docker engine that builds the service images.
# cloud-init runs it on a VM; the lab node image is built by running it. Safe to run twice.
# --- common to every role: SSH with keys only, the tools the Fabric tasks rely on ---
set -eu
export DEBIAN_FRONTEND=noninteractive
# A debootstrap or cloud image may come without an apt source; add the configured mirror then.
if ! grep -rqsE '^(deb |URIs:)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm main" > /etc/apt/sources.list
fi
apt_install() {
  # Install only what is missing, so a second run does not touch the network.
  missing=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
  fi
}
apt_install openssh-server ca-certificates iproute2 procps curl
mkdir -p /etc/ssh/sshd_config.d /run/sshd
cat > /etc/ssh/sshd_config.d/10-swarmlab.conf <<'SSHD'
# Keys only: the provisioner pins host keys and authenticates with a per-cluster key.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxStartups 64:30:128
SSHD
# --- Docker engine from Debian's packages (no vendor repository, no registry needed) ---
# /etc/docker/daemon.json is written per cluster (templates/docker/daemon.json.j2), not here.
apt_install docker.io
apt_install nfs-ganesha nfs-ganesha-vfs rpcbind docker-registry libnfs-utils debootstrap skopeo
mkdir -p /var/run/ganesha /srv/swarmlab/data /var/lib/docker-registry
# The cluster registry (port 5000) serves TLS only: its configuration, certificate and key
# come from the Fabric tasks (`fab registry`, run by bootstrap and build-images), issued by the
# cluster's CA. Until then it stays off (Debian's own configuration asks for credentials nothing has).
if [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry || true
fi
echo "provisioned role storage"
# --- storage volume: begin ---
# On a cloud, cloud-init sets SWARMLAB_DATA_DEVICE to the node's Cinder volume (infra/cloudinit.py).
# The volume may already hold the cluster's data (a rebuilt storage node keeps its volume), so it is
# formatted only when it carries no signature at all, and mounted by UUID: device names change
# between boots and attachments. Unset (the lab image build): this section does nothing.
#   SWARMLAB_DATA_WAIT        seconds to wait for the device: Nova attaches it after the first boot
#   SWARMLAB_DATA_MOUNTPOINT  where to mount it (default /srv/swarmlab; the NFS export is its data/)
#   SWARMLAB_DATA_NO_MOUNT=1  decide and format, but neither mount nor touch /etc/fstab (tests)
swarmlab_data_volume() {
  dev="$SWARMLAB_DATA_DEVICE"
  target="${SWARMLAB_DATA_MOUNTPOINT:-/srv/swarmlab}"
  waited=0
  while [ ! -e "$dev" ]; do
    if [ "$waited" -ge "${SWARMLAB_DATA_WAIT:-0}" ]; then
      echo "storage volume: $dev did not appear within ${waited}s; is the volume attached?" >&2
      return 1
    fi
    sleep 5
    waited=$((waited + 5))
  done
  # blkid -p probes the device itself, not blkid's cache; exit status 2 means no signature at all.
  probe=$(blkid -p -o export "$dev") && status=0 || status=$?
  if [ "$status" -eq 2 ]; then
    command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs
    echo "storage volume: $dev is empty: formatting it (ext4)"
    mkfs.ext4 -q -L swarmlab-data "$dev"
  elif [ "$status" -ne 0 ]; then
    echo "storage volume: cannot probe $dev (blkid exit $status): not formatting it" >&2
    return 1
  elif ! printf '%s\n' "$probe" | grep -qx 'USAGE=filesystem'; then
    # A partition table, RAID member, LUKS or swap: somebody's data, and not ours to guess about.
    echo "storage volume: $dev holds something other than a filesystem: refusing to format or mount it" >&2
    printf '%s\n' "$probe" >&2
    return 1
  else
    echo "storage volume: $dev already has a filesystem: keeping it"
  fi
  uuid=$(blkid -p -o value -s UUID "$dev")
  fstype=$(blkid -p -o value -s TYPE "$dev")
  if [ -z "$uuid" ]; then
    echo "storage volume: $dev has no filesystem UUID: not mounting it" >&2
    return 1
  fi
  if [ "${SWARMLAB_DATA_NO_MOUNT:-0}" = "1" ]; then
    echo "storage volume: would mount UUID=$uuid ($fstype) at $target"
    return 0
  fi
  mkdir -p "$target"
  # One line per mount point: a replaced volume takes the place of the old one.
  sed -i "\\|^[^#][^ ]* $target |d" /etc/fstab
  echo "UUID=$uuid $target $fstype defaults,nofail 0 2" >> /etc/fstab
  mountpoint -q "$target" || mount "$target"
  # The provisioning above made data/ on the root disk; the export must live on the volume.
  mkdir -p "$target/data"
  echo "storage volume: UUID=$uuid mounted at $target"
}
if [ -n "${SWARMLAB_DATA_DEVICE:-}" ]; then
  swarmlab_data_volume
fi
# --- storage volume: end ---
