"""`tokenize: true`: the prompt's token count, estimated before the call, as agentgateway does.

agentgateway (crates/llm/src/tokenizer.rs `num_tokens_from_messages`, with tiktoken-rs) counts
the request's messages reduced to (role, text) pairs (`get_messages` of each request type):
3 + 1 tokens per message, the BPE tokens of its text (special tokens such as `<|endoftext|>`
count as one token each), and 3 for the reply's priming. Roles are not encoded. The
encoding follows the model's name (tiktoken-rs's table, `encoding_for_model`): `o200k_base`
for the GPT-4o / GPT-4.1 / GPT-5 / o-series families, `cl100k_base` for GPT-4 / GPT-3.5 and
every name it does not know (Claude, Gemini, ...); a name mapped to any other encoding (the
GPT-3 era `davinci`, `gpt2`, `gpt-oss-*`) is agentgateway's 400 "unsupported model".

Which text counts, per request format (agentgateway's `get_messages`):
  * chat completions: each message's `content`, a string or the `text` of its parts joined
    by a space (tool calls and images do not count);
  * Anthropic Messages: a non-empty `system` (a string, or its text blocks joined by a
    newline) as one message, then each message's string or text blocks joined by a space;
  * Responses: `instructions` as one message, then a string `input` as one message, or each
    input item with a user/assistant/system/developer role and a string content or
    `input_text`/`output_text` parts joined by a newline (function calls etc. are skipped);
  * Gemini generateContent: a non-empty `systemInstruction` (text parts joined by a newline),
    then each of `contents` with its text parts joined by a space.
Other route types (embeddings, count-tokens, passthrough) are not counted, as in agentgateway.

The BPE rank files ship with agw-fast (tokenizer_data/, MIT, see its LICENSE): tiktoken
would download them on first use, which a gateway must never do on the request path (nor can
it where there is no internet). `preload()` builds both encodings from them once, at config
load, before the workers fork (agentgateway's `preload_tokenizers`), so they share the
memory; the tiktoken library (the `tokenize` extra) does the encoding.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from agw_fast.config.load_llm import TIKTOKEN_MISSING, tiktoken_available
from agw_fast.llm.providers.openai import LLMRequestError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "COUNTED_ROUTE_TYPES",
    "TIKTOKEN_MISSING",
    "count_prompt_tokens",
    "encoding_for_model",
    "preload",
    "prompt_texts",
    "tiktoken_available",
]

COUNTED_ROUTE_TYPES = frozenset({"completions", "messages", "responses", "generateContent"})

_CL100K = "cl100k_base"
_O200K = "o200k_base"
_UNSUPPORTED = "unsupported"  # an encoding agentgateway refuses (r50k, p50k, gpt2, harmony)
_PER_MESSAGE = 3 + 1
_REPLY_PRIMING = 3

# tiktoken-rs 0.11/0.12 `MODEL_TO_TOKENIZER` (exact names) and `MODEL_PREFIX_TO_TOKENIZER`
# (prefixes, first match wins), reduced to what agentgateway can count.
_EXACT = {
    "o1": _O200K, "o3": _O200K, "o4": _O200K, "gpt-5": _O200K, "gpt-4.1": _O200K,
    "chatgpt-4o-latest": _O200K, "gpt-4o": _O200K,
    "gpt-4": _CL100K, "gpt-3.5-turbo": _CL100K, "gpt-3.5": _CL100K, "gpt-35-turbo": _CL100K,
    "davinci-002": _CL100K, "babbage-002": _CL100K, "text-embedding-ada-002": _CL100K,
    "text-embedding-3-small": _CL100K, "text-embedding-3-large": _CL100K,
    "text-davinci-003": _UNSUPPORTED, "text-davinci-002": _UNSUPPORTED,
    "text-davinci-001": _UNSUPPORTED, "text-curie-001": _UNSUPPORTED,
    "text-babbage-001": _UNSUPPORTED, "text-ada-001": _UNSUPPORTED, "davinci": _UNSUPPORTED,
    "curie": _UNSUPPORTED, "babbage": _UNSUPPORTED, "ada": _UNSUPPORTED,
    "code-davinci-002": _UNSUPPORTED, "code-davinci-001": _UNSUPPORTED,
    "code-cushman-002": _UNSUPPORTED, "code-cushman-001": _UNSUPPORTED,
    "davinci-codex": _UNSUPPORTED, "cushman-codex": _UNSUPPORTED,
    "text-davinci-edit-001": _UNSUPPORTED, "code-davinci-edit-001": _UNSUPPORTED,
    "text-similarity-davinci-001": _UNSUPPORTED, "text-similarity-curie-001": _UNSUPPORTED,
    "text-similarity-babbage-001": _UNSUPPORTED, "text-similarity-ada-001": _UNSUPPORTED,
    "text-search-davinci-doc-001": _UNSUPPORTED, "text-search-curie-doc-001": _UNSUPPORTED,
    "text-search-babbage-doc-001": _UNSUPPORTED, "text-search-ada-doc-001": _UNSUPPORTED,
    "code-search-babbage-code-001": _UNSUPPORTED, "code-search-ada-code-001": _UNSUPPORTED,
    "gpt2": _UNSUPPORTED, "gpt-2": _UNSUPPORTED,
}  # fmt: skip
_PREFIXES = (
    ("o1-", _O200K), ("o3-", _O200K), ("o4-", _O200K), ("gpt-5.", _O200K), ("gpt-5-", _O200K),
    ("codex-mini", _O200K), ("gpt-4.5-", _O200K), ("gpt-4.1-", _O200K),
    ("chatgpt-4o-", _O200K), ("gpt-4o-", _O200K), ("gpt-4-", _CL100K),
    ("gpt-3.5-turbo-", _CL100K), ("gpt-35-turbo-", _CL100K), ("gpt-oss-", _UNSUPPORTED),
)  # fmt: skip

# The encodings' split patterns and special tokens, as tiktoken defines them
# (tiktoken_ext/openai_public.py); the ranks come from the shipped files.
_ENDOFTEXT, _FIM_PREFIX, _FIM_MIDDLE = "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>"
_FIM_SUFFIX, _ENDOFPROMPT = "<|fim_suffix|>", "<|endofprompt|>"
_SPECS: dict[str, tuple[str, dict[str, int], str]] = {
    _CL100K: (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++"""
        r"""[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {_ENDOFTEXT: 100257, _FIM_PREFIX: 100258, _FIM_MIDDLE: 100259, _FIM_SUFFIX: 100260,
         _ENDOFPROMPT: 100276},
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    _O200K: (
        "|".join((
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        )),
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}  # fmt: skip

# name -> the encoding's `len(encode(text, allowed_special=all))`, once preloaded.
_counters: dict[str, Callable[[str], int]] = {}


def encoding_for_model(model: str) -> str | None:
    """The encoding agentgateway counts `model` with; None where it answers 400."""
    if model.startswith("ft:"):  # fine-tuned: "ft:<base>:<org>:..."
        return encoding_for_model(model[3:].split(":", 1)[0])
    name = _EXACT.get(model)
    if name is None:
        for prefix, encoding in _PREFIXES:
            if model.startswith(prefix):
                name = encoding
                break
        else:
            name = _CL100K  # agentgateway's default for names tiktoken-rs does not know
    return None if name == _UNSUPPORTED else name


def _ranks(name: str, expected_sha256: str) -> dict[bytes, int]:
    packed = resources.files("agw_fast.llm").joinpath(f"tokenizer_data/{name}.tiktoken.gz")
    data = gzip.decompress(packed.read_bytes())
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise RuntimeError(f"tokenizer data {name} is damaged (hash mismatch)")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _load(name: str) -> tiktoken.Encoding:
    import tiktoken

    pattern, special, digest = _SPECS[name]
    return tiktoken.Encoding(
        name, pat_str=pattern, mergeable_ranks=_ranks(name, digest), special_tokens=special
    )


def preload() -> None:
    """Build both encodings (~1 s, once per process tree; idempotent). Raises ImportError
    without tiktoken."""
    for name in (_CL100K, _O200K):
        if name not in _counters:
            encoding = _load(name)
            special = encoding.special_tokens_set
            encode = encoding.encode

            def count(text: str, encode: Callable[..., list[int]] = encode,
                      special: object = special) -> int:
                return len(encode(text, allowed_special=special))

            _counters[name] = count


def prompt_texts(route_type: str, obj: dict[str, object]) -> list[str] | None:
    """The text of each message the count covers (see the module doc), or None for a route
    type that is not counted."""
    out: list[str]
    if route_type == "completions":
        return [_joined(m.get("content"), " ", _any_text) for m in _dicts(obj.get("messages"))]
    if route_type == "messages":
        out = []
        system = _joined(obj.get("system"), "\n", _typed_text)
        if system:
            out.append(system)
        out.extend(_joined(m.get("content"), " ", _typed_text) for m in _dicts(obj.get("messages")))
        return out
    if route_type == "responses":
        out = []
        instructions = obj.get("instructions")
        if type(instructions) is str:
            out.append(instructions)
        given = obj.get("input")
        if type(given) is str:
            out.append(given)
        else:
            for item in _dicts(given):
                if item.get("role") not in ("user", "assistant", "system", "developer"):
                    continue
                content = item.get("content")
                if type(content) is str:
                    out.append(content)
                elif type(content) is list:
                    out.append(_joined(content, "\n", _response_text))
        return out
    if route_type == "generateContent":
        out = []
        instruction = obj.get("systemInstruction", obj.get("system_instruction"))
        if type(instruction) is dict:
            joined = _joined(instruction.get("parts"), "\n", _any_text)
            if joined:
                out.append(joined)
        out.extend(_joined(c.get("parts"), " ", _any_text) for c in _dicts(obj.get("contents")))
        return out
    return None


def count_prompt_tokens(route_type: str, obj: dict[str, object]) -> int | None:
    """agentgateway's estimate of the request's prompt tokens; None when the route type is
    not counted. Raises `LLMRequestError` (400 "unsupported model") for a model agentgateway
    cannot count. `preload()` must have run."""
    texts = prompt_texts(route_type, obj)
    if texts is None:
        return None
    model = obj.get("model")
    encoding = encoding_for_model(model if type(model) is str else "")
    if encoding is None:
        raise LLMRequestError("unsupported model")
    count = _counters[encoding]
    total = _REPLY_PRIMING + _PER_MESSAGE * len(texts)
    for text in texts:
        if text:
            total += count(text)
    return total


def _dicts(value: object) -> list[dict[str, object]]:
    if type(value) is not list:
        return []
    return [item for item in value if type(item) is dict]


def _any_text(part: dict[str, object]) -> str | None:
    text = part.get("text")
    return text if type(text) is str else None


def _typed_text(part: dict[str, object]) -> str | None:
    # Anthropic's text block: any object with a string `type` and a string `text`.
    text = part.get("text")
    return text if type(text) is str and type(part.get("type")) is str else None


def _response_text(part: dict[str, object]) -> str | None:
    if part.get("type") in ("input_text", "output_text"):
        text = part.get("text")
        return text if type(text) is str else None
    return None


def _joined(
    content: object, separator: str, text_of: Callable[[dict[str, object]], str | None]
) -> str:
    """A string content as it is; a list's parts' texts joined by `separator`."""
    if type(content) is str:
        return content
    if type(content) is not list:
        return ""
    texts = []
    for part in content:
        if type(part) is dict:
            text = text_of(part)
            if text is not None:
                texts.append(text)
    return separator.join(texts)
