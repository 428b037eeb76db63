# Pulseboard server image: embedded SQLite in /data by default, PostgreSQL via DATABASE_URL.
# Built the way CI builds and installs the package (scripts/wheel-smoke): `npm ci` for the chart
# library, `python -m build` (the sdist, then the wheel from it; hatch_build.py vendors the chart
# library into the package), then only the wheel is installed, at the versions of constraints.txt.
# CI machines have no Docker engine: this file is kept correct by reading it against wheel-smoke.

# 1. The chart library from the npm registry, exactly as package-lock.json pins it.
FROM node:20-bookworm-slim AS npm
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

# 2. The sdist and the wheel.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY constraints.txt ./
RUN python -m pip install --no-cache-dir -c constraints.txt build
COPY pyproject.toml README.md hatch_build.py package.json package-lock.json ./
COPY app ./app
COPY frontend ./frontend
COPY migrations ./migrations
COPY --from=npm /src/node_modules ./node_modules
RUN python -m build --outdir /dist .

# 3. The server: the wheel alone (no checkout, no npm), run by a non-root user.
FROM python:3.11-slim-bookworm
COPY --from=build /dist/*.whl /tmp/
COPY constraints.txt /tmp/
RUN python -m pip install --no-cache-dir -c /tmp/constraints.txt /tmp/pulseboard-*.whl \
    && rm /tmp/*.whl /tmp/constraints.txt \
    && groupadd --system --gid 10001 pulseboard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home pulseboard \
    && mkdir /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
ENV PULSEBOARD_DATA_DIR=/data PULSEBOARD_HOST=0.0.0.0 PULSEBOARD_PORT=8000
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["pulseboard", "serve"]
