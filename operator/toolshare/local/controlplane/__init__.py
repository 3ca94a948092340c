"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) run as local processes.

Docker and kind are not always available, so, like controller-runtime's envtest, Toolshare builds the
official binaries from pinned Go modules (tools/controlplane) and runs them on 127.0.0.1.
"""
