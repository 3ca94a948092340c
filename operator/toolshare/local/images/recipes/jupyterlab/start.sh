#!/bin/sh
# The tool's entry point (under tini): sshd on 22, then JupyterLab on 8888 as jovyan (uid 1000).
# It starts as root because sshd needs it (port 22, privilege separation); JupyterLab does not run
# as root. No token, no password: the tool trusts the proxy (see the Containerfile).
set -eu

ssh-keygen -A                      # this container's own host keys
mkdir -p /run/sshd && chmod 0755 /run/sshd
if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
  install -d -o jovyan -g jovyan -m 0700 /home/jovyan/.ssh
  printf '%s\n' "$SSH_AUTHORIZED_KEYS" > /home/jovyan/.ssh/authorized_keys
  chown jovyan:jovyan /home/jovyan/.ssh/authorized_keys && chmod 0600 /home/jovyan/.ssh/authorized_keys
fi
/usr/sbin/sshd -D -e &             # in the foreground of its own, so its log is the container's

cd /home/jovyan
exec setpriv --reuid=1000 --regid=1000 --init-groups \
  env HOME=/home/jovyan USER=jovyan LOGNAME=jovyan SHELL=/bin/bash \
  jupyter lab --no-browser --ip=0.0.0.0 --port=8888 \
    --ServerApp.token= --ServerApp.password= --ServerApp.allow_remote_access=True \
    --ServerApp.base_url="${JUPYTER_BASE_URL:-/}" --ServerApp.root_dir=/home/jovyan
