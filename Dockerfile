# The Toolshare image: `toolshare operator` and `toolshare gate` (the chart's two commands).
# Build: docker build -t ghcr.io/toolshare/toolshare:0.1.0 .   (not built in this repository's CI:
# the development machine has no container runtime; see docs/install.md)
FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The runtime dependencies are pinned (==) in pyproject.toml; nothing else is installed.
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.13-slim
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent toolshare
USER 10001:10001
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 9090 9443
ENTRYPOINT []
CMD ["toolshare", "operator"]
