"""The official `openai` Python client against a running server.

Usage: python3 openai_client.py BASE_URL API_KEY   (BASE_URL like http://127.0.0.1:8080/v1)
Exits non-zero with a message on the first failed check.
"""

import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)

    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids, "no models listed"
    model = ids[0]

    # Chat, not streamed.
    r = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "Hello!"},
        ],
        max_tokens=5,
        temperature=0,
    )
    assert r.object == "chat.completion", r
    choice = r.choices[0]
    assert choice.message.role == "assistant", r
    assert isinstance(choice.message.content, str), r
    assert choice.finish_reason in ("stop", "length"), r
    assert r.usage.prompt_tokens > 0 and 0 <= r.usage.completion_tokens <= 5, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    reply = choice.message.content

    # Chat, streamed: the same greedy reply.
    stream = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "Hello!"},
        ],
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(parts) == reply, ("".join(parts), reply)
    assert finish == choice.finish_reason, finish
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage

    # Completions, not streamed and streamed, with a stop string and a seed.
    r = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, temperature=0.7, seed=3
    )
    text = r.choices[0].text
    assert r.object == "text_completion", r
    assert r.usage.completion_tokens <= 6, r.usage
    again = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, temperature=0.7, seed=3, stream=True
    )
    assert "".join(c.choices[0].text for c in again if c.choices) == text
    if len(text) >= 2:
        stop = text[len(text) // 2 :][:1]
        if stop.strip():
            cut = client.completions.create(
                model=model, prompt="Once upon a time", max_tokens=6, temperature=0.7, seed=3, stop=[stop]
            )
            assert cut.choices[0].text == text[: text.index(stop)], (cut.choices[0].text, text, stop)
            assert cut.choices[0].finish_reason == "stop"

    # Errors come back as the client's exceptions.
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], temperature=-1
        )
        raise AssertionError("temperature -1 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400
    try:
        OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401

    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
