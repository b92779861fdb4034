# The one Harbinger image: every component is `harbinger <command>` (see manifests/).
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
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Non-root, matching the restricted securityContext in manifests/.
USER 65532:65532
ENTRYPOINT ["harbinger"]
