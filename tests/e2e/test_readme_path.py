"""The README's path: `make up` prints a URL and a curl line; both work, and so does the openai client."""

from __future__ import annotations

import json
import os
import re
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
    lines = stack.up_output.splitlines()
    line = next(line for line in lines if line.startswith("curl "))
    # As a user pastes them into a shell: the printed `export OPENAI_API_KEY=$(cat .../admin.key)` first,
    # which the curl line's `Authorization: Bearer $OPENAI_API_KEY` reads.
    export = [x for x in lines if x.startswith("export OPENAI_API_KEY=")][:1]
    script = "\n".join([*export, f"{line} -s --max-time 120"])
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]


def test_conversation_through_the_proxy(stack: Stack) -> None:
    # As README says: `export OPENAI_API_KEY=$(cat data/secrets/admin.key)`, the key `up` wrote there.
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.admin_key, max_retries=0, timeout=120)
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
