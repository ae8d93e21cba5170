# weflow's container image: the API (`weflow serve`) and workers (`weflow worker`, `weflow node-worker`)
# from one image. Stage 1 builds the wheel from this checkout; stage 2 installs that wheel with the
# pinned versions of constraints.txt, and nothing else of the checkout. See docs/how-to/docker.md.
#
#   docker build -t weflow .
#   docker build -t weflow:dask --build-arg EXTRAS='[dask]' .     # workers for settings.dask
#   docker run --rm -p 8000:8000 -v weflow-state:/srv/weflow weflow          # the API (default command)
#   docker run --rm -v weflow-state:/srv/weflow weflow worker                # a worker
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY weflow ./weflow
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ARG EXTRAS=""
COPY --from=wheel /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --disable-pip-version-check -c /tmp/constraints.txt \
        --find-links /wheels "weflow${EXTRAS}" \
    && rm -rf /wheels /tmp/constraints.txt \
    && useradd --create-home --uid 10001 weflow \
    && mkdir -p /srv/weflow/data \
    && chown -R weflow:weflow /srv/weflow
# weflow's defaults are relative to the working folder: the catalog data/weflow.duckdb, the Prefect
# home data/prefect, the runs folder data/runs and the data root "." all land in the volume.
WORKDIR /srv/weflow
VOLUME /srv/weflow
USER weflow
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
ENTRYPOINT ["weflow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
