"""The words around a diagnosis: templates by default, a model when one is configured.

Rules decide which specialists run and what the root cause is; a model, when
`EPISTEME_MODEL` names one (pydantic-ai: ``anthropic:…``, ``openai:…``, or any
OpenAI-compatible server with `EPISTEME_MODEL_BASE_URL`), may propose specialists and
writes the analysis and synthesis text. It is only ever shown the problem, the
specialists' names and the findings (which hold references, never secret values).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from episteme.diagnose.analysis import KEYWORDS
from episteme.diagnose.synthesis import Report
from episteme.errors import InvalidInput


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
    """A pydantic-ai agent writing the text; it never decides."""

    def __init__(self, model: Any) -> None:
        from pydantic_ai import Agent

        self.agent: Any = Agent(
            model,
            instructions=(
                "You help an on-call engineer diagnose an incident. Rules have already "
                "chosen what to look at and what the root cause is; explain, in a few short "
                "sentences, plainly. Never invent findings."
            ),
        )

    async def _ask(self, prompt: str) -> str:
        result = await self.agent.run(prompt)
        return str(result.output).strip()

    async def propose(self, problem: str) -> list[str]:
        names = ", ".join(KEYWORDS)
        text = await self._ask(
            f"Problem: {problem}\nWhich of these specialists should look at it: {names}? "
            "Answer with the names only, comma-separated."
        )
        return [n.strip() for n in text.lower().replace("\n", ",").split(",") if n.strip()]

    async def analysis(
        self, problem: str, specialists: Sequence[str], why: Mapping[str, list[str]]
    ) -> str:
        return await self._ask(
            f"Problem: {problem}\nSpecialists chosen, and why: "
            f"{orjson.dumps({s: why.get(s, []) for s in specialists}).decode()}\n"
            "Say in two sentences what will be checked."
        )

    async def synthesis(self, problem: str, report: Report) -> str:
        data = report.model_dump(mode="json", exclude={"text"})
        return await self._ask(
            f"Problem: {problem}\nFindings and ranked hypotheses (JSON): "
            f"{orjson.dumps(data).decode()}\nExplain the root cause and the first steps."
        )


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
    base_url = env.get("EPISTEME_MODEL_BASE_URL")
    if base_url:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        key = env.get("EPISTEME_MODEL_API_KEY", "none")
        model = OpenAIChatModel(
            name.removeprefix("openai:"), provider=OpenAIProvider(base_url=base_url, api_key=key)
        )
        return ModelNarrator(model)
    return ModelNarrator(name)
