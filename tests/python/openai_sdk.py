"""Drives a running ragbox with the official `openai` package, as any OpenAI client would.

Run by tests/it/contract.rs against a server it started, with:
  RAGBOX_URL    the server's base URL
  RAGBOX_KEY    a tenant key
  RAGBOX_AGENT  a grounded agent's name
  RAGBOX_DOC    the id of the document that answers QUESTION
Exits non-zero, naming the failed expectation, when anything differs.
"""

import base64
import os
import struct
import sys

import openai
from openai import OpenAI

QUESTION = "What does the Zorbulon reactor on Kelvara produce?"


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    base = os.environ["RAGBOX_URL"]
    client = OpenAI(base_url=f"{base}/v1", api_key=os.environ["RAGBOX_KEY"], max_retries=0)
    agent = os.environ["RAGBOX_AGENT"]
    doc = os.environ["RAGBOX_DOC"]

    # Models list.
    models = client.models.list()
    ids = [m.id for m in models.data]
    check(agent in ids, f"models.list names the agent {agent!r}: {ids}")
    chat_model = next(m.id for m in models.data if getattr(m, "kind", None) == "chat")
    embedding_model = next(m.id for m in models.data if getattr(m, "kind", None) == "embedding")

    # Non-streaming chat on a base model.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(
        model=chat_model, messages=messages, temperature=0, max_tokens=16
    )
    text = whole.choices[0].message.content
    check(whole.object == "chat.completion", "a completion is a chat.completion")
    check("Paris" in text, f"the answer names Paris: {text!r}")
    check(whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens,
          "usage adds up")
    check(whole.choices[0].finish_reason in ("stop", "length"), "finish_reason is OpenAI's")

    # Streaming chat assembles to the same greedy answer, with usage at the end.
    stream = client.chat.completions.create(
        model=chat_model, messages=messages, temperature=0, max_tokens=16,
        stream=True, stream_options={"include_usage": True},
    )
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("".join(pieces) == text, "the stream assembles to the whole answer")
    check(roles == ["assistant"], f"the role comes once, first: {roles}")
    check(finish == whole.choices[0].finish_reason, "the stream ends with the same reason")
    check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens,
          "the stream reports usage when asked")

    # A grounded answer through an agent carries annotations that point at the chunk.
    grounded = client.chat.completions.create(
        model=agent, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=48,
    )
    message = grounded.choices[0].message
    annotations = message.annotations or []
    check(len(annotations) > 0, f"the grounded answer is annotated: {message.content!r}")
    for a in annotations:
        c = a.url_citation
        span = message.content[c.start_index:c.end_index]
        check(a.type == "url_citation", "annotations are url_citation")
        check(0 <= c.start_index < c.end_index <= len(message.content),
              f"the span {c.start_index}..{c.end_index} lies in the answer")
        check(f"/api/v1/documents/{doc}/chunks/" in c.url, f"{c.url} names the document")
        check(c.title == "Kelvara facts", f"the title is the document's: {c.title!r}")
        check(len(span.strip()) > 0, f"the span {span!r} is text of the answer")
    sources = (grounded.model_extra or {}).get("ragbox", {}).get("sources", [])
    check(any(s["document_id"] == doc for s in sources),
          "the ragbox extension carries the source texts")

    # Streamed, the closing chunk carries the same annotations.
    stream = client.chat.completions.create(
        model=agent, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=48, stream=True,
    )
    streamed = []
    for chunk in stream:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if choice.finish_reason and "annotations" in extra:
                streamed = extra["annotations"]
    check([a["url_citation"]["url"] for a in streamed] == [a.url_citation.url for a in annotations],
          "the streamed closing chunk carries the citations")

    # Embeddings: one and a batch, float and base64.
    one = client.embeddings.create(model=embedding_model, input="hello world",
                                   encoding_format="float")
    vec = one.data[0].embedding
    check(len(vec) == 384, "a float embedding has 384 values")
    check(one.usage.prompt_tokens == 4, f"usage counts the model's tokens: {one.usage}")
    batch = client.embeddings.create(model=embedding_model, input=["a cat", "hello world"],
                                     encoding_format="base64")
    raw = base64.b64decode(batch.data[1].embedding)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    check(len(batch.data) == 2 and batch.data[1].index == 1, "a batch keeps input order")
    check(max(abs(a - b) for a, b in zip(decoded, vec)) < 1e-5,
          "base64 decodes to the same vector")
    # The SDK's default encoding (it asks for base64 and decodes it itself).
    default = client.embeddings.create(model=embedding_model, input="hello world")
    check(max(abs(a - b) for a, b in zip(default.data[0].embedding, vec)) < 1e-5,
          "the SDK's default base64 round trip gives the same vector")

    # Errors come as the SDK's own exceptions.
    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        check(False, "an unknown model is refused")
    except openai.NotFoundError as e:
        check(e.status_code == 404, "an unknown model is a 404 NotFoundError")
        check(e.code == "model_not_found", f"its code is model_not_found: {e.code}")
    try:
        client.chat.completions.create(model=chat_model, messages=messages, temperature=9)
        check(False, "a temperature of 9 is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400, "an invalid field is a 400 BadRequestError")
    bad = OpenAI(base_url=f"{base}/v1", api_key="rbx_wrong", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong key is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "a wrong key is a 401 AuthenticationError")
    print("all OpenAI SDK checks passed")


if __name__ == "__main__":
    main()
