# Pulseboard server image: embedded SQLite in /data by default, PostgreSQL via DATABASE_URL.
FROM python:3.11-slim
WORKDIR /srv/pulseboard
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY frontend ./frontend
RUN pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 pulseboard && mkdir /data && chown pulseboard /data
USER pulseboard
ENV PULSEBOARD_DATA_DIR=/data PULSEBOARD_HOST=0.0.0.0 PULSEBOARD_PORT=8000
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["pulseboard", "serve"]
