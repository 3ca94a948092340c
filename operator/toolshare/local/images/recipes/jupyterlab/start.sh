#!/bin/sh
# The tool's entry point (under tini): sshd on 22, then JupyterLab on 8888 as jovyan (uid 1000).
# No token, no password: the tool trusts the proxy (see the Containerfile).
#
# Toolshare runs it as uid 1000 (its Pods pass the "restricted" Pod Security Standard): sshd then
# runs as jovyan too, with host keys it makes at start, and binds 22 through the Pod's
# net.ipv4.ip_unprivileged_port_start sysctl; it can log in no one but jovyan, the only user
# AllowUsers names anyway. Started as root (a cluster whose template asks for it), sshd runs as
# root and JupyterLab drops to jovyan.
set -eu

authorize() {  # $1: the owner of ~jovyan/.ssh
  [ -n "${SSH_AUTHORIZED_KEYS:-}" ] || return 0
  install -d -o "$1" -g "$1" -m 0700 /home/jovyan/.ssh
  printf '%s\n' "$SSH_AUTHORIZED_KEYS" > /home/jovyan/.ssh/authorized_keys
  chmod 0600 /home/jovyan/.ssh/authorized_keys
}

if [ "$(id -u)" = 0 ]; then
  ssh-keygen -A                    # this container's own host keys
  authorize jovyan
  chown jovyan:jovyan /home/jovyan/.ssh/authorized_keys 2>/dev/null || true
  /usr/sbin/sshd -D -e &           # in the foreground of its own, so its log is the container's
  cd /home/jovyan
  exec setpriv --reuid=1000 --regid=1000 --init-groups \
    env HOME=/home/jovyan USER=jovyan LOGNAME=jovyan SHELL=/bin/bash \
    jupyter lab --no-browser --ip=0.0.0.0 --port=8888 \
      --ServerApp.token= --ServerApp.password= --ServerApp.allow_remote_access=True \
      --ServerApp.base_url="${JUPYTER_BASE_URL:-/}" --ServerApp.root_dir=/home/jovyan
fi

keys=$(mktemp -d /tmp/toolshare-sshd.XXXXXX)
ssh-keygen -q -t ed25519 -N '' -f "$keys/ssh_host_ed25519_key"
authorize "$(id -u)"
/usr/sbin/sshd -D -e -h "$keys/ssh_host_ed25519_key" -o PidFile=none &
cd /home/jovyan
exec env HOME=/home/jovyan USER=jovyan LOGNAME=jovyan SHELL=/bin/bash \
  jupyter lab --no-browser --ip=0.0.0.0 --port=8888 \
    --ServerApp.token= --ServerApp.password= --ServerApp.allow_remote_access=True \
    --ServerApp.base_url="${JUPYTER_BASE_URL:-/}" --ServerApp.root_dir=/home/jovyan
