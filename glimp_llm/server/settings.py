"""Settings of ``glimp serve``: where it listens, who may call it, and how much one request may ask."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerSettings(BaseModel):
    """The HTTP front; the models and routing come from :class:`~glimp_llm.config.GlimpConfig`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to bind; loopback unless you mean to expose it")
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="required as `Authorization: Bearer KEY` when set")
    model_name: str = Field("glimp", description="the model id clients use (listed by /v1/models)")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies get 413")
    max_prompt_chars: int = Field(200_000, ge=1, description="prompts (all messages) longer than this get 413")
    log_prompts: bool = Field(False, description="log prompt and completion text (off: only sizes and timings)")
    include_trace: bool = Field(True, description="add the routing trace (`glimp` field) to every response")
