# Ouroboros: one image for the web server and the Celery workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch at the version requirements.txt pins: the CPU build by default; a GPU image can pass
# TORCH_INDEX=https://download.pytorch.org/whl/cu128.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements.txt requirements-deploy.lock ./
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} "$(grep '^torch==' requirements.txt)"
# Then everything else at the versions and hashes of the lock (bin/lock), MLflow's client included:
# tracking is off until MLFLOW_TRACKING_URI is set.
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-deploy.lock

COPY . .
ENV MEDIA_ROOT=/data/media STATIC_ROOT=/data/static OUROBOROS_VAR_DIR=/data
# Hashed, compressed static files for whitenoise, built into the image (a throwaway key: nothing is signed).
RUN DEBUG=0 SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    python manage.py collectstatic --noinput --verbosity 0
RUN useradd --create-home ouroboros && mkdir -p /data/media && chown -R ouroboros /data
USER ouroboros
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
