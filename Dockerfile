# One image for every ranktune role: `db upgrade`, `serve` and `worker` (see docker-compose.yml).
#
# torch is installed first, on its own, so that `pip install .` finds the requirement satisfied
# and never pulls a second build. The default index (PyPI) serves Linux x86_64 wheels built with
# CUDA: the image runs GPU workers and still works on a machine without a GPU. For a much smaller
# CPU-only image (an API host, a CPU worker):
#
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t ranktune:cpu .
#
# TORCH_SPEC pins the version, e.g. --build-arg TORCH_SPEC=torch==2.11.0.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG TORCH_SPEC=torch>=2.4

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RANKTUNE_CACHE_DIR=/var/cache/ranktune \
    HF_HOME=/var/cache/ranktune/huggingface

# LightGBM (the performance model) needs the OpenMP runtime, which slim images leave out.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

WORKDIR /opt/ranktune
COPY pyproject.toml README.md ./
# ranktune/ is the import package's root: its symlinks (service -> ../service, ...) map the four
# folders below to ranktune.service, ranktune.search, ranktune.trainer and ranktune.migrations.
COPY ranktune ./ranktune
COPY search ./search
COPY service ./service
COPY trainer ./trainer
COPY migrations ./migrations
RUN pip install .

# The cache directory exists in the image and belongs to the user, so a named volume mounted
# there starts out writable by it (the pretrained built-in model and the workers' spools live there).
RUN useradd --create-home --uid 10001 ranktune \
    && mkdir -p /var/cache/ranktune \
    && chown ranktune:ranktune /var/cache/ranktune
USER ranktune
WORKDIR /home/ranktune

EXPOSE 8600
ENTRYPOINT ["ranktune"]
CMD ["--help"]
