# cliplive serve in a container: docker build -t cliplive . && see docs/compose.yaml
#
#   docker run -v ./cliplive.toml:/config/cliplive.toml:ro -v cliplive-data:/data -p 8080:8080 cliplive
#
# The config file must set `data_dir = "/data"` under [server] (the volume: database, token, clips);
# with no `token` there, one is generated into /data/token at first start and printed to the log.
FROM python:3.11-slim

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --create-home --home-dir /home/cliplive --shell /usr/sbin/nologin cliplive \
    && mkdir -p /data /config && chown cliplive:cliplive /data

WORKDIR /opt/cliplive
COPY pyproject.toml README.md ./
COPY api api
COPY models models
COPY stream stream
COPY research research
COPY server server
# `pip install .` pulls torch from PyPI (with CUDA libraries on x86-64: large). For a CPU-only image,
# install the CPU build first, e.g.
#   pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu
# (this Dockerfile was written where neither that index nor a Docker engine was reachable: untested).
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER cliplive
# open_clip downloads the CLIP weights at first start; keep them on the volume, not in the layer.
ENV HF_HOME=/data/cache/huggingface \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["cliplive"]
CMD ["serve", "--config", "/config/cliplive.toml", "--host", "0.0.0.0"]
