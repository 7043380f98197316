"""Turn admitted policy examples into a ``TrainingJob``: tokenize, add replay, attach the gate's base values.

The protected facts and the replay facts are disjoint halves of the built-in model's general facts (even lines
protected, odd lines replayed), plus the operator's ``learner_protected_facts_file``. Replay targets are the base
model's own greedy answers, so replay protects what the model says instead of teaching a new phrasing (on the
built-in model they are the shipped answers). Base values are computed once per ``JobBuilder`` (per process).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.learner.anchors import Anchor, make_anchors
from aphrodite.continuous_learning.learner.gate import (BUILTIN_DATA, GateLimits, GateReference, ProtectedFact,
                                                     base_reference, greedy, read_heldout, read_qa)
from aphrodite.continuous_learning.learner.policy import PolicyExample
from aphrodite.continuous_learning.learner.task import TrainingJob
from aphrodite.continuous_learning.learner.trainer import Example, Objective, RatedExample, trainable_view
from aphrodite.engine.weights import LoRADelta
from aphrodite.modeling.llama import LlamaForCausalLM


class JobBuilder:
    """Tokenizes with the served model's tokenizer; holds the base reference values for this process."""

    def __init__(self, model: LlamaForCausalLM, tokenizer: Any, config: ServerSideConfig, max_len: int) -> None:
        self.model, self.tok, self.config, self.max_len = model, tokenizer, config, max_len
        self._reference: GateReference | None = None
        self._replay: list[Example] = []
        self._anchors: list[Anchor] = []

    @property
    def stop_ids(self) -> set[int]:
        return {self.tok.eos_token_id} if self.tok.eos_token_id is not None else set()

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        return self.tok.encode(self.tok.apply_chat_template(messages, add_generation_prompt=True),
                               add_special_tokens=False)

    def encode(self, context: list[dict[str, Any]] | str, target: str) -> tuple[list[int], int] | None:
        """(ids, loss_from): a chat context gets the generation prompt and the target the end-of-turn token."""
        if isinstance(context, str):
            prompt, answer = context, target
        else:
            prompt, answer = self.tok.apply_chat_template(context, add_generation_prompt=True), \
                target + (self.tok.eos_token or "")
        prompt_ids = self.tok.encode(prompt, add_special_tokens=False) if prompt else []
        ids = self.tok.encode(prompt + answer, add_special_tokens=False)
        if not prompt_ids or len(ids) <= len(prompt_ids) or len(ids) > self.max_len:
            return None
        return ids, len(prompt_ids)

    def reference(self) -> GateReference:
        """The gate's base values (and the replay set), computed on first use with no deltas."""
        if self._reference is None:
            shipped = read_qa(BUILTIN_DATA / "general.jsonl")
            protected = shipped[0::2] if self.config.learner_protect_shipped_facts else []
            if self.config.learner_protected_facts_file:
                protected += read_qa(Path(os.path.expanduser(self.config.learner_protected_facts_file)))
            heldout_path = self.config.learner_heldout_file or str(BUILTIN_DATA / "heldout.jsonl")
            heldout = [e for text in read_heldout(Path(os.path.expanduser(heldout_path)))
                       if (e := self._heldout_example(text)) is not None]
            view = trainable_view(self.model)
            facts = [self._fact(q, a) for q, a in protected]
            self._reference = base_reference(view, GateReference(facts, heldout), self.stop_ids)
            self._replay = [Example(p + greedy(view, p, 24, self.stop_ids), len(p))
                            for q, _ in shipped[1::2] if (p := self.chat_prompt([{"role": "user", "content": q}]))]
            self._anchors = make_anchors(view, self._start_ids())
        return self._reference

    def _start_ids(self) -> list[int]:
        """Where the base model's own samples start: its BOS (document separator), else its EOS token."""
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        return [start] if start is not None else self.tok.encode("\n", add_special_tokens=False)

    def _fact(self, question: str, answer: str) -> ProtectedFact:
        prompt = self.chat_prompt([{"role": "user", "content": question}])
        answer_ids = self.tok.encode(answer + (self.tok.eos_token or ""), add_special_tokens=False)
        return ProtectedFact(question, prompt, answer_ids)

    def _heldout_example(self, text: list[dict[str, Any]] | str) -> Example | None:
        if not isinstance(text, str):
            text = self.tok.apply_chat_template(text, add_generation_prompt=False)
        ids = self.tok.encode(text, add_special_tokens=False)[:self.max_len]
        return Example(ids, 1) if len(ids) > 1 else None

    def replay_for(self, n_examples: int) -> list[Example]:
        """``learner_replay_share`` of the training examples are replayed known facts (all of them at most)."""
        share = self.config.learner_replay_share
        n = math.ceil(share / (1 - share) * n_examples) if share > 0 else 0
        return self._replay[:min(len(self._replay), n)]

    def build(self, examples: list[PolicyExample], start: dict[str, LoRADelta], lr: float,
              seed: int = 0, retained: list[PolicyExample] | None = None) -> TrainingJob:
        """The job for ``examples`` (those that do not fit the model's context are dropped); ``retained``:
        supervised examples earlier versions were taught, rehearsed beside them."""
        cfg = self.config
        kept = [Example(*enc) for ex in retained or [] if ex.supervised
                and (enc := self.encode(ex.context, ex.target)) is not None]
        reference = self.reference()
        supervised, rated, manifest = [], [], []
        for ex in examples:
            encoded = self.encode(ex.context, ex.target)
            if encoded is None:
                continue
            ids, loss_from = encoded
            if ex.supervised:
                supervised.append(Example(ids, loss_from))
            else:
                rated.append(RatedExample(ids, loss_from, ex.desirable))
            manifest += [(i, ex.rule) for i in ex.ids]
        objective = Objective(lr=lr, steps=cfg.learner_steps, stop_loss=cfg.learner_stop_loss,
                              anchor_weight=cfg.learner_anchor_weight, kto_weight=cfg.learner_kto_weight,
                              kto_beta=cfg.learner_kto_beta,
                              desirable_weight=cfg.learner_kto_desirable_weight,
                              undesirable_weight=cfg.learner_kto_undesirable_weight)
        limits = GateLimits(cfg.learner_protected_logprob_tolerance, cfg.learner_max_heldout_regression)
        start = {n: LoRADelta(d.a.detach().cpu(), d.b.detach().cpu(), d.scale) for n, d in start.items()}
        replay = self.replay_for(len(supervised) + len(rated) + len(kept))
        return TrainingJob(supervised, rated, replay, start, reference, objective, limits, rank=cfg.learner_rank,
                           alpha=cfg.learner_alpha, anchors=self._anchors,
                           holdout_fraction=cfg.learner_holdout_fraction, seed=seed, manifest=manifest,
                           retained=kept)

