import argparse
import dataclasses

import pytest

from aphrodite.continuous_learning.config import ServerSideConfig, add_learning_cli_args, learning_config_from_args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_learning_cli_args(p)
    return p


def test_defaults_are_the_design_documents():
    c = ServerSideConfig()
    assert (c.max_learning_rate_production, c.learning_rate_decay_production) == (1e-4, 0.995)
    assert (c.min_interactions_for_learning, c.interaction_quality_threshold) == (10, 0.6)
    assert (c.max_interaction_buffer, c.max_feedback_buffer, c.max_quality_scores) == (10_000, 5_000, 1_000)
    assert c.max_concurrent_learning_tasks == 1
    assert c.enable_request_monitoring and c.enable_response_feedback and c.enable_user_interactions
    assert c.enable_hot_swapping and c.enable_rollback_on_failure and c.enable_performance_feedback


def test_without_the_enable_flag_there_is_no_config():
    assert learning_config_from_args(parser().parse_args([])) is None


def test_design_document_cli_example():
    args = parser().parse_args(["--enable-continuous-learning", "--learning-background-interval", "60",
                                "--learning-max-rate", "0.00005", "--learning-quality-threshold", "0.7",
                                "--learning-min-interactions", "20", "--learning-dir", "/tmp/x"])
    c = learning_config_from_args(args)
    assert (c.background_learning_interval, c.max_learning_rate_production) == (60.0, 5e-5)
    assert (c.interaction_quality_threshold, c.min_interactions_for_learning, c.learning_dir) == (0.7, 20, "/tmp/x")


def test_every_field_has_a_flag_with_help():
    p = parser()
    helps = {a.dest: a.help for a in p._actions}
    for f in dataclasses.fields(ServerSideConfig):
        assert f.name in helps, f.name
        assert len(helps[f.name]) > 20, f.name
    args = p.parse_args(["--enable-continuous-learning", "--no-learning-enable-hot-swapping",
                         "--learning-write-queue-size", "5"])
    c = learning_config_from_args(args)
    assert c.enable_hot_swapping is False and c.write_queue_size == 5


@pytest.mark.parametrize("field,value", [
    ("max_learning_rate_production", 0.0), ("max_learning_rate_production", 2.0),
    ("learning_rate_decay_production", 1.5), ("interaction_quality_threshold", -0.1),
    ("interaction_quality_threshold", 1.1), ("background_learning_interval", 0.0),
    ("min_interactions_for_learning", 0), ("max_interaction_buffer", 0), ("write_queue_size", 0),
    ("store_max_age_days", -1.0), ("learning_dir", " "), ("monitored_endpoints", "v1/completions"),
    ("max_tenants", 0), ("tenants", "acme"),  # tenants need --learning-enable-tenant-adapters
])
def test_invalid_values_name_the_flag(field, value):
    with pytest.raises(ValueError, match=field) as info:
        ServerSideConfig(**{field: value})
    assert "--learning-" in str(info.value)


def test_design_document_production_configuration():
    production_config = ServerSideConfig(
        enable_request_monitoring=True,
        background_learning_interval=60.0,      # 1 minute
        max_learning_rate_production=0.00005,   # Very conservative
        enable_rollback_on_failure=True,
        min_interactions_for_learning=20,       # Higher threshold
        interaction_quality_threshold=0.7       # Higher quality bar
    )
    assert production_config.min_interactions_for_learning == 20


def test_tenant_names_are_checked_at_start():
    assert ServerSideConfig(enable_tenant_adapters=True, tenants="acme, globex").tenant_names == ["acme", "globex"]
    with pytest.raises(ValueError, match="--learning-tenants"):
        ServerSideConfig(enable_tenant_adapters=True, tenants="Acme Corp")
