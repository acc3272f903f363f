# The image every Airflow service of docker-compose.yaml runs: the official Airflow
# image plus opsdag's runtime dependencies (requirements.txt).
#
# The tag is the apache-airflow pin of requirements.in / requirements.txt, and Python 3.11
# is the version the project supports (pyproject.toml, requirements.lock);
# tests/unit/test_compose.py checks both. requirements.txt repeats apache-airflow==3.3.2,
# so pip keeps the image's Airflow and installs only what the other pins need (see the
# comment at the top of requirements.txt for why it holds direct pins, not the lock).
#
# opsdag's own code is not copied in: docker-compose.yaml mounts dags/, plugins/ and
# include/ from the checkout, so editing a spec or the package needs no rebuild. Rebuild
# (`docker compose build`) after requirements.txt changes.
FROM apache/airflow:3.3.2-python3.11

# Backups need no extra system package: the official image ships PostgreSQL's client
# tools (pg_dump, pg_restore, pg_basebackup) from the PGDG repository, a release new
# enough for zstd. Physical restore drills also start a temporary server (pg_ctl): for
# them, add the server package of your databases' major version here, e.g.
#   USER root
#   RUN apt-get update && apt-get install -y --no-install-recommends postgresql-16 \
#       && rm -rf /var/lib/apt/lists/*

# pip runs as the image's airflow user, as the image's documentation asks.
USER airflow
COPY --chown=airflow:0 requirements.txt /opt/opsdag/requirements.txt
RUN pip install --no-cache-dir -r /opt/opsdag/requirements.txt
