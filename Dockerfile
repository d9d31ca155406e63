# One image for the worker and the gateway.
#   worker:  python -m bytewax.run dataflows.recommend           (the default command)
#   gateway: streamrec serve --host 0.0.0.0 --port 8000           (needs STREAMREC_GATEWAY_SECRET)
# Configure with environment variables (docs/configuration.md): KAFKA_BOOTSTRAP_SERVERS,
# REDIS_URL, STREAMREC_PREFIX, ... compose.yaml runs both with a broker and Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The gateway extra runs `streamrec serve`; no embedded broker/Redis, test or benchmark
# tools in the image (bench/ is a package of the project, its tools need the dev extra).
COPY pyproject.toml README.md ./
COPY streamrec/ streamrec/
COPY dataflows/ dataflows/
COPY operators/ operators/
COPY models/ models/
COPY connectors/ connectors/
COPY workloads/ workloads/
COPY evaluation/ evaluation/
COPY gateway/ gateway/
COPY bench/ bench/
RUN pip install '.[gateway]'

RUN useradd --create-home --uid 10001 streamrec \
    && mkdir -p /var/lib/streamrec/recovery \
    && chown -R streamrec /var/lib/streamrec
USER streamrec

# The gateway's port (streamrec serve --port 8000).
EXPOSE 8000

# Recovery: mount a volume at /var/lib/streamrec/recovery, run
#   python -m bytewax.recovery /var/lib/streamrec/recovery 1   (once)
# and start with: -r /var/lib/streamrec/recovery -s 10 -b 0
CMD ["python", "-m", "bytewax.run", "dataflows.recommend"]
