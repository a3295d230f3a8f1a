"""Render chat templates fast, exactly as transformers' apply_chat_template does.

transformers renders templates in Jinja's ImmutableSandboxedEnvironment (templates from
the hub are untrusted code). Half its time goes into the sandbox's attribute checks on
`message.role`, `loop.index0` and `ns.x`, which it always allows. FastSandbox answers those
three cases directly (the same values the sandbox returns) and leaves every other access,
and every call, to the sandbox. The renderer is checked against apply_chat_template on a
probe conversation here and on the first rows of each counting run; on any difference the
caller falls back to apply_chat_template itself.
"""

from __future__ import annotations

from typing import Callable

from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

PROBE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
         {"role": "assistant", "content": "a"}, {"role": "user", "content": "u2"},
         {"role": "assistant", "content": "a2"}]


_DICT_ATTRIBUTES = frozenset(dir(dict))


class FastSandbox(ImmutableSandboxedEnvironment):
    def getattr(self, obj, attribute):
        t = type(obj)
        if t is dict:
            # a name that is not a dict attribute: the sandbox tries getattr, fails, then
            # returns obj[name], or Undefined when there is no such key; do that directly
            if attribute not in _DICT_ATTRIBUTES:
                return obj[attribute] if attribute in obj else self.undefined(obj=obj, name=attribute)
        elif (t is LoopContext or isinstance(obj, Namespace)) and not attribute.startswith("_"):
            return getattr(obj, attribute)  # loop / namespace attributes: public, immutable-safe
        return super().getattr(obj, attribute)


def slow_renderer(tok) -> Callable[[list[dict]], str]:
    return lambda messages: tok.apply_chat_template(messages, tokenize=False)


def make_renderer(tok, template: str) -> Callable[[list[dict]], str]:
    """messages -> rendered text, as tok.apply_chat_template(messages, tokenize=False)."""
    slow = slow_renderer(tok)
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        hf_env = _compile_jinja_template(template).environment
        env = FastSandbox(trim_blocks=hf_env.trim_blocks, lstrip_blocks=hf_env.lstrip_blocks,
                          extensions=[type(e) for e in hf_env.extensions.values()])
        env.filters.update(hf_env.filters)
        env.globals.update(hf_env.globals)
        compiled = env.from_string(template)
        kwargs = dict(tok.special_tokens_map)

        def fast(messages: list[dict]) -> str:
            return compiled.render(messages=messages, tools=None, documents=None,
                                   add_generation_prompt=False, **kwargs)

        if fast(PROBE) == slow(PROBE):
            fast.is_fast = True
            return fast
    except Exception:  # any surprise in transformers' internals: use its public API
        pass
    return slow
