"""Agent task suite (issue 14, item 4): does a plain LangChain agent on the routed model finish its tasks?

24 tool-use tasks (:mod:`.tasks`, tools in :mod:`.tools`) run through ``create_agent(ChatGlimp(config=...),
tools=...)`` with a one-line system prompt and no middleware, under router configurations given as
``RouterConfig`` overrides (:mod:`.configs`: small-only, large-only, ours, each guard alone, guards, verify,
verify+guards). Per configuration: success rate with its standard error, tool calls per task, repeated
identical calls, empty final answers, loops (the task's turn limit reached), latency per task.

    python -m benchmarks.agent_suite --configs large-only,ours --limit 3 --md out/agent.md
    python -m benchmarks.agent_suite --json out/agent.json --md out/agent.md --plot out/agent.png
    python -m benchmarks.agent_suite --dry-run          # scripted engines, seconds: checks the plumbing

Records go to a JSONL file one by one (default ``out/agent_suite/records.jsonl``); rerunning the same
command resumes where it stopped. Why a separate suite: GSM8K measures one routed answer, but agents
fail differently (issue 14): the turn that decides between calling a tool and answering.
"""
