"""`$VAR` expansion over the whole config text, before YAML parsing.

agentgateway runs Rust's `shellexpand::full` on the raw file, so this mirrors its rules exactly
rather than POSIX shell rules (a config must expand the same under both gateways):

- `$NAME` takes the longest run of alphanumerics and `_` (so `$1` is a variable named "1");
- `${...}` ends at the *first* `}` anywhere after it, even on a later line; inside, the first
  `:-` (if not at the very start) splits the name from a default;
- a default is used only when the variable is unset: set-but-empty expands to "";
- an unset variable without a default fails the whole load, even inside a YAML comment;
- `$$` is one literal `$`; a `$` before anything else, or `${` with no `}` later in the
  text, is kept literally;
- a leading `~` (alone or before `/`) becomes $HOME.
"""

from __future__ import annotations

from collections.abc import Mapping

from agw_fast.errors import ConfigError

__all__ = ["expand_env"]

# The JSON-schema hint editors put in the first line; agentgateway escapes it before expanding
# so `$schema` is not taken for a variable. `$$` expands back to `$`: the text is unchanged.
_SCHEMA_HINT = "# yaml-language-server: $schema"
_SCHEMA_HINT_ESCAPED = "# yaml-language-server: $$schema"


def _is_name_char(c: str) -> bool:
    # Rust's char::is_alphanumeric is Unicode-aware, like str.isalnum.
    return c == "_" or c.isalnum()


def _lookup(name: str, env: Mapping[str, str]) -> str:
    try:
        return env[name]
    except KeyError:
        # Only the name: the value of a variable must never reach an error message.
        raise ConfigError("", f"environment variable not found: {name}") from None


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Expand `$NAME`, `${NAME}`, `${NAME:-default}` and `$$` in `text` using `env`.

    Raises ConfigError naming the first variable that is unset and has no default.
    """
    src = text.replace(_SCHEMA_HINT, _SCHEMA_HINT_ESCAPED)
    out: list[str] = []
    pos = 0
    n = len(src)
    while True:
        dollar = src.find("$", pos)
        if dollar < 0:
            out.append(src[pos:])
            break
        out.append(src[pos:dollar])
        nxt = src[dollar + 1] if dollar + 1 < n else ""
        if nxt == "{":
            close = src.find("}", dollar + 2)
            if close < 0:
                # Unbalanced: keep "${" and carry on scanning after it.
                out.append("${")
                pos = dollar + 2
                continue
            inner = src[dollar + 2 : close]
            split = inner.find(":-")
            if split > 0:
                name, default = inner[:split], inner[split + 2 :]
                out.append(env[name] if name in env else default)
            else:
                # `${:-x}` has no name, so the whole inside is looked up (and fails).
                out.append(_lookup(inner, env))
            pos = close + 1
        elif nxt and _is_name_char(nxt):
            end = dollar + 2
            while end < n and _is_name_char(src[end]):
                end += 1
            out.append(_lookup(src[dollar + 1 : end], env))
            pos = end
        else:
            out.append("$")
            # `$$` is an escaped dollar: consume both.
            pos = dollar + 2 if nxt == "$" else dollar + 1
    result = "".join(out)
    return _expand_tilde(text, result, env)


def _expand_tilde(original: str, expanded: str, env: Mapping[str, str]) -> str:
    # shellexpand only considers a tilde the *original* text starts with (one that came out of
    # a variable is left alone), and only `~` or `~/...`, never `~user`.
    if not original.startswith("~"):
        return expanded
    rest = expanded[1:]
    home = env.get("HOME")
    if home is None or (rest and not rest.startswith("/")):
        return expanded
    return home + rest
