# askq image: one image for every askq process (worker, Flower, emulator, metrics exporter,
# producer CLI); the process is chosen by the command. Build: `docker build -t askq:local .`
# No secret is baked in: the API key, the Redis password and Flower's credentials come from the
# environment at run time (docker compose: .env; Kubernetes: the askq-secrets Secret).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 askq \
    && useradd --system --uid 10001 --gid askq --create-home --home-dir /home/askq \
        --shell /usr/sbin/nologin askq

# Install from a build directory that is deleted afterwards, and run from /app, which holds only
# examples/: `celery -A worker` then imports the installed package, and no stray module in the
# working directory can shadow a dependency (a `redis.py` there shadows the redis package).
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && rm -rf /src

WORKDIR /app
COPY examples/ /app/examples/

USER 10001:10001

# Flower, the emulator, the Prometheus exporter.
EXPOSE 5555 8787 9808

# The worker is the default process. Celery handles SIGTERM itself (warm shutdown: stop
# consuming, finish running tasks, hand unstarted ones back to the queue).
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker", "worker", "--loglevel=INFO"]
