# The streamrec worker: python -m bytewax.run dataflows.recommend
# Configure with environment variables (see README): KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so code edits do not reinstall them. No extras: no embedded
# broker/Redis, no test or benchmark tools in the image.
COPY pyproject.toml README.md ./
COPY streamrec/ streamrec/
COPY dataflows/ dataflows/
COPY operators/ operators/
COPY models/ models/
COPY connectors/ connectors/
COPY evaluation/ evaluation/
COPY gateway/ gateway/
COPY bench/ bench/
RUN pip install .

RUN useradd --create-home --uid 10001 streamrec \
    && mkdir -p /var/lib/streamrec/recovery \
    && chown -R streamrec /var/lib/streamrec
USER streamrec

# Recovery: mount a volume at /var/lib/streamrec/recovery, run
#   python -m bytewax.recovery /var/lib/streamrec/recovery 1   (once)
# and start with: -r /var/lib/streamrec/recovery -s 10 -b 0
CMD ["python", "-m", "bytewax.run", "dataflows.recommend"]
