"""The words around a diagnosis: templates by default, a model when one is configured.

Rules decide which specialists run and what the root cause is; a model, when
`EPISTEME_MODEL` names one (pydantic-ai: ``anthropic:…``, ``openai:…``, or any
OpenAI-compatible server with `EPISTEME_MODEL_BASE_URL`), may propose specialists and
writes the analysis and synthesis text. It is only ever shown the problem, the
specialists' names and the findings (which hold references, never secret values).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from episteme.diagnose.analysis import KEYWORDS
from episteme.diagnose.findings import Redactor
from episteme.diagnose.synthesis import Report
from episteme.errors import InvalidInput
from episteme.text import shorten

log = logging.getLogger(__name__)


class Narrator(Protocol):
    async def propose(self, problem: str) -> list[str]: ...
    async def analysis(
        self, problem: str, specialists: Sequence[str], why: Mapping[str, list[str]]
    ) -> str: ...
    async def synthesis(self, problem: str, report: Report) -> str: ...


class Templates:
    """The narrator without a model."""

    async def propose(self, problem: str) -> list[str]:
        return []

    async def analysis(
        self, problem: str, specialists: Sequence[str], why: Mapping[str, list[str]]
    ) -> str:
        parts = [f"{name} ({', '.join(why.get(name, []))})" for name in specialists]
        return "Specialists for this problem: " + "; ".join(parts) + "."

    async def synthesis(self, problem: str, report: Report) -> str:
        # the conclusion alone: the report lists the hypotheses and what to do
        return report.conclusion


class ModelNarrator:
    """A pydantic-ai agent writing the text; it never decides. A model that fails or
    takes longer than `timeout_s` leaves the words to the templates, with a warning in
    the log (its message with `secrets`, the API keys, scrubbed: `from_env` gives the
    value of every `*_API_KEY` variable, whichever provider it is for): the diagnosis goes on
    without it, as it would without a model."""

    def __init__(self, model: Any, *, timeout_s: float = 60.0, secrets: Iterable[str] = ()) -> None:
        from pydantic_ai import Agent

        self.timeout_s = timeout_s
        self._templates = Templates()
        self._scrub = Redactor(secrets)

        self.agent: Any = Agent(
            model,
            instructions=(
                "You help an on-call engineer diagnose an incident. Rules have already "
                "chosen what to look at and what the root cause is; explain, in a few short "
                "sentences, plainly. Never invent findings."
            ),
        )

    async def _ask(self, prompt: str, doing: str) -> str | None:
        """The model's answer; None when it failed or did not answer in time."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self.agent.run(prompt)
            return str(result.output).strip()
        except Exception as exc:  # a model that fails must not take the diagnosis with it
            why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            log.warning(
                "the model did not write the %s (%s: %s): the templates' words are used",
                doing,
                type(exc).__name__,
                shorten(self._scrub(why), 300),
            )
            return None

    async def propose(self, problem: str) -> list[str]:
        names = ", ".join(KEYWORDS)
        text = await self._ask(
            f"Problem: {problem}\nWhich of these specialists should look at it: {names}? "
            "Answer with the names only, comma-separated.",
            "specialists' proposal",
        )
        if text is None:
            return await self._templates.propose(problem)
        return [n.strip() for n in text.lower().replace("\n", ",").split(",") if n.strip()]

    async def analysis(
        self, problem: str, specialists: Sequence[str], why: Mapping[str, list[str]]
    ) -> str:
        text = await self._ask(
            f"Problem: {problem}\nSpecialists chosen, and why: "
            f"{orjson.dumps({s: why.get(s, []) for s in specialists}).decode()}\n"
            "Say in two sentences what will be checked.",
            "analysis",
        )
        return text or await self._templates.analysis(problem, specialists, why)

    async def synthesis(self, problem: str, report: Report) -> str:
        data = report.model_dump(mode="json", exclude={"text"})
        text = await self._ask(
            f"Problem: {problem}\nFindings and ranked hypotheses (JSON): "
            f"{orjson.dumps(data).decode()}\nExplain the root cause and the first steps.",
            "synthesis",
        )
        return text or await self._templates.synthesis(problem, report)


def from_env(environ: Mapping[str, str] | None = None) -> Narrator:
    """`ModelNarrator` for `EPISTEME_MODEL`, or `Templates` when it is unset."""
    env = os.environ if environ is None else environ
    name = env.get("EPISTEME_MODEL", "").strip()
    if not name:
        return Templates()
    try:
        import pydantic_ai  # noqa: F401
    except ImportError:
        raise InvalidInput(
            "EPISTEME_MODEL is set but pydantic-ai is not installed: pip install 'episteme[ai]'"
        ) from None
    from pydantic_ai.exceptions import UserError

    keys = [v for k, v in env.items() if k.endswith("_API_KEY") and v.strip()]
    base_url = env.get("EPISTEME_MODEL_BASE_URL")
    try:
        if base_url:
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.openai import OpenAIProvider

            key = env.get("EPISTEME_MODEL_API_KEY", "none")
            provider = OpenAIProvider(base_url=base_url, api_key=key)
            return ModelNarrator(
                OpenAIChatModel(name.removeprefix("openai:"), provider=provider), secrets=keys
            )
        from pydantic_ai.models import infer_model

        # now, so that a model that cannot be used stops the server as it starts
        return ModelNarrator(infer_model(name), secrets=keys)
    except ImportError as exc:  # a provider's package missing: its own words say which
        raise InvalidInput(f"EPISTEME_MODEL {name}: {exc}") from None
    except UserError as exc:  # an unknown model, a provider's key missing
        raise InvalidInput(f"EPISTEME_MODEL {name}: {Redactor(keys)(str(exc))}") from None
