"""schemathesis fuzzes every operation of the API from its own OpenAPI document (in process,
through ASGI): no 5xx, and every answer (errors included) has a documented status, content
type and body shape. Requests that break the schema must be refused with a 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fmnist.predict import Classifier
from fmnist.serve import create_app
from fmnist.serve.app import warm_up

# positive_data_acceptance is left out on purpose: any bytes are a valid "binary" upload for
# the schema, and random bytes are rightly refused as not an image (415).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(small_run):
    app = create_app(Classifier.load(small_run))
    warm_up(app.state.service)  # /readyz as in a started server (ASGI calls skip lifespan)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


OPERATIONS = ["POST /predict", "POST /predict/batch", "GET /health", "GET /livez",
              "GET /readyz", "GET /metrics", "GET /metadata"]  # fmt: skip


# schemathesis's own pytest plugin (schema.parametrize) does not run under pytest 9.2, so the
# strategies are driven by Hypothesis directly: one test per operation and generation mode.
# Negative cases (requests that break the schema) exist only for operations with inputs.
RUNS = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.startswith("POST")
]


@pytest.mark.parametrize(("label", "mode"), RUNS)
def test_every_operation_answers_as_its_schema_says(api_schema, label, mode):
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(checks=CHECKS)

    fuzz()


def test_the_schema_documents_every_operation_and_error(api_schema):
    doc = api_schema.raw_schema
    ops = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}
    assert ops == set(OPERATIONS)
    predict = doc["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "408", "413", "415", "422"} <= set(predict)
    assert predict["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
