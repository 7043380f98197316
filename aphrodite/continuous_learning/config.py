"""Server-side continuous-learning configuration and the CLI flags generated from it.

``ServerSideConfig`` is the single source of every learning flag: its field docstrings are the help texts
and its defaults are the flag defaults (see ``aphrodite.common.config_cli``).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Literal

from aphrodite.common.config_cli import add_dataclass_args, dataclass_from_args

ENABLE_FLAG = "--enable-continuous-learning"

# Flags named by the design document; every other field becomes ``--learning-<field-with-dashes>``.
_FLAG_NAMES = {
    "background_learning_interval": "--learning-background-interval",
    "max_learning_rate_production": "--learning-max-rate",
    "interaction_quality_threshold": "--learning-quality-threshold",
    "min_interactions_for_learning": "--learning-min-interactions",
    "learning_dir": "--learning-dir",
    "learning_rate_decay_production": "--learning-rate-decay",
    "max_concurrent_learning_tasks": "--learning-max-concurrent-tasks",
}


@dataclass
class ServerSideConfig:
    """Continuous learning from production traffic: capture, feedback, scoring, storage and safety limits."""

    enable_request_monitoring: bool = True
    """Mount the request-monitoring middleware (latency and status code of the monitored endpoints)."""
    enable_response_feedback: bool = True
    """Accept user feedback on earlier responses at POST /v1/learning/feedback."""
    enable_user_interactions: bool = True
    """Capture every finished completion and chat request as an interaction."""
    background_learning_interval: float = 60.0
    """Seconds between two runs of the background learning step (retention clean-up, eligibility, learner)."""
    max_concurrent_learning_tasks: int = 1
    """Most learning tasks the background processor runs at the same time. Whatever the number, a candidate
    is promoted only if its parent still serves (otherwise its batch is offered again), so no promotion
    discards another."""
    enable_hot_swapping: bool = True
    """Let the learner hand new weight versions to the running engine without a restart."""
    max_learning_rate_production: float = 1e-4
    """Upper bound on the learning rate used on production traffic."""
    learning_rate_decay_production: float = 0.995
    """Factor applied to the learning rate after each learning step, in (0, 1]."""
    enable_rollback_on_failure: bool = True
    """Roll back automatically when explicit ratings of the serving version are clearly worse than its
    parent's (see learner_rollback_min_ratings). Refused candidates never roll back a serving version."""
    min_interactions_for_learning: int = 10
    """Eligible interactions needed before a learning step runs."""
    interaction_quality_threshold: float = 0.6
    """Quality score in [0, 1] at or above which an interaction is eligible for learning."""
    enable_performance_feedback: bool = True
    """Record the latency and status of each monitored request as implicit (performance) feedback."""
    max_interaction_buffer: int = 10_000
    """Most recent interactions held in memory (older ones stay in the store)."""
    max_feedback_buffer: int = 5_000
    """Most recent feedback records (request monitoring and user feedback) held in memory."""
    max_quality_scores: int = 1_000
    """Most recent quality scores held in memory for the metrics."""
    learning_dir: str = os.path.join("~", ".cache", "aphrodite", "learning")
    """Directory of the durable interaction store (SQLite database learning.db); created if absent."""
    monitored_endpoints: str = "/v1/completions,/v1/chat/completions"
    """Comma-separated request paths the monitoring middleware records (exact match)."""
    write_queue_size: int = 10_000
    """Captured interactions waiting for the background writer; when full, new ones are dropped and counted."""
    store_max_interactions: int = 1_000_000
    """Most interactions kept in the store; the oldest are deleted first (with their feedback)."""
    store_max_age_days: float = 30.0
    """Interactions older than this many days are deleted from the store (0 keeps them forever)."""
    feedback_wait_s: float = 0.25
    """How long feedback on an unknown response id waits for that response to finish being captured."""
    failure_window_s: float = 600.0
    """Window in seconds over which recent failures are counted."""
    max_recent_failures: int = 5
    """More failures than this within failure_window_s mark the system degraded."""
    learner: Literal["none", "lora"] = "lora"
    """Background learner: ``lora`` trains low-rank deltas on eligible interactions, evaluates each candidate
    and hot-swaps it into the engine between steps; ``none`` records and scores only."""
    learner_rank: int = 8
    """Rank of the LoRA deltas."""
    learner_alpha: float = 16.0
    """LoRA scale numerator: the delta is (alpha / rank) * B @ A."""
    learner_steps: int = 80
    """Most optimizer steps per learning task (each on up to 16 examples plus replay); training stops earlier
    once the target loss is below learner_stop_loss."""
    learner_max_examples: int = 64
    """Most admitted examples one learning task trains on (the newest)."""
    # -- rehearsal (session 3) --
    learner_rehearsal_examples: int = 32
    """Most supervised examples that earlier versions of the serving lineage were taught, rehearsed in each
    new task (the newest first) so a new fact does not overwrite the previous ones; the gate refuses a
    candidate that keeps fewer of them than its parent. 0 turns rehearsal off."""
    quality_predictor: Literal["none", "reservoir"] = "reservoir"
    """Learned quality predictor: ``reservoir`` runs the generated tokens' hidden states through a DeepTreeESN
    and an online readout trained from explicit feedback, whose prediction enters the quality score as it
    proves accurate (the engine is then asked for hidden states); ``none`` scores from heuristics and
    feedback only."""
    quality_predictor_units: int = 64
    """Units per sub-reservoir of the quality predictor's DeepTreeESN."""
    quality_predictor_depth: int = 2
    """Levels of the quality predictor's reservoir tree (two children per sub-reservoir)."""
    quality_predictor_max_held: int = 2_048
    """Captured responses whose reservoir features are held awaiting feedback (about 2 KB each at the default
    size); the oldest are forgotten first, and feedback on a forgotten response does not train."""
    quality_predictor_save_every: int = 32
    """Save the quality predictor to the learning dir after this many new labels (and always on shutdown)."""

    # -- privacy, retention by bytes, memory bounds (issue 8) --------------------------------------------------
    redact_pii: bool = True
    """Replace e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IP addresses and national
    ids (US SSN, UK NI number, IBAN) with placeholders such as [EMAIL] before anything is stored; the learner
    then trains on the redacted text. --no-learning-redact-pii keeps texts verbatim."""
    store_max_bytes: int = 1 << 30
    """Most bytes the store's records may take in learning.db; retention deletes the oldest interactions (with
    their feedback) until under it. The file is not shrunk: freed pages are reused."""
    max_interaction_buffer_bytes: int = 64 << 20
    """Most bytes (estimated) the recent interactions held in memory may take; the oldest are evicted first."""
    write_queue_max_bytes: int = 64 << 20
    """Most bytes (estimated) of captured interactions waiting for the background writer; beyond it new ones
    are dropped and counted."""

    # -- versions: how learning runs, how versions are kept, served and rolled back --------------------------
    learner_keep_versions: int = 16
    """Promoted weight versions kept on disk (PEFT adapter directories under <learning-dir>/versions) and
    available to rollback; the serving one is always kept. Survives restarts."""
    learner_worker: Literal["process", "thread"] = "process"
    """Where training runs: ``process`` is a nice-19, one-thread worker process that maps the served base
    weights from shared memory (serving keeps its pace); ``thread`` trains on a thread of the server (used
    automatically when the model is on a GPU)."""
    learner_busy_duty_cycle: float = 0.5
    """Share of the time the ``process`` worker trains while the server has requests in flight: after an
    optimizer step of t seconds it pauses t * (1 - d) / d (1.0: no pause). Serving keeps more of its pace and
    a task takes longer under load; with no request in flight the worker trains flat out."""
    learner_pause_after_refusals: int = 5
    """Pause background learning (with the reason in status) after this many refused candidates in a row."""
    learner_rollback_min_ratings: int = 20
    """Explicit ratings needed on each of the serving version and its parent before live evidence can roll
    the serving version back (one-sided two-proportion z-test on positive-rating rates)."""
    learner_rollback_alpha: float = 0.05
    """Significance level of that test: roll back when the serving version's positive-rating rate is lower
    than its parent's with p < alpha."""

    # -- canary roll-out of promoted versions (adapters, issue 11) -------------------------------------------
    canary_share: float = 0.1
    """Share of new requests a promoted candidate serves first, beside its parent (sticky per request ``user``
    when the request names one), until live outcomes decide; 0 promotes at once to everyone."""
    canary_min_ratings: int = 20
    """Live outcomes (explicit ratings; a correction counts as a negative one) per look of the canary's
    sequential test: look k runs once the canary has k * canary_min_ratings and its parent canary_min_ratings."""
    canary_looks: int = 3
    """Looks of the canary's sequential test: at each, a one-sided z-test at canary_alpha / canary_looks rolls
    the canary back if its positive rate is below its parent's; passing the last look promotes it."""
    canary_alpha: float = 0.05
    """Overall significance level of the canary's sequential test (the chance of rolling back a canary as good
    as its parent, over all looks)."""
    canary_max_seconds: float = 900.0
    """Longest a canary runs without a decision: then, if no look of the test found it worse (too few ratings
    came), it is promoted to everyone (it passed the gate; learning waits while a canary runs, so a server
    without rating traffic would otherwise stop learning). 0: wait for the test however long it takes."""

    # learner: signal policy and gate
    learn_from_unrated: bool = False
    """Also train on unrated served answers whose quality score reaches interaction_quality_threshold. Risky:
    the model then learns from its own outputs, mistakes included; off by default."""
    learner_max_client_share: float = 0.25
    """Largest share of a batch's client-sourced examples (ratings, corrections) one client (API key) may
    contribute; a client always keeps at least one. Curated examples are the operator's and not capped."""
    learner_learning_rate: float = 5e-4
    """Adam learning rate of the LoRA deltas; the production schedule scales it by
    current_learning_rate / max_learning_rate_production."""
    learner_stop_loss: float = 0.5
    """Stop training once greedy decoding reproduces every taught target and their mean loss per target token
    is below this (nats); 0 always runs learner_steps."""
    learner_replay_share: float = 0.5
    """Share of each training step's examples drawn from known facts the model answers already (replay), to
    protect them; these are disjoint from the protected facts."""
    learner_anchor_weight: float = 100.0
    """Weight of the penalty keeping the candidate's next-token distributions on the base model's own samples
    close to the base model's (KL divergence), which limits drift on text the batch is not about."""
    learner_kto_weight: float = 1.0
    """Weight (lambda) of the KTO loss on rated answers beside the supervised loss."""
    learner_kto_beta: float = 0.1
    """KTO beta: how far a rated answer's log-probability may move from the parent version's."""
    learner_kto_desirable_weight: float = 1.0
    """KTO weight of positively rated answers."""
    learner_kto_undesirable_weight: float = 1.0
    """KTO weight of negatively rated answers."""
    learner_protected_facts_file: str = ""
    """JSONL file of {"question": ..., "answer": ...} lines the gate protects beside the shipped facts: a
    candidate may not change their greedy answers nor lower their answers' log-probability by more than
    learner_protected_logprob_tolerance."""
    learner_protect_shipped_facts: bool = True
    """Protect the shipped general facts (half of the built-in model's, never trained on) beside the operator's
    file. Turn it off only for a model that does not know them (a tiny test model answers them with noise that
    any update changes), and give learner_protected_facts_file instead."""
    learner_protected_logprob_tolerance: float = 1.0
    """Largest fall (nats, summed over the answer) of a protected answer's log-probability below the base
    model's that the gate accepts."""
    learner_heldout_file: str = ""
    """JSONL file of held-out texts ({"text": ...} or {"messages": [...]}) for the gate's perplexity check;
    empty: the built-in model's held-out chats."""
    learner_max_heldout_regression: float = 0.02
    """Largest relative rise of held-out perplexity above the base model's that the gate accepts."""
    learner_holdout_fraction: float = 0.25
    """With 8 or more supervised examples, this share is first held out: the candidate must improve there too."""

    # -- scale out: a shared PostgreSQL store, replicas, a vLLM fleet (issue 12) -------------------------------
    store: str = ""
    """Where interactions, feedback and the learning state are kept: empty for SQLite (learning.db under
    learning_dir), or a PostgreSQL URL (postgresql://user:password@host:5432/dbname) that replicas share."""
    export_dir: str = ""
    """Directory where every promoted version is also written as a PEFT adapter, one directory per adapter
    name (<model>-v<N>, and <model>-latest for the serving one), updated atomically: point vLLM's filesystem
    LoRA resolver at it. Empty: no export."""
    export_name: str = "learned"
    """Adapter name prefix in the export directory: <name>-v<N> per version, <name> for the serving one."""
    export_base_model: str = ""
    """base_model_name_or_path written into exported adapters: exactly the --model argument the vLLM servers were
    started with (a path or a hub id; vLLM's filesystem resolver compares it with its model_config.model, not with
    --served-model-name, and skips an adapter that differs). Empty: this server's served model name."""
    replica_id: str = ""
    """This replica's name among the replicas sharing a PostgreSQL store (status shows it, and the leader by
    it). Empty: <hostname>-<pid>."""
    replica_url: str = ""
    """This replica's own URL, shown beside its name in the fleet status (optional)."""
    fleet_poll_s: float = 1.0
    """With a PostgreSQL store: seconds between a replica's fleet checks (leadership, heartbeat, the serving
    version; NOTIFY wakes it at once on a change) and between reconnection attempts."""

    # -- per-tenant adapters (tenants, issue 11 item 4) ---------------------------------------------------------
    enable_tenant_adapters: bool = False
    """Serve per-tenant adapters: a request whose model is <model>:<tenant> runs on that tenant's own lineage of
    learned versions, and feedback, corrections and curated examples on its responses train that tenant only
    (gated against the base model like every candidate). Tenants are created by an admin (POST
    /v1/learning/tenants or learning_tenants); an unknown tenant is a 404."""
    tenants: str = ""
    """Comma-separated tenant names created at start if absent (1 to 63 lowercase letters, digits, '_', '-');
    needs enable_tenant_adapters."""
    max_tenants: int = 64
    """Most tenants this server keeps (creating another is refused)."""

    def __post_init__(self) -> None:
        _check(0.0 < self.max_learning_rate_production <= 1.0, "max_learning_rate_production",
               self.max_learning_rate_production, "must be in (0, 1]")
        _check(0.0 < self.learning_rate_decay_production <= 1.0, "learning_rate_decay_production",
               self.learning_rate_decay_production, "must be in (0, 1]")
        _check(0.0 <= self.interaction_quality_threshold <= 1.0, "interaction_quality_threshold",
               self.interaction_quality_threshold, "must be in [0, 1]")
        for name in ("background_learning_interval", "failure_window_s", "fleet_poll_s"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        for name in ("store_max_age_days", "feedback_wait_s"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        for name in ("max_concurrent_learning_tasks", "min_interactions_for_learning", "max_interaction_buffer",
                     "max_feedback_buffer", "max_quality_scores", "write_queue_size", "store_max_interactions",
                     "quality_predictor_units", "quality_predictor_depth", "quality_predictor_max_held",
                     "quality_predictor_save_every", "learner_rank", "learner_steps", "learner_max_examples",
                     "learner_keep_versions", "learner_pause_after_refusals", "learner_rollback_min_ratings",
                     "canary_min_ratings", "canary_looks"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _check(self.learner_rehearsal_examples >= 0, "learner_rehearsal_examples", self.learner_rehearsal_examples,
               "must be >= 0")
        for name in ("store_max_bytes", "max_interaction_buffer_bytes", "write_queue_max_bytes"):  # issue 8
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _check(self.learner_alpha > 0, "learner_alpha", self.learner_alpha, "must be > 0")
        _check(0.0 < self.learner_busy_duty_cycle <= 1.0, "learner_busy_duty_cycle", self.learner_busy_duty_cycle,
               "must be in (0, 1]")
        _check(0.0 < self.learner_rollback_alpha < 1.0, "learner_rollback_alpha", self.learner_rollback_alpha,
               "must be in (0, 1)")
        _check(0.0 <= self.canary_share <= 1.0, "canary_share", self.canary_share, "must be in [0, 1]")
        _check(0.0 < self.canary_alpha < 1.0, "canary_alpha", self.canary_alpha, "must be in (0, 1)")
        _check(self.canary_max_seconds >= 0, "canary_max_seconds", self.canary_max_seconds, "must be >= 0")
        for name in ("learner_learning_rate", "learner_kto_beta"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        for name in ("learner_stop_loss", "learner_anchor_weight", "learner_kto_weight", "learner_kto_desirable_weight",
                     "learner_kto_undesirable_weight", "learner_protected_logprob_tolerance",
                     "learner_max_heldout_regression"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        _check(0.0 < self.learner_max_client_share <= 1.0, "learner_max_client_share",
               self.learner_max_client_share, "must be in (0, 1]")
        _check(0.0 <= self.learner_replay_share < 1.0, "learner_replay_share", self.learner_replay_share,
               "must be in [0, 1)")
        _check(0.0 < self.learner_holdout_fraction < 1.0, "learner_holdout_fraction",
               self.learner_holdout_fraction, "must be in (0, 1)")
        _check(self.max_recent_failures >= 0, "max_recent_failures", self.max_recent_failures, "must be >= 0")
        _check(bool(self.learning_dir.strip()), "learning_dir", self.learning_dir, "must not be empty")
        _check(self.store == "" or self.store.startswith(("postgresql://", "postgres://")), "store",
               "<url>" if self.store else self.store, "must be empty (SQLite) or a postgresql:// URL")  # issue 12
        _check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", self.export_name)), "export_name",
               self.export_name, "must be letters, digits, '_', '.', '-'")
        _check(self.max_tenants >= 1, "max_tenants", self.max_tenants, "must be >= 1")  # tenants
        _check(all(re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", t) for t in self.tenant_names), "tenants", self.tenants,
               "must be comma-separated names of 1 to 63 lowercase letters, digits, '_', '-'")
        _check(not self.tenant_names or self.enable_tenant_adapters, "tenants", self.tenants,
               "needs --learning-enable-tenant-adapters")
        paths = self.monitored_paths
        _check(all(p.startswith("/") for p in paths), "monitored_endpoints", self.monitored_endpoints,
               "must be comma-separated paths starting with '/'")

    @property
    def tenant_names(self) -> list[str]:
        """The tenants created at start (``tenants``)."""
        return [t.strip() for t in self.tenants.split(",") if t.strip()]

    @property
    def monitored_paths(self) -> frozenset[str]:
        """The request paths the monitoring middleware records."""
        return frozenset(p.strip() for p in self.monitored_endpoints.split(",") if p.strip())

    @property
    def store_path(self) -> str:
        """Path of the SQLite database file."""
        return os.path.join(os.path.expanduser(self.learning_dir), "learning.db")


def _check(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        flag = _FLAG_NAMES.get(name, "--learning-" + name.replace("_", "-"))
        raise ValueError(f"{name} (flag {flag}) {rule}; got {value!r}")


def add_learning_cli_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--enable-continuous-learning`` and one flag per ``ServerSideConfig`` field."""
    group = add_dataclass_args(parser, ServerSideConfig, title="Continuous learning", prefix="learning-",
                               flag_names=_FLAG_NAMES)
    group.add_argument(ENABLE_FLAG, dest="enable_continuous_learning", action="store_true",
                       help="Capture production traffic and feedback for learning, and serve /v1/learning/*. "
                            "Without it the learning routes answer 404 and nothing is captured.")
    return group


def learning_config_from_args(args: argparse.Namespace) -> ServerSideConfig | None:
    """The learning config from parsed flags, or None when continuous learning is not enabled."""
    if not getattr(args, "enable_continuous_learning", False):
        return None
    return dataclass_from_args(ServerSideConfig, args)
