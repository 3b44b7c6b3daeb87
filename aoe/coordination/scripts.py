"""The Lua scripts beside this module, loaded once per process and run by SHA.

Each multi-step change to shared state is one script (``lua/*.lua``): Redis runs a script
to completion before any other command, so every tier is taken or none, and a budget is
reserved within its limit or refused, whatever other processes do at the same moment.
redis-py's ``Script`` sends ``EVALSHA`` and falls back to ``EVAL`` on ``NOSCRIPT`` (a
restarted server has forgotten every script), so a call is one round trip.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["lua_source"]


@cache
def lua_source(name: str) -> str:
    """The text of ``lua/NAME.lua``."""
    return resources.files("aoe.coordination").joinpath("lua", f"{name}.lua").read_text("utf-8")
