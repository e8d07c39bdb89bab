"""A deterministic engine driven by a script: for tests, docs and fault injection.

It behaves like a real in-process engine (same base class, same prefix reuse, entropy, stop strings,
slots and cancellation) but its "model" is a script: the response it wants to write, cut into steps at
"\\n\\n", and the entropy of its next-token distribution at the start of each step. Inside a step the
distribution is sharply peaked on the script's next token. Every scripted engine shares one fixed
tokenizer, so a scripted small and large model can exchange token ids like a real same-family pair.

Where it is in its script is read from the context: the tokens after the last ``<|assistant|>``
token; the number of "\\n\\n" written so far is the step, the tokens since the last one the offset.
So a step written by the *other* model moves it on to the next step, as with real models. An agent's
model answers differently once it has seen a tool result: ``next_turns`` are the responses of the turns
after the first, second, ... tool result in the context (the last one repeats).
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Self

import numpy as np

from glimp_llm.engines.base import EngineInfo
from glimp_llm.engines.in_process import InProcessEngine
from glimp_llm.errors import EngineFailureError, InvalidRequestError

if TYPE_CHECKING:
    from glimp_llm.config import ScriptedEngineConfig

DELIMITER = "\n\n"
SPECIAL_TOKENS = ("<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>")
_WORDS = """
the a an and or of to in is are was it that this step so we then first next finally answer total each per has
have make makes made sells buys costs cost price dollars hours minutes days week plus minus times divided equals
left remaining number numbers let think wait check compute therefore because result solve problem question tool
call calculator add multiply yes no true false done hello world paris france capital city
"""
SCRIPTED_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}<tool_call>{{ c['function'] | tojson }}"
    "</tool_call>{% endfor %}{% endif %}<|end|>\n{% endfor %}"
    "{% if tools %}<|system|>\ntools: {{ tools | tojson }}<|end|>\n{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ScriptedTokenizer:
    """A fixed vocabulary: special tokens, "\\n\\n", words (with and without a leading space), digits
    and every printable ASCII character; longest-match tokenisation. Identical for every instance."""

    def __init__(self, extra_pieces: int = 64) -> None:
        pieces = [*SPECIAL_TOKENS, DELIMITER, "\n", "<tool_call>", "</tool_call>", "<think>", "</think>"]
        for w in _WORDS.split():
            pieces += [w, " " + w, w.capitalize(), " " + w.capitalize()]
        pieces += [" " + d for d in string.digits]
        pieces += [c for c in string.printable if c not in "\n\r\x0b\x0c"]
        pieces += [f"<unused{i}>" for i in range(extra_pieces)]  # room for high entropies
        self.ids = {p: i for i, p in enumerate(dict.fromkeys(pieces))}  # first occurrence wins
        self.pieces = list(self.ids)
        # longest match first: the alternation tries the longest pieces first; "." is a character outside them
        longest_first = sorted(self.pieces, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first)) + "|.", re.DOTALL)
        self.eos_id = self.ids["<eos>"]
        self.fingerprint = hashlib.sha256("\x00".join(self.pieces).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        """Longest-match tokens; a character outside the vocabulary is spelled "?"."""
        return [self.ids.get(piece, self.ids["?"]) for piece in self._pattern.findall(text)]

    def piece(self, token_id: int) -> str:
        return "" if token_id == self.eos_id else self.pieces[token_id]


@lru_cache(maxsize=1)
def shared_tokenizer() -> ScriptedTokenizer:
    return ScriptedTokenizer()


@lru_cache(maxsize=4096)
def _peak_probability(entropy: float, vocab: int) -> float:
    """The probability q of the target token such that the distribution (q on the target, the rest
    spread evenly) has the requested entropy. Bisection: H(q) decreases on [1/V, 1]."""
    if entropy <= 0:
        return 1.0
    if entropy >= math.log(vocab):
        return 1.0 / vocab

    def h(q: float) -> float:  # q < 1 on the bracket, so the rest is never empty
        return -q * math.log(q) - (1 - q) * math.log((1 - q) / (vocab - 1))

    lo, hi = 1.0 / vocab, 1.0 - 1e-15
    for _ in range(80):
        mid = (lo + hi) / 2
        if h(mid) > entropy:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected on purpose. Calls are counted per engine from 1 (glimpse and generate alike)."""

    fail_every: int = 0
    fail_transient: bool = True
    stall_every: int = 0
    stall_seconds: float = 0.0


