# The app image for docker compose: the service runs from its source tree, so migrations/ sits beside app/.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY scripts ./scripts
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --no-create-home pitfalls
USER pitfalls
EXPOSE 8080
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8080"]
