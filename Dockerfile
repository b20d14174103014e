# One image for every role: api, worker, beat and the one-off migration.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MAILING_ENV=production
WORKDIR /app

# The locked, hash-checked dependencies first (scripts/lock makes requirements.lock), then the
# project itself without resolving anything again.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY mailing ./mailing
COPY workers ./workers
COPY templates ./templates
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 mailing

USER mailing
EXPOSE 8000
CMD ["mailing", "serve", "--host", "0.0.0.0", "--port", "8000"]