class ScriptedEngine(InProcessEngine[None]):
    """An engine whose next-token distributions follow a script. See the module docstring."""

    backend_name = "scripted"

    def __init__(
        self,
        response: str | Sequence[str],
        *,
        next_turns: Sequence[str] = (),
        entropies: Sequence[float] | float = 0.05,
        name: str = "scripted",
        inner_entropy: float = 1e-4,
        context_window: int = 4096,
        token_seconds: float = 0.0,
        faults: FaultPlan | None = None,
        chat_template: str | None = None,
        n_slots: int = 1,
        max_queue: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(name=name, n_slots=n_slots, max_queue=max_queue, seed=seed)
        steps = response.split(DELIMITER) if isinstance(response, str) else list(response)
        if not steps:
            raise InvalidRequestError("a scripted engine needs at least one step of text")
        self.tokenizer = shared_tokenizer()
        # one script a turn: its steps as token ids
        self._turns = [
            [self.tokenizer.encode(s) for s in t] for t in [steps, *(t.split(DELIMITER) for t in next_turns)]
        ]
        given = [float(entropies)] if isinstance(entropies, int | float) else list(entropies) or [0.05]
        longest = max(map(len, self._turns))
        self._entropies = given + [given[-1]] * (longest - len(given))  # the last one repeats
        self._inner_entropy = inner_entropy
        self._window = context_window
        self._token_seconds = token_seconds
        self._faults = faults or FaultPlan()
        self._chat_template = chat_template or SCRIPTED_TEMPLATE
        self._assistant_id = self.tokenizer.ids["<|assistant|>"]
        self._tool_id = self.tokenizer.ids["<|tool|>"]
        self._delim_id = self.tokenizer.ids[DELIMITER]

    @classmethod
    def from_config(cls, cfg: ScriptedEngineConfig, *, name: str) -> Self:
        """A configured name other than the default wins over the role (tests name their engines)."""
        return super().from_config(cfg, name=cfg.name if cfg.name != "scripted" else name)

    # ----------------------------------------------------------------------------- hooks
    def _load(self) -> tuple[list[None], EngineInfo]:
        tok = self.tokenizer
        info = EngineInfo(
            name=self.name,
            model=f"scripted:{self.name}",
            backend=self.backend_name,
            vocab_size=len(tok),
            context_window=self._window,
            eos_token_ids=frozenset({tok.eos_id}),
            tokenizer_fingerprint=tok.fingerprint,
            entropy_kind="exact",
            batches_in_flight=False,
            chat_template=self._chat_template,
            eos_token="<eos>",
            can_score=True,
        )
        return [None] * self._n_slots, info

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def _token_bytes(self, token_id: int) -> bytes:
        return self.tokenizer.piece(token_id).encode()

    # ---------------------------------------------------------------------------- the "model"
    def _evaluate(self, state: None, tokens: Sequence[int], keep: int) -> np.ndarray:
        f = self._faults
        calls = int(self._stats.extra.get("evaluations", 0)) + 1
        self._stats.extra["evaluations"] = calls
        if f.stall_every and calls % f.stall_every == 0:
            time.sleep(f.stall_seconds)
        if f.fail_every and calls % f.fail_every == 0:
            raise EngineFailureError(
                f"injected failure in scripted engine {self.name!r} (evaluation {calls})",
                transient=f.fail_transient,
                engine=self.name,
            )
        if self._token_seconds:
            time.sleep(self._token_seconds * (len(tokens) - keep))
        return self._logits_for(tokens)

    def position(self, context: Sequence[int]) -> tuple[int, int]:
        """(step index, token offset in the step) of the next token after ``context``."""
        step, offset = 0, 0
        for t in context:
            if t == self._assistant_id:  # the response starts again after the last one
                step, offset = 0, 0
            elif t == self._delim_id:
                step, offset = step + 1, 0
            else:
                offset += 1
        return step, offset

    def _logits_for(self, context: Sequence[int]) -> np.ndarray:
        steps = self._turns[min(sum(1 for t in context if t == self._tool_id), len(self._turns) - 1)]
        step, offset = self.position(context)
        vocab = len(self.tokenizer)
        if step >= len(steps):
            target, entropy = self.tokenizer.eos_id, self._inner_entropy
        else:
            tokens = steps[step]
            if offset < len(tokens):
                target = tokens[offset]
            elif step == len(steps) - 1:
                target = self.tokenizer.eos_id
            else:
                target = self._delim_id
            entropy = self._entropies[step] if offset == 0 else self._inner_entropy
        q = _peak_probability(entropy, vocab)
        rest = (1 - q) / (vocab - 1)
        logits = np.full(vocab, math.log(rest) if rest > 0 else -np.inf, dtype=np.float32)
        logits[target] = math.log(q)
        return logits
