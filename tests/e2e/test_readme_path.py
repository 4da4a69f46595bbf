"""The README's path: `make up` prints a URL and a curl line; both work, and so does the openai client."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import openai

from tests.conftest import ROOT, Stack

MODEL = "smollm2-135m-instruct"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^make \w+", readme, flags=re.M)
    assert commands[:2] == ["make up", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_printed_curl_answers(stack: Stack) -> None:
    line = next(line for line in stack.up_output.splitlines() if line.startswith("curl "))
    result = subprocess.run([*shlex.split(line), "-s", "--max-time", "120"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]


def test_conversation_through_the_proxy(stack: Stack) -> None:
    client = stack.openai_client()
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for question in ("What is 2 + 2?", "And 3 + 3?"):
        messages.append({"role": "user", "content": question})
        text = ""
        for chunk in client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=24, temperature=0, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        assert text.strip()
        messages.append({"role": "assistant", "content": text})
    errored = None
    try:
        client.chat.completions.create(model="not-a-model", messages=messages)
    except openai.NotFoundError as exc:
        errored = exc
    assert errored is not None and errored.status_code == 404
