"""Regenerate the field tables of docs/configuration.md from the pydantic models (the single source).

python scripts/gen_config_docs.py          # rewrite the generated part
python scripts/gen_config_docs.py --check  # exit 1 if the doc is stale (run by the tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from glimp_llm import config

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED FIELD TABLES -->"
END = "<!-- END GENERATED FIELD TABLES -->"
MODELS: list[type[BaseModel]] = [
    config.GlimpConfig,
    config.RouterConfig,
    config.SamplingConfig,
    config.LlamaCppEngineConfig,
    config.OpenAICompatEngineConfig,
    config.TensorRTLLMEngineConfig,
    config.ScriptedEngineConfig,
]


def _default(field: object) -> str:
    default = getattr(field, "default", None)
    if isinstance(default, BaseModel):
        return "(see below)"
    if getattr(field, "is_required", lambda: False)():
        return "**required**"
    return f"`{default!r}`"


def tables() -> str:
    parts = []
    for model in MODELS:
        doc = " ".join((model.__doc__ or "").split())
        rows = ["| field | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{name}` | {_default(field)} | {desc} |")
        parts.append(f"### `{model.__name__}`\n\n{doc}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def render(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{tables()}\n{END}{tail}"


def main() -> int:
    current = DOC.read_text()
    fresh = render(current)
    if "--check" in sys.argv:
        if fresh != current:
            print(f"{DOC} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
