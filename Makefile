# The README's two commands: `make run` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CLUSTER_DIR ?= .toolshare/cluster
PYTEST_ARGS ?=

.PHONY: run test unit integration binaries images venv down status clean deps sync crds

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

## binaries: build (once, cached under ~/.cache/toolshare) or locate etcd, kube-apiserver, kube-controller-manager, kubectl,
## the node's kubelet, kube-proxy, kube-scheduler, containerd and kube-router, oauth2-proxy, helm, traefik
binaries: venv
	$(BIN)/toolshare cluster build
	$(BIN)/python -m toolshare.local.oauth2proxy
	$(BIN)/python -m toolshare.local.helm
	$(BIN)/python -m toolshare.local.traefik

## images: build (once per change of their inputs, cached under ~/.cache/toolshare/images) the node's
## images: pause, a Debian base, JupyterLab, Toolshare (docs/images.md); needs root
images: venv deps
	$(BIN)/toolshare images build

## sync (or crds): regenerate the chart's and manifests' copies of crds/ and the RBAC rules
sync crds: venv
	$(BIN)/python -m toolshare.local.syncmanifests

## deps: Debian packages the tests drive: chromium (browser test), what builds and
## runs the images (debootstrap, buildah, runc, gcc for pause, ssh for the tool's SSH test), and what the
## node runs with (CNI plugins, iptables, ipset: docs/node.md); apt only when missing
deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/sbin/debootstrap ] || missing="$$missing debootstrap"; \
	[ -x /usr/bin/buildah ] || missing="$$missing buildah"; \
	[ -x /usr/sbin/runc ] || missing="$$missing runc"; \
	[ -x /usr/bin/gcc ] && [ -e /usr/include/stdio.h ] || missing="$$missing gcc libc6-dev"; \
	[ -x /usr/bin/ssh ] || missing="$$missing openssh-client"; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	[ -x /usr/sbin/iptables ] || missing="$$missing iptables"; \
	[ -x /usr/sbin/ipset ] || missing="$$missing ipset"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing$$missing with apt-get"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

## run: local control plane + CRDs + the operator in the foreground
run: binaries deps
	$(BIN)/toolshare dev --dir $(CLUSTER_DIR)

## test: every test, unit and integration, on a real local API server
test: binaries deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: binaries deps
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

down: venv
	$(BIN)/toolshare cluster down --dir $(CLUSTER_DIR)

status: venv
	$(BIN)/toolshare cluster status --dir $(CLUSTER_DIR)

clean: down
	rm -rf $(CLUSTER_DIR) $(VENV)
