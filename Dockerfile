FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements/ requirements/
RUN pip install -r requirements/prod.txt

COPY . .
RUN SECRET_KEY=build FLAG_SECRET=build python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 1000 cyberlab && mkdir -p /app/var && chown -R cyberlab /app/var

USER cyberlab
EXPOSE 8000
ENV BIND=0.0.0.0:8000
CMD ["scripts/serve.sh"]
