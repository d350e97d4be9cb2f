#!/bin/sh
# Provisioning for a Swarm manager: the single source of truth for what the node has installed.
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
echo "provisioned role manager"
