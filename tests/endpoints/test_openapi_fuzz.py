"""Schemathesis against the real server's ``/openapi.json``: every route, learning included, with generated
valid and invalid inputs. No input may cause a 5xx, and every documented response must match its schema.

Bounded: a loopback subprocess server on the tiny checkpoint, a fixed number of examples per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.server_process import RemoteServer

MAX_EXAMPLES = 30
"""Examples per operation: enough to try every field's edges, small enough for CI on 2 cores."""


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir, tmp_path_factory):
    learning_dir = tmp_path_factory.mktemp("fuzz-learning")
    with RemoteServer(["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
                       "--enable-continuous-learning", "--learning-dir", str(learning_dir),
                       "--learning-background-interval", "3600"]) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_causes_a_server_error(case) -> None:
    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
