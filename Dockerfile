# The Toolshare image: `toolshare operator` and `toolshare gate` (the chart's two commands).
# Build: docker build -t ghcr.io/toolshare/toolshare:0.1.0 .
# Locally, `toolshare images build` builds it with buildah on the Debian-based python image built
# here (BASE=docker-archive:<its tarball>; docs/images.md): the steps work on any base whose
# python3 has venv, whether it lives in /usr/local (python:*-slim) or /usr (Debian's).
ARG BASE=python:3.13-slim

FROM ${BASE} AS build
# Set when the build's network intercepts HTTPS (the CA bundle to trust); unset, pip uses its own.
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The runtime dependencies are pinned (==) in pyproject.toml; nothing else is installed. A venv,
# since Debian's python3 refuses installs into the system (PEP 668).
RUN python3 -m venv /opt/toolshare && /opt/toolshare/bin/pip install --no-cache-dir .

FROM ${BASE}
COPY --from=build /opt/toolshare /opt/toolshare
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent toolshare
USER 10001:10001
ENV PATH=/opt/toolshare/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 9090 9443
ENTRYPOINT []
CMD ["toolshare", "operator"]
