"""Call scripts and voicemail messages, rendered to TwiML inside the kernel.

A script document (`scripts/<id>.yaml`, `kind: script`)::

    greeting: "Hi, this is {{ sender.name }} ..."
    steps:
      - say: "..."                        # spoken (text to speech)
      - play: "https://.../clip.mp3"      # a recording
      - pause: 2                          # seconds of silence
      - gather:                           # a choice by keypad
          prompt: "Press 1 for yes, 2 for no."
          options: {"1": interested, "2": not_interested}
          timeout: 5                      # seconds (default 5)
          branches:                       # optional: what follows each choice
            "1": [{say: "Great, we will email you the details."}]
            "2": [{say: "No problem, goodbye."}]
      - hangup: true

A voicemail document (`kind: voicemail`) has `tts` (text to speech) or `url` (a recording).
Every text is rendered in the template sandbox, with the email's names (`contact`, `sender`,
`variables`, `run`), and XML-escaped into the TwiML. A choice's branches are rendered too, so
whoever answers the provider's gather callback serves them as they were decided here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from dee.errors import TemplateError
from dee.plugin.contracts import check_template, render_template

STEP_KINDS = ("say", "play", "pause", "gather", "hangup")


def problems(document: Mapping[str, Any], what: str) -> list[str]:
    """What is wrong with a script or voicemail document (checked when a plan is created)."""
    found: list[str] = []
    if document.get("kind") == "voicemail":
        if not (isinstance(document.get("tts"), str) or isinstance(document.get("url"), str)):
            return [f"{what}: a voicemail needs `tts` (text) or `url` (a recording)"]
        return [p for p in [check_template(str(document.get("tts") or document.get("url")), what)] if p]
    if "greeting" in document:
        found += _text_problem(document["greeting"], f"{what} greeting")
    steps = document.get("steps", [])
    if not isinstance(steps, list):
        return [*found, f"{what}: `steps` must be a list"]
    found += _steps_problems(steps, what)
    return found


def _text_problem(value: Any, what: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{what}: must be text"]
    problem = check_template(value, what)
    return [problem] if problem else []


def _steps_problems(steps: list[Any], what: str) -> list[str]:
    found: list[str] = []
    for index, step in enumerate(steps, start=1):
        where = f"{what} step {index}"
        if not isinstance(step, dict) or len(step) != 1 or next(iter(step)) not in STEP_KINDS:
            found.append(f"{where}: one of {', '.join(STEP_KINDS)}")
            continue
        kind, value = next(iter(step.items()))
        if kind in ("say", "play"):
            found += _text_problem(value, where)
        elif kind == "pause" and not (isinstance(value, int) and 0 < value <= 60):
            found.append(f"{where}: a pause is 1 to 60 seconds")
        elif kind == "gather":
            if not isinstance(value, dict) or not isinstance(value.get("options"), dict) or not value["options"]:
                found.append(f"{where}: a gather needs a prompt and options (digit: label)")
                continue
            found += _text_problem(value.get("prompt", ""), f"{where} prompt")
            for digit, branch in (value.get("branches") or {}).items():
                if str(digit) not in {str(k) for k in value["options"]}:
                    found.append(f"{where}: branch {digit!r} is no option")
                elif not isinstance(branch, list):
                    found.append(f"{where}: branch {digit!r} must be a list of steps")
                else:
                    found += _steps_problems(branch, f"{where} branch {digit}")
    return found


def render_script(document: Mapping[str, Any], namespace: dict[str, Any], what: str, gather_url: str | None) -> dict[str, Any]:
    """The script as TwiML (`twiml`), with each choice's follow-up as TwiML (`branches`: digit
    to TwiML), deterministic: the same script and context give the same bytes."""
    response = ET.Element("Response")
    if document.get("greeting"):
        ET.SubElement(response, "Say").text = render_template(str(document["greeting"]), namespace, f"{what} greeting")
    branches: dict[str, str] = {}
    _render_steps(response, list(document.get("steps", [])), namespace, what, gather_url, branches)
    return {"twiml": _xml(response), "branches": branches}


def render_voicemail(document: Mapping[str, Any], namespace: dict[str, Any], what: str) -> str:
    response = ET.Element("Response")
    if document.get("url"):
        ET.SubElement(response, "Play").text = render_template(str(document["url"]), namespace, what)
    else:
        ET.SubElement(response, "Say").text = render_template(str(document.get("tts", "")), namespace, what)
    return _xml(response)


def _render_steps(
    parent: ET.Element, steps: list[Any], namespace: dict[str, Any], what: str, gather_url: str | None,
    branches: dict[str, str],
) -> None:  # fmt: skip
    for index, step in enumerate(steps, start=1):
        if not isinstance(step, dict) or len(step) != 1:
            raise TemplateError(f"{what} step {index}: not a script step")
        kind, value = next(iter(step.items()))
        where = f"{what} step {index}"
        if kind == "say":
            ET.SubElement(parent, "Say").text = render_template(str(value), namespace, where)
        elif kind == "play":
            ET.SubElement(parent, "Play").text = render_template(str(value), namespace, where)
        elif kind == "pause":
            ET.SubElement(parent, "Pause", {"length": str(int(value))})
        elif kind == "hangup":
            ET.SubElement(parent, "Hangup")
        elif kind == "gather":
            attributes = {"input": "dtmf", "numDigits": "1", "timeout": str(int(value.get("timeout", 5)))}
            if gather_url:
                attributes["action"] = gather_url
            gather = ET.SubElement(parent, "Gather", attributes)
            ET.SubElement(gather, "Say").text = render_template(str(value.get("prompt", "")), namespace, f"{where} prompt")
            for digit, follow in sorted((value.get("branches") or {}).items()):
                branch = ET.Element("Response")
                _render_steps(branch, list(follow), namespace, f"{where} branch {digit}", gather_url, branches)
                branches[str(digit)] = _xml(branch)
        else:
            raise TemplateError(f"{where}: unknown script step {kind!r}")


def _xml(element: ET.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(element, encoding="unicode")
