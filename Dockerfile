# The radreport image: API, workers and the migrate job all run from it.
#   docker build -t radreport .                      (CPU)
#   docker build -t radreport:gpu --build-arg JAX_EXTRA=cuda12 .   (NVIDIA GPUs)
FROM python:3.11-slim-bookworm AS base

ARG JAX_EXTRA=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends curl libgomp1 libjemalloc2 procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 radreport

WORKDIR /app
COPY pyproject.toml README.md ./
COPY radreport radreport
COPY radiology radiology
COPY modeling modeling
COPY evaluation evaluation
COPY finetune finetune
COPY service service
RUN pip install . \
 && if [ -n "$JAX_EXTRA" ]; then \
      pip install "jax[$JAX_EXTRA]==$(python -c 'import jax; print(jax.__version__)')"; fi

RUN mkdir -p /data/store /jax-cache && chown -R radreport /data /jax-cache
USER radreport

# Defaults; docker-compose.yml documents and overrides them.
ENV STORAGE_DIR=/data/store \
    DATABASE_URL=sqlite:////data/radreport.db \
    REDIS_URL=redis://redis:6379/0

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["radreport", "serve", "--host", "0.0.0.0", "--port", "8000"]
