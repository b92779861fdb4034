# Harbinger's images (see docs/installation.md for building them with or without Docker).
#   docker build --target components -t harbinger:0.1.0 .      every component: `harbinger <command>`
#   docker build --target sidecar -t harbinger-sidecar:0.1.0 .  the chaos sidecar the webhook injects
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY harbinger harbinger
COPY webhooks webhooks
COPY extender extender
COPY models models
COPY scaler scaler
COPY chaos chaos
COPY certs certs
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# The chaos sidecar runs next to every rehearsed application: only what
# `harbinger chaos sidecar` imports (no numpy, onnxruntime, scikit-learn, matplotlib).
FROM python:3.11-slim AS sidecar
COPY hack/sidecar-requirements.txt /tmp/
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -r /tmp/sidecar-requirements.txt \
    && pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels /tmp/sidecar-requirements.txt
USER 65532:65532
ENTRYPOINT ["harbinger"]

# Every component, with training (the in-cluster training job) and plots (chaos reports).
FROM python:3.11-slim AS components
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[train,plots]" && rm -rf /wheels
# Non-root, matching the restricted securityContext in manifests/.
USER 65532:65532
ENTRYPOINT ["harbinger"]
