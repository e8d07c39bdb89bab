"""``glimp serve``: the routed model behind an OpenAI-compatible HTTP API (extra ``server``)."""

from glimp_llm.server.app import create_app, run
from glimp_llm.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "run"]
