"""The fast template renderer: the same text as apply_chat_template, and still a sandbox."""

from __future__ import annotations

from tests.conftest import SAMPLES
from vtcore.data import read_dataset
from vtcore.template import FastSandbox, make_renderer, slow_renderer
from vtcore.tokens import chat_template

TRICKY = [
    [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nyo"}, {"role": "user", "content": "more"},
     {"role": "assistant", "content": "ok", "reasoning_content": "because"}],
    [{"role": "user", "content": "call it"},
     {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
     {"role": "tool", "content": "42"}, {"role": "assistant", "content": "it is 42"}],
    [{"role": "user", "content": "<tool_response>x</tool_response>"}, {"role": "assistant", "content": "\n\nlead"}],
]


def test_fast_renderer_equals_apply_chat_template(qwen_tok):
    fast, slow = make_renderer(qwen_tok, chat_template(qwen_tok)), slow_renderer(qwen_tok)
    assert getattr(fast, "is_fast", False)
    convs = [c.messages for c in read_dataset(SAMPLES / "code.jsonl")]
    convs += [c.messages for c in read_dataset(SAMPLES / "chat.jsonl.gz")][:500]
    for messages in convs + TRICKY:
        assert fast(messages) == slow(messages)


PROBES = ["{{ messages.__class__.__mro__ }}", "{{ messages[0].__class__ }}",
          "{{ messages[0].__class__.__init__.__globals__ }}", "{{ messages[0].items.__self__.__class__ }}",
          "{% for m in messages %}{{ loop.__class__ }}{{ loop.index0 }}{% endfor %}",
          "{{ messages[0].update({'x': 1}) }}", "{{ messages[0].role }}|{{ messages[0].nope is defined }}",
          "{{ messages[0].items is defined }}", "{% set ns = namespace(a=1) %}{{ ns.a }}{{ ns.__class__ }}",
          "{{ messages[0].get('role') }}", "{{ messages | length }}"]


def _outcome(env, source):
    try:
        return env.from_string(source).render(messages=[{"role": "user"}])
    except Exception as e:  # the exception type is the outcome
        return type(e).__name__


def test_fast_sandbox_behaves_as_the_sandbox():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    sandbox, fast = ImmutableSandboxedEnvironment(), FastSandbox()
    for source in PROBES:
        assert _outcome(fast, source) == _outcome(sandbox, source), source
    # and the escapes stay shut
    for source in PROBES[0], PROBES[2], PROBES[5]:
        assert _outcome(fast, source) == "SecurityError"
